"""Celery tasks of the ingestion app: thin wrappers over services."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_shutting_down


@shared_task(name="ingestion.run_consumer", acks_late=False)
def run_consumer(consumer_id: int) -> dict[str, Any] | None:
    """Run a Consumer row's engine until an operator sets it to `stopping` (admin action)."""
    from ingestion.consumer_services import run_consumer_row

    stats = run_consumer_row(consumer_id=consumer_id)
    return stats.as_dict() if stats is not None else None


@shared_task(name="ingestion.refresh_watermarks", ignore_result=True)
def refresh_watermarks() -> int:
    """Periodic (beat): refresh every Topic's per-partition low/high watermarks from the broker."""
    from ingestion.producer_services import refresh_watermarks as refresh

    return len(refresh(timeout=10.0))


@worker_shutting_down.connect
def _stop_consumers_of_this_worker(**_: Any) -> None:
    """On a warm shutdown (SIGTERM, Ctrl-C), ask the consumer loops this worker runs to stop:
    each finishes its batch, writes it, commits and exits, so the worker can exit cleanly and
    the consumer rows read `stopped` rather than staying `running` with no task behind them."""
    from celery.worker import state

    from ingestion.models import Consumer

    task_ids = [request.id for request in list(state.active_requests)]
    if task_ids:
        Consumer.objects.filter(task_id__in=task_ids).exclude(status=Consumer.Status.STOPPED).update(
            status=Consumer.Status.STOPPING)
