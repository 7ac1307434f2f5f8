/* K2's charts, drawn with Apache ECharts (static/vendor/echarts, Apache-2.0): sparklines of
   lag and rows/s, an OHLC candlestick with volume bars and sequence gaps marked, and a gap
   timeline. Market times arrive as exchange-local wall time in epoch ms and are drawn in UTC
   mode, so the axis reads exchange time (e.g. Sydney) whatever the browser's time zone. */
(function (global) {
  "use strict";
  var UP = "#2e7d32", DOWN = "#c62828";
  function init(el) { if (!el || !global.echarts) { return null; } return global.echarts.init(el, null, { renderer: "canvas" }); }
  function hm(ms) { var d = new Date(ms); return ("0" + d.getUTCHours()).slice(-2) + ":" + ("0" + d.getUTCMinutes()).slice(-2); }
  function hms(ms) { var d = new Date(ms); return hm(ms) + ":" + ("0" + d.getUTCSeconds()).slice(-2); }

  function sparklines(el, series, key, unit) {
    var chart = init(el);
    if (!chart) { return null; }
    var lines = series.filter(function (s) { return s[key] && s[key].length; }).map(function (s) {
      return { name: s.name, type: "line", showSymbol: false, smooth: false, data: s[key], lineStyle: { width: 1.5 }, areaStyle: { opacity: 0.08 } };
    });
    chart.setOption({
      animation: false, grid: { left: 48, right: 8, top: 24, bottom: 22 },
      legend: { top: 0, textStyle: { fontSize: 10 }, itemHeight: 8 },
      tooltip: { trigger: "axis", valueFormatter: function (v) { return v == null ? "—" : Number(v).toLocaleString() + " " + unit; } },
      xAxis: { type: "time", splitNumber: 4, axisLabel: { fontSize: 10, hideOverlap: true, formatter: "{HH}:{mm}" } },
      yAxis: { type: "value", axisLabel: { fontSize: 10 }, splitNumber: 3 },
      title: lines.length ? undefined : { text: "no samples in the last hour", left: "center", top: "middle", textStyle: { fontSize: 12, color: "#888" } },
      series: lines
    });
    return chart;
  }

  function candles(el, data) {
    var chart = init(el);
    if (!chart) { return null; }
    var bars = data.bars || [];
    var ohlc = bars.map(function (b) { return [b[0], b[1], b[2], b[3], b[4]]; });
    var vol = bars.map(function (b) { return { value: [b[0], b[5]], itemStyle: { color: Number(b[2]) >= Number(b[1]) ? UP : DOWN } }; });
    var step = bars.length > 1 ? bars[1][0] - bars[0][0] : 60000;
    var xmin = bars.length ? bars[0][0] - step : undefined, xmax = bars.length ? bars[bars.length - 1][0] + step : undefined;
    (data.gaps || []).forEach(function (g) { if (xmin !== undefined) { xmin = Math.min(xmin, g.t - step); xmax = Math.max(xmax, g.t + step); } });
    var gapLines = (data.gaps || []).map(function (g) {
      return { xAxis: g.t, name: g.data_type + " gap " + g.expected_sequence + "→" + g.received_sequence,
               label: { formatter: "gap " + g.gap_size, fontSize: 10, color: DOWN } };
    });
    chart.setOption({
      animation: false, useUTC: true,
      tooltip: { trigger: "axis", axisPointer: { type: "cross" },
                 formatter: function (items) {
                   var out = [];
                   items.forEach(function (it) {
                     if (it.seriesType === "candlestick") {
                       var v = it.value; out.unshift(hm(v[0]) + " " + data.zone_abbr + "<br>open " + v[1] + " close " + v[2] + "<br>low " + v[3] + " high " + v[4]);
                     } else if (it.seriesType === "bar") { out.push("volume " + Number(it.value[1]).toLocaleString()); }
                   });
                   return out.join("<br>");
                 } },
      axisPointer: { link: [{ xAxisIndex: "all" }] },
      grid: [{ left: 64, right: 96, top: 28, height: "58%" }, { left: 64, right: 96, top: "74%", height: "16%" }],
      xAxis: [
        { type: "time", gridIndex: 0, min: xmin, max: xmax, axisLabel: { formatter: function (v) { return hm(v); } }, name: data.zone, nameLocation: "end", nameGap: 4, nameTextStyle: { fontSize: 10 } },
        { type: "time", gridIndex: 1, min: xmin, max: xmax, axisLabel: { show: false } }
      ],
      yAxis: [{ type: "value", scale: true, gridIndex: 0, name: "price" }, { type: "value", gridIndex: 1, splitNumber: 2, name: "volume", axisLabel: { fontSize: 10 } }],
      dataZoom: [{ type: "inside", xAxisIndex: [0, 1] }],
      series: [
        { name: "price", type: "candlestick", data: ohlc, xAxisIndex: 0, yAxisIndex: 0,
          itemStyle: { color: UP, color0: DOWN, borderColor: UP, borderColor0: DOWN },
          markLine: { symbol: "none", silent: false, lineStyle: { color: DOWN, type: "dashed" }, data: gapLines } },
        { name: "volume", type: "bar", data: vol, xAxisIndex: 1, yAxisIndex: 1, barMaxWidth: 8 }
      ]
    });
    return chart;
  }

  function gapTimeline(el, data) {
    var chart = init(el);
    if (!chart) { return null; }
    var gaps = data.gaps || [];
    var symbols = Array.from(new Set(gaps.map(function (g) { return g.symbol; }))).sort();
    var colours = { open: DOWN, filled: "#1565c0", acknowledged: "#757575" };
    var states = ["open", "filled", "acknowledged"];
    chart.setOption({
      animation: false, useUTC: true,
      legend: { top: 0, data: states },
      tooltip: { formatter: function (it) { var g = it.data.gap; return g.symbol + " " + g.data_type + " at " + hms(g.t) + " " + data.zone_abbr +
                 "<br>expected " + g.expected_sequence + ", got " + g.received_sequence + " (" + g.gap_size + " missing)<br>" + g.state; } },
      grid: { left: 64, right: 24, top: 28, bottom: 28 },
      xAxis: { type: "time", min: data.start == null ? undefined : data.start - 600000, max: data.end == null ? undefined : data.end + 600000,
               axisLabel: { formatter: function (v) { return hm(v); } }, name: data.zone, nameTextStyle: { fontSize: 10 } },
      yAxis: { type: "category", data: symbols.length ? symbols : ["(none)"] },
      title: gaps.length ? undefined : { text: "no sequence gaps on " + data.day, left: "center", top: "middle", textStyle: { fontSize: 12, color: "#888" } },
      series: states.map(function (state) {
        return { name: state, type: "scatter", itemStyle: { color: colours[state] },
                 symbolSize: function (v, p) { return Math.min(24, 6 + 3 * Math.log2(1 + p.data.gap.gap_size)); },
                 data: gaps.filter(function (g) { return g.state === state; }).map(function (g) { return { value: [g.t, g.symbol], gap: g }; }) };
      })
    });
    return chart;
  }

  global.addEventListener("resize", function () {
    document.querySelectorAll("[_echarts_instance_]").forEach(function (el) { var c = global.echarts.getInstanceByDom(el); if (c) { c.resize(); } });
  });
  global.K2Charts = { sparklines: sparklines, candles: candles, gapTimeline: gapTimeline };
}(window));
