"""The shipped Prometheus config and alert rules: promtool checks them, promtool unit tests show
every rule firing and staying quiet, the alerting counters exist at 0 from process start, and a
real Prometheus scraping a live portal sees the gap and dead-letter alerts go off (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db import connections
from prometheus_client.parser import text_string_to_metric_families

from catalog.engine.iceberg import load_catalog
from catalog.engine.schemas import DATA_TYPES
from ingestion.engine.consumer import IcebergConsumer
from ingestion.engine.decode import POISON_REASONS
from ingestion.gaps import OrmGapSink
from k2portal.config import BASE_DIR
from tests.conftest import free_port
from tests.consumer.conftest import DictRegistry, create_topic, encode_trades, make_config, produce, trade

PROMETHEUS_DIR = BASE_DIR / "deploy/prometheus"
UNIT_TESTS = BASE_DIR / "tests/platform/prometheus/alerts_test.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make prometheus` installs Debian's prometheus package"
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    config = _run(_tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout  # the config's rule_files resolves to alerts.yml
    rules = _run(_tool("promtool"), "check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL syntax error is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups: [{name: x, rules: [{alert: X, expr: 'sum by (a (k2_x)'}]}]\n")
    assert _run(_tool("promtool"), "check", "rules", str(bad)).returncode != 0


def test_every_alert_rule_has_promtool_unit_tests_that_pass_firing_and_quiet() -> None:
    shipped = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in shipped["groups"] for r in g["rules"] if "alert" in r}
    assert {"K2HighSequenceGapRate", "K2ConsumerLagHigh", "K2PartitionLagHigh", "K2ConsumerHeartbeatStale",
            "K2DeadLetters", "K2IcebergWriteFailures"} <= alerts
    cases = yaml.safe_load(UNIT_TESTS.read_text())
    checks = [c for t in cases["tests"] for c in t["alert_rule_test"]]
    for alert in alerts:
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert} needs a firing and a quiet case in {UNIT_TESTS.name}"
    result = _run(_tool("promtool"), "test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _samples(text: str, name: str) -> list[dict[str, str]]:
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and s.value == 0]


def test_alerting_counters_exist_at_zero_before_anything_happens() -> None:
    """Process start (the ingestion app's ready()) creates every known label set at 0, so the
    first DLQ message or write failure is an increase and `increase()` sees it. A fresh process:
    in this one, earlier tests have counted messages already."""
    script = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'k2portal.settings'); "
              "os.environ.pop('PROMETHEUS_MULTIPROC_DIR', None); django.setup(); "
              "from prometheus_client import REGISTRY, generate_latest; "
              "print(generate_latest(REGISTRY).decode())")
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                            env={**os.environ, "DEBUG": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    dlq = {(s["exchange"], s["data_type"], s["reason"]) for s in _samples(text, "k2_dlq_messages_total")}
    assert {("asx", d, r) for d in DATA_TYPES for r in POISON_REASONS} <= dlq
    failures = {(s["table"], s["error"]) for s in _samples(text, "k2_iceberg_write_failures_total")}
    assert {(d, "CommitFailedException") for d in DATA_TYPES} <= failures
    for name in ("k2_sequence_gaps_detected_total", "k2_kafka_messages_consumed_total"):
        assert {("asx", d) for d in DATA_TYPES} <= {(s["exchange"], s["data_type"]) for s in _samples(text, name)}


# --- a real Prometheus scraping a live portal --------------------------------------------------

def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def _wait(what: str, probe: Any, timeout: float, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited: {proc.stdout.read() if proc.stdout else ''}"
        try:
            found = probe()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_prometheus_sees_the_gap_alert_pending_and_the_dead_letter_alert_firing(
        live_server, tmp_path: Path, kafka_bootstrap, iceberg_tables, catalog_config, unique) -> None:  # type: ignore[no-untyped-def]
    registry = DictRegistry()
    exchange = f"e{unique}"
    topic = f"market.equities.trades.{exchange}"
    create_topic(kafka_bootstrap, topic)
    engine = IcebergConsumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=OrmGapSink())
    def consume() -> None:
        try:
            engine.run()
        finally:
            connections.close_all()  # the gap sink's connection in this thread

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()

    target = live_server.url.removeprefix("http://")
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],  # the shipped rules, unchanged
              "scrape_configs": [{"job_name": "k2-portal", "metrics_path": "/metrics",
                                  "static_configs": [{"targets": [target]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # The consumer started its stream's counters at 0, and Prometheus has scraped them.
        selector = f'k2_sequence_gaps_detected_total{{exchange="{exchange}"}}'
        seen = _wait("the initialised gap counter", lambda: _api(base, "/api/v1/query", query=selector)["result"],
                     60, proc)
        assert seen[0]["value"][1] == "0"
        # ... and the consumer's heartbeat, a recent Unix time
        beat = _api(base, "/api/v1/query",
                    query=f'k2_consumer_last_heartbeat_timestamp_seconds{{exchange="{exchange}"}}')["result"]
        assert beat and abs(float(beat[0]["value"][1]) - time.time()) < 60
        # 1, 2, 3, 9: one gap in four messages; then one message that is not Avro at all.
        produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", s) for s in (1, 2, 3, 9)]))
        produce(kafka_bootstrap, topic, [(b"BHP", b"not avro")])

        def alerts() -> dict[str, str]:
            active = _api(base, "/api/v1/alerts")["alerts"]
            return {a["labels"]["alertname"]: a["state"] for a in active if a["labels"].get("exchange") == exchange}

        _wait("the gap and dead-letter alerts",
              lambda: (lambda a: a if {"K2HighSequenceGapRate", "K2DeadLetters"} <= a.keys() else None)(alerts()),
              90, proc)
        state = alerts()
        assert state["K2HighSequenceGapRate"] == "pending"  # `for: 5m` before it fires
        _wait("K2DeadLetters firing", lambda: alerts().get("K2DeadLetters") == "firing", 30, proc)
        assert engine.stats.gaps == 1 and engine.stats.dlq == 1
    finally:
        engine.request_stop()
        thread.join(60)
        proc.terminate()
        proc.wait(30)
