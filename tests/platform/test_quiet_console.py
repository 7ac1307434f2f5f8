"""`make run`'s console (issue 13, item 8): one line per request, readable key=value lines on a
terminal and JSON otherwise (or with K2_LOG_JSON=1), Celery's routine bookkeeping kept out."""

from __future__ import annotations

import json
import logging
import os
import pty
import subprocess
import sys
import time

import httpx

from k2core.logging import configure
from k2portal.config import BASE_DIR
from k2portal.run import platform_env
from tests.conftest import free_port

LOG_ONE_LINE = ("import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'k2portal.settings'); "
                "django.setup(); import structlog; structlog.get_logger('k2.test').info('hello_console', rows=3)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "K2_LOG_JSON"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, "SECRET_KEY": "test-" + "x" * 40, "PYTHONUNBUFFERED": "1", **extra}


def _run_on_a_terminal(env: dict[str, str]) -> str:
    """Run LOG_ONE_LINE with its stdout on a pseudo-terminal; return what it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", LOG_ONE_LINE], cwd=BASE_DIR, env=env, stdout=follower,
                            stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_readable_lines_and_a_pipe_gets_json() -> None:
    terminal = _run_on_a_terminal(_env())
    line = next(ln for ln in terminal.splitlines() if "hello_console" in ln)
    assert not line.lstrip().startswith("{") and "rows" in line and "=" in line, terminal

    forced = _run_on_a_terminal(_env(K2_LOG_JSON="1"))
    assert json.loads(next(ln for ln in forced.splitlines() if "hello_console" in ln))["rows"] == 3

    piped = subprocess.run([sys.executable, "-c", LOG_ONE_LINE], cwd=BASE_DIR, env=_env(), capture_output=True,
                           text=True, timeout=60)
    record = json.loads(next(ln for ln in piped.stdout.splitlines() if "hello_console" in ln))
    assert record["event"] == "hello_console" and record["rows"] == 3


def test_make_run_hands_a_terminal_to_its_processes_as_console_logging() -> None:
    # honcho's children write to a pipe; when make run itself is on a terminal they log readable lines
    assert platform_env({"A": "1"}, terminal=True)["K2_LOG_JSON"] == "0"
    assert "K2_LOG_JSON" not in platform_env({"A": "1"}, terminal=False)
    assert platform_env({"K2_LOG_JSON": "1"}, terminal=True)["K2_LOG_JSON"] == "1"  # an explicit choice wins


def test_runserver_logs_one_line_per_request() -> None:
    """Each request, whatever its status, gives exactly one log line (request_finished). Each one
    carries its own correlation id: on a busy machine a readiness probe that timed out on the
    client side is still served (and logged) once, and must not count as a second line of another."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload",
                             "--skip-checks"], cwd=BASE_DIR,
                            env=_env(K2_LOG_JSON="1", DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def get(path: str, correlation_id: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, headers={"X-Correlation-ID": correlation_id})

    try:
        deadline, probes = time.monotonic() + 60, 0
        while True:
            probes += 1
            try:
                assert get("/api/v1/ping", f"ready-{probes}").status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else "slow"
                time.sleep(0.3)
        assert get("/api/v1/ping", "second").status_code == 200
        assert get("/api/v1/nowhere", "missing").status_code == 404
        time.sleep(1)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    mentions = [json.loads(ln) for ln in out.splitlines() if "/api/v1/" in ln]
    assert all(m["event"] == "request_finished" for m in mentions), out  # request_finished only
    ids = [m["correlation_id"] for m in mentions]
    assert len(ids) == len(set(ids)), out  # never two lines for one request
    by_id = {m["correlation_id"]: m for m in mentions}
    assert (by_id[f"ready-{probes}"]["status"], by_id["second"]["status"], by_id["missing"]["status"]) == (200, 200, 404)
    assert set(ids) <= {f"ready-{i}" for i in range(1, probes + 1)} | {"second", "missing"}, out


def test_celery_bookkeeping_is_kept_out_but_failures_are_not() -> None:
    configure(json_output=True, level="INFO")
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.ERROR), name
