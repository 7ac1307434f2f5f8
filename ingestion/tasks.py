"""Celery tasks of the ingestion app: thin wrappers over services."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="ingestion.run_consumer", acks_late=False)
def run_consumer(consumer_id: int) -> dict[str, Any] | None:
    """Run a Consumer row's engine until an operator sets it to `stopping` (admin action)."""
    from ingestion.consumer_services import run_consumer_row

    stats = run_consumer_row(consumer_id=consumer_id)
    return stats.as_dict() if stats is not None else None
