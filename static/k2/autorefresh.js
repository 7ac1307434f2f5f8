/* Auto-refresh of the admin's list pages (every 10 s) and dashboard (30 s), pausable (remembered in
   localStorage). Never while the operator is selecting rows, typing or has an action chosen. */
(function () {
  "use strict";
  var KEY = "k2.autorefresh.paused";
  var body = document.body;
  if (!body || !(body.classList.contains("change-list") || body.classList.contains("k2-dashboard"))) { return; }
  // the dashboard runs table and chart queries: every 30 s; list pages every 10 s
  var PERIOD_S = body.classList.contains("k2-dashboard") ? 30 : 10;
  var paused = localStorage.getItem(KEY) === "1", left = PERIOD_S;
  var box = document.createElement("div");
  box.id = "k2-refresh";
  var label = document.createElement("span");
  var button = document.createElement("button");
  button.type = "button";
  box.appendChild(label); box.appendChild(document.createTextNode(" ")); box.appendChild(button);
  body.appendChild(box);
  function busy() {
    if (document.querySelector("#result_list input[name=_selected_action]:checked, #action-toggle:checked")) { return true; }
    var action = document.querySelector("select[name=action]");
    if (action && action.value) { return true; }
    var el = document.activeElement;
    return !!(el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") && el.type !== "button");
  }
  function render() {
    label.textContent = paused ? "auto-refresh paused" : (busy() ? "auto-refresh waits (selection in progress)" : "refresh in " + left + " s");
    button.textContent = paused ? "Resume" : "Pause";
  }
  button.addEventListener("click", function () {
    paused = !paused; left = PERIOD_S;
    localStorage.setItem(KEY, paused ? "1" : "0");
    render();
  });
  setInterval(function () {
    if (!paused && !busy()) {
      left -= 1;
      if (left <= 0) { window.location.reload(); return; }
    }
    render();
  }, 1000);
  render();
}());
