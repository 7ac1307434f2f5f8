"""Celery tasks of the ingestion app: thin wrappers over services."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import task_failure, worker_shutting_down

RECONCILER_LOCK = "k2:lock:reconcile_consumers"


@shared_task(name="ingestion.run_consumer", acks_late=False, bind=True)
def run_consumer(self: Any, consumer_id: int) -> dict[str, Any] | None:
    """Run a Consumer row's engine until an operator sets it to `stopping` (admin action)."""
    from ingestion.consumer_services import run_consumer_row

    stats = run_consumer_row(consumer_id=consumer_id, task_id=self.request.id)
    return stats.as_dict() if stats is not None else None


@shared_task(name="ingestion.reconcile_consumers", ignore_result=True)
def reconcile_consumers(lock_name: str = RECONCILER_LOCK) -> dict[str, list[str]] | None:
    """Periodic (beat, every 5 s): mark consumers with a dead task failed and restart those that should
    run (`consumer_services.reconcile_consumers`). A Redis lock keeps it to one pass at a time;
    a pass that finds the lock held does nothing and returns None."""
    import dataclasses

    import redis
    from django.conf import settings

    from ingestion.consumer_services import reconcile_consumers as reconcile

    client = redis.Redis.from_url(settings.K2.redis_url)
    lock = client.lock(lock_name, timeout=60, blocking=False)
    if not lock.acquire(blocking=False):
        return None
    try:
        return dataclasses.asdict(reconcile())
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # expired meanwhile (a pass longer than 60 s)
            pass


@shared_task(name="ingestion.refresh_watermarks", ignore_result=True)
def refresh_watermarks() -> int:
    """Periodic (beat): refresh every Topic's per-partition low/high watermarks from the broker."""
    from ingestion.producer_services import refresh_watermarks as refresh

    return len(refresh(timeout=10.0))


@task_failure.connect
def _consumer_task_failed(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                          args: Any = None, **_: Any) -> None:
    """A consumer task ended in failure: raised (the service already marked the row), or its pool
    process was lost (SIGKILL, OOM): Celery's worker sends this with a WorkerLostError from the
    main process, so the row is marked failed at once instead of waiting for a stale heartbeat."""
    if getattr(sender, "name", None) != "ingestion.run_consumer" or not task_id or not args:
        return
    from ingestion.consumer_services import mark_failed

    mark_failed(consumer_id=int(args[0]), task_id=task_id,
                reason=f"the Celery task failed: {type(exception).__name__}: {exception}")


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
