"""The web service as docker-compose.yml runs it: gunicorn with the shipped config, static files
served by whitenoise, and /metrics merging every container's multiprocess directory (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from k2portal.config import BASE_DIR
from tests.conftest import free_port

PY = sys.executable


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _wait_up(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:g}s")


def _env(metrics_dir: Path, hostname: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SECRET_KEY": "test-production-server", "DEBUG": "0",
           "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/k2"),
           "K2_METRICS_DIR": str(metrics_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / hostname),
           "PYTHONUNBUFFERED": "1", **extra}
    (metrics_dir / hostname).mkdir(parents=True, exist_ok=True)
    return env


def _count(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_gunicorn_serves_the_portal_static_files_and_every_containers_metrics(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    # Two other "containers" (same pid numbering, own directories) counted a DLQ message each.
    bump = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'k2portal.settings'; django.setup();"
            "from k2core import metrics; metrics.DLQ_MESSAGES.labels(exchange='zz', asset_class='equities',"
            " data_type='trades', reason='undecodable').inc()")
    for host in ("worker-a", "worker-b"):
        subprocess.run([PY, "-c", bump], cwd=BASE_DIR, env=_env(metrics_dir, host), check=True, timeout=120)
    assert sorted(p.parent.name for p in metrics_dir.glob("*/*.db")) == ["worker-a", "worker-b"] * (
        len(list(metrics_dir.glob("worker-a/*.db"))))
    static = subprocess.run([PY, "manage.py", "collectstatic", "--noinput"], cwd=BASE_DIR,
                            env=_env(metrics_dir, "build"), capture_output=True, text=True, timeout=300)
    assert static.returncode == 0, static.stderr
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "gunicorn", "-c", "python:k2portal.gunicorn_conf", "k2portal.wsgi"],
                            cwd=BASE_DIR, env=_env(metrics_dir, "web", K2_WEB_ADDR=f"127.0.0.1:{port}",
                                                   WEB_CONCURRENCY="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/api/v1/ping", proc)
        status, body, headers = _get(f"{base}/static/admin/css/base.css")
        assert status == 200 and b"body" in body
        assert "text/css" in headers["Content-Type"]
        status, _, _ = _get(f"{base}/static/admin/css/no-such-file.css")
        assert status == 404
        status, body, _ = _get(f"{base}/metrics")
        assert status == 200
        text = body.decode()
        assert _count(text, "k2_dlq_messages_total", {"exchange": "zz", "reason": "undecodable"}) == 2.0
        # the web workers' own series are there too (the known label sets, initialised at start)
        assert _count(text, "k2_dlq_messages_total", {"exchange": "asx", "reason": "undecodable"}) == 0.0
    finally:
        proc.terminate()
        proc.wait(30)
