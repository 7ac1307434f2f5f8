"""Celery tasks of the ingestion app: thin wrappers over services."""

from __future__ import annotations

import signal
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_shutting_down


@shared_task(name="ingestion.run_consumer", acks_late=False)
def run_consumer(consumer_id: int) -> dict[str, Any] | None:
    """Run a Consumer row's engine until an operator sets it to `stopping` (admin action)."""
    from ingestion.consumer_services import run_consumer_row

    # A worker stopped with SIGTERM (Ctrl-C under `make run`, a container stop) may deliver it to
    # this pool process too: finish the batch in hand, write, commit and return instead of dying.
    # (Signal handlers can only be installed from a main thread: a threads pool skips this.)
    received: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum)) if in_main else None
    try:
        stats = run_consumer_row(consumer_id=consumer_id, interrupted=lambda: bool(received))
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
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
