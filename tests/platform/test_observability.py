"""Structured logs carry correlation ids; the metrics registry and /metrics (ADR #007, #008)."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from k2core import metrics
from k2core.logging import get_logger, set_correlation_id, timer
from tests.conftest import log_records


@pytest.mark.django_db
def test_request_log_line_carries_the_correlation_id_returned_in_the_header(json_log: io.StringIO) -> None:
    response = Client().get("/api/v1/ping")
    returned = response.headers["X-Correlation-ID"]
    assert len(returned) == 32
    finished = [r for r in log_records(json_log) if r["event"] == "request_finished"]
    assert finished and finished[-1]["correlation_id"] == returned
    assert finished[-1]["path"] == "/api/v1/ping"
    assert {"timestamp", "level", "logger"} <= finished[-1].keys()


@pytest.mark.django_db
def test_incoming_correlation_id_is_kept(json_log: io.StringIO) -> None:
    response = Client().get("/api/v1/ping", headers={"X-Correlation-ID": "req-abc-123"})
    assert response.headers["X-Correlation-ID"] == "req-abc-123"
    assert any(r.get("correlation_id") == "req-abc-123" for r in log_records(json_log))


def test_timer_logs_the_operation_duration(json_log: io.StringIO) -> None:
    set_correlation_id("corr-timer")
    with timer(get_logger("k2.test", component="storage"), "batch_processing", symbol_count=3):
        pass
    done = [r for r in log_records(json_log) if r["event"] == "operation_completed"]
    assert done[-1]["operation"] == "batch_processing"
    assert done[-1]["component"] == "storage"
    assert done[-1]["correlation_id"] == "corr-timer"
    assert isinstance(done[-1]["duration_ms"], float)


def test_registry_names_are_prefixed_and_labels_bounded() -> None:
    registered = metrics.all_metrics()
    assert len(registered) >= 30
    for key, metric in registered.items():
        assert metric._name.startswith("k2_"), key
        assert "symbol" not in metric._labelnames, f"{key} has an unbounded symbol label"


def test_histograms_use_the_hft_latency_buckets() -> None:
    upper = [b for b in metrics.ICEBERG_WRITE_DURATION._upper_bounds if b != float("inf")]
    assert upper == [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


def test_registering_a_duplicate_fails() -> None:
    with pytest.raises(ValueError):
        metrics.counter("sequence_gaps_detected_total", "again", metrics.STREAM_LABELS)
    with pytest.raises(ValueError):  # prometheus_client refuses the same name in its registry too
        Counter("k2_sequence_gaps_detected_total", "again")


def test_typed_getters_refuse_the_wrong_type() -> None:
    assert metrics.get_counter("sequence_gaps_detected_total") is metrics.SEQUENCE_GAPS
    with pytest.raises(TypeError):
        metrics.get_gauge("sequence_gaps_detected_total")


@pytest.mark.django_db
def test_metrics_endpoint_serves_django_and_k2_metrics() -> None:
    metrics.SEQUENCE_GAPS.labels(exchange="asx", asset_class="equities", data_type="trades").inc()
    client = Client()
    client.get("/api/v1/ping")
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert "k2_sequence_gaps_detected" in families
    assert any(name.startswith("django_http_requests") for name in families)
    samples = [s for s in families["k2_sequence_gaps_detected"].samples if s.name.endswith("_total")]
    assert any(s.labels == {"exchange": "asx", "asset_class": "equities", "data_type": "trades"} and s.value >= 1
               for s in samples)


def test_correlation_ids_are_isolated_between_threads(json_log: io.StringIO) -> None:
    import threading

    barrier = threading.Barrier(2)
    log = get_logger("k2.test.threads")

    def work(name: str) -> None:
        set_correlation_id(f"corr-{name}")
        barrier.wait()  # both ids are bound before either logs
        log.info("thread_work", worker=name)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [r for r in log_records(json_log) if r["event"] == "thread_work"]
    assert {(r["worker"], r["correlation_id"]) for r in lines} == {("a", "corr-a"), ("b", "corr-b")}


@pytest.mark.django_db
def test_admin_index_links_the_platform_pages(admin_client) -> None:  # type: ignore[no-untyped-def]
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    body = page.content.decode()
    for href in ("/admin/catalog/iceberg-tables/", "/api/v1/docs", "/healthz", "/metrics"):
        assert f'href="{href}"' in body
    for section in ("Consumers", "Sequence gaps", "Topics", "Saved queries"):
        assert section in body


@pytest.mark.django_db
def test_iceberg_tables_page_names_an_unreachable_catalog(admin_client, settings) -> None:  # type: ignore[no-untyped-def]
    """The catalog's database down (a closed port): the page says so and what to check, no 500."""
    import dataclasses

    from catalog import selectors
    from tests.conftest import free_port

    settings.K2 = dataclasses.replace(
        settings.K2, iceberg_catalog_uri=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    selectors.get_catalog.cache_clear()
    try:
        page = admin_client.get("/admin/catalog/iceberg-tables/")
    finally:
        selectors.get_catalog.cache_clear()
    assert page.status_code == 200
    body = page.content.decode()
    assert "the Iceberg catalog is unreachable" in body and "K2_ICEBERG_CATALOG_URI" in body
