"""Celery tasks carry the caller's correlation id into a real worker (Redis broker);
/healthz reports every dependency and names the failing one."""

from __future__ import annotations

import dataclasses

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import Client

from k2core.logging import clear_correlation_id, get_correlation_id, set_correlation_id
from k2portal.celery import app
from tests.conftest import free_port


@app.task(name="tests.echo_correlation_id")
def echo_correlation_id() -> str | None:
    """The correlation id the worker bound for this task (a probe of propagation; defined by the test, not shipped)."""
    return get_correlation_id()


def test_task_runs_in_the_worker_with_the_callers_correlation_id(unique: str) -> None:
    queue = f"test-{unique}"
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=10):
        set_correlation_id(f"corr-{unique}")
        try:
            result = echo_correlation_id.apply_async(queue=queue)
        finally:
            clear_correlation_id()
        assert result.get(timeout=30) == f"corr-{unique}"


@pytest.mark.django_db
def test_healthz_all_green_against_the_real_stack(k2_settings) -> None:  # type: ignore[no-untyped-def]
    response = Client().get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"database", "redis", "kafka", "iceberg_catalog", "warehouse"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
def test_healthz_503_names_redis_when_it_is_unreachable(k2_settings) -> None:  # type: ignore[no-untyped-def]
    closed = free_port()  # nothing listens here
    k2_settings.K2 = dataclasses.replace(k2_settings.K2, redis_url=f"redis://127.0.0.1:{closed}/0")
    response = Client().get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["redis"]
    assert body["checks"]["redis"]["ok"] is False
    assert "Connect" in body["checks"]["redis"]["detail"] or "refused" in body["checks"]["redis"]["detail"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_healthz_503_names_kafka_when_the_broker_is_down(k2_settings) -> None:  # type: ignore[no-untyped-def]
    k2_settings.K2 = dataclasses.replace(k2_settings.K2, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["kafka"]
