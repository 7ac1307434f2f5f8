"""Writes of the consumer side of the ingestion app (HackSoft style: keyword-only, typed).

Builds the consumer engine from settings with ORM-backed implementations of its interfaces
(gap sink, stop signal, heartbeat), and moves Consumer rows through their states:
stopped/failed → starting (task enqueued on commit) → running → stopping → stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from catalog.engine.schemas import DATA_TYPES, consumer_group, topic_name
from catalog.engine.writer import RetryPolicy
from catalog.selectors import snapshot_policy
from ingestion import samples
from ingestion.engine.consumer import ConsumerConfig, ConsumerStats, IcebergConsumer
from ingestion.gaps import OrmGapSink
from ingestion.models import Consumer, ConsumerRun, Topic
from k2core.errors import Conflict
from k2core.logging import get_logger

if TYPE_CHECKING:
    from k2portal.config import K2Config

log = get_logger(__name__, component="consumer")


class ConsumerTransitionError(Conflict):
    """A consumer cannot move to the requested state from the one it is in."""


def consumer_config(*, data_type: str, topics: tuple[str, ...] | None = None, topic_pattern: str | None = None,
                    group_id: str | None = None, batch_size: int | None = None, max_batch_ms: int | None = None,
                    min_commit_interval_ms: int | None = None, max_messages: int | None = None,
                    from_beginning: bool = False, namespace: str | None = None,
                    k2: K2Config | None = None, **extra: Any) -> ConsumerConfig:
    """The engine's config from K2 settings (K2_CONSUMER_BATCH_SIZE, K2_CONSUMER_MAX_BATCH_MS,
    K2_CONSUMER_MIN_COMMIT_INTERVAL_MS, K2_CATALOG_RETRY_SECONDS, K2_ICEBERG_NAMESPACE, broker) with
    explicit arguments taking precedence."""
    k2 = k2 or settings.K2
    extra.setdefault("snapshot_policy", snapshot_policy(k2))
    extra.setdefault("retry", RetryPolicy(budget_seconds=k2.catalog_retry_seconds))
    kwargs: dict[str, Any] = dict(
        bootstrap_servers=k2.bootstrap_servers, data_type=data_type, topics=topics, topic_pattern=topic_pattern,
        group_id=group_id or consumer_group(data_type), batch_size=batch_size or k2.consumer_batch_size,
        max_batch_ms=max_batch_ms or k2.consumer_max_batch_ms,
        min_commit_interval_ms=k2.consumer_min_commit_interval_ms if min_commit_interval_ms is None else min_commit_interval_ms,
        max_messages=max_messages,
        from_beginning=from_beginning, session_timeout_ms=k2.session_timeout_ms, **extra)
    return ConsumerConfig(namespace=namespace or k2.iceberg_namespace, **kwargs)


def build_engine(*, config: ConsumerConfig, **hooks: Any) -> IcebergConsumer:
    """The engine with this deployment's catalog, registry and the ORM gap sink. A catalog that
    cannot be reached yet (its Postgres restarting) is waited for within the consumer's retry
    budget (K2_CATALOG_RETRY_SECONDS), then `CatalogUnavailable`; nothing is read from Kafka before."""
    from catalog.engine.writer import call_catalog, describe_uri
    from catalog.selectors import get_catalog, get_registry

    catalog = call_catalog(get_catalog, what="open the catalog", policy=config.retry,
                           catalog=describe_uri(settings.K2.iceberg_catalog_uri))
    return IcebergConsumer(config, catalog=catalog, registry=get_registry(), gap_sink=OrmGapSink(), **hooks)


# --- Consumer rows: start / stop / reset (admin actions, boot, the reconciler) ---------------
ACTIVE = (Consumer.Status.STARTING, Consumer.Status.RUNNING, Consumer.Status.STOPPING)


def consumer_queue() -> str:
    """The Celery queue consumer tasks go to (settings.K2_CONSUMER_QUEUE; tests use their own)."""
    return getattr(settings, "K2_CONSUMER_QUEUE", "consumers")


def celery_app() -> Any:
    """The project's Celery app (settings.K2_CELERY_APP), imported on first use and made current,
    so tasks are sent through its broker with its signal handlers (correlation id). Importing
    `k2portal` does not load Celery: a `manage.py` command that sends no task stays fast.

    Celery's current app is per thread, and any earlier look-up of it (a task object touched
    before this app was imported, in any thread) creates a fallback app with the default amqp://
    broker: a task sent from such a thread would go there (a RabbitMQ on the host took it) and no
    worker would see it. So the app is made the process default and this thread's current one."""
    app = import_string(settings.K2_CELERY_APP)
    app.set_default()
    app.set_current()
    return app


def task_gone(task_id: str) -> bool:
    """Whether Celery recorded the task as finished (FAILURE after a lost pool process, SUCCESS,
    REVOKED) in the result backend while the row still says it runs."""
    if not task_id:
        return False
    from celery.result import AsyncResult

    try:
        return AsyncResult(task_id, app=celery_app()).state in ("FAILURE", "SUCCESS", "REVOKED")
    except Exception as exc:  # noqa: BLE001 - Redis unreachable: decide on the heartbeat alone
        log.warning("task_state_unavailable", task_id=task_id, error=str(exc))
        return False


STARTING_GRACE_SECONDS = 120  # how long a queued consumer task may wait for a worker to pick it up


def dead_reason(row: Consumer, *, now: dt.datetime | None = None, stale_seconds: int | None = None) -> str | None:
    """Why an active (starting/running/stopping) row has no live task behind it, or None if it may
    be alive: its heartbeat (or, before the first one, its last state change) is older than
    K2_CONSUMER_STALE_SECONDS, or Celery recorded its task as finished."""
    if row.status not in ACTIVE:
        return None
    now = now or timezone.now()
    stale = stale_seconds or settings.K2.consumer_stale_seconds
    seen = row.heartbeat_at if row.status != Consumer.Status.STARTING else None
    seen = max(filter(None, (seen, row.updated_at)), default=None)
    if row.status == Consumer.Status.STARTING:
        # A task still in the queue is not a dead worker: a consumers worker that is starting (4
        # pool processes importing the engines on a busy 2-core machine) takes tens of seconds,
        # and a restart under a new task id would only queue a second task behind the first.
        stale = max(stale, STARTING_GRACE_SECONDS)
    if seen is not None and (now - seen).total_seconds() > stale:
        age = (now - seen).total_seconds()
        what = "no worker picked its task up" if row.status == Consumer.Status.STARTING else "heartbeat stale"
        return f"{what} for {age:.0f} s (limit K2_CONSUMER_STALE_SECONDS={stale}): the worker is gone"
    if task_gone(row.task_id):
        return f"its Celery task {row.task_id} is no longer running (worker lost or task ended)"
    return None


def _close_runs(consumer_id: int, reason: str, *, task_id: str | None = None) -> int:
    runs = ConsumerRun.objects.filter(consumer_id=consumer_id, ended_at__isnull=True)
    if task_id is not None:
        runs = runs.filter(task_id=task_id)
    return runs.update(ended_at=timezone.now(), end_reason=reason[:500])


def _enqueue(row: Consumer) -> None:
    """Inside a transaction holding the row: mark it starting under a new task id, and send the
    task once the transaction commits. The id is chosen here so the task can tell whether it is
    still the one the row expects (a superseded task exits at once)."""
    from ingestion.tasks import run_consumer

    task_id = str(uuid.uuid4())
    row.status = Consumer.Status.STARTING
    row.task_id = task_id
    row.worker = ""
    row.save(update_fields=["status", "task_id", "worker", "last_error", "desired_status", "restart_times",
                            "next_restart_at", "updated_at"])
    queue = consumer_queue()
    celery_app()
    transaction.on_commit(lambda: run_consumer.apply_async(args=[row.pk], queue=queue, task_id=task_id))


def start_consumer(*, consumer: Consumer) -> Consumer:
    """Mark the consumer starting and enqueue its task once the transaction commits. A consumer
    whose row says it is active but whose task is dead (see `dead_reason`) is started too."""
    with transaction.atomic():
        row = Consumer.objects.select_for_update().get(pk=consumer.pk)
        if row.status in ACTIVE:
            reason = dead_reason(row)
            if reason is None:
                raise ConsumerTransitionError(
                    f"consumer {row.name} is {row.status}; only a stopped or failed consumer can be started")
            _close_runs(row.pk, f"started again by an operator: {reason}")
        row.desired_status = "running"
        row.last_error = ""
        row.restart_times = []
        row.next_restart_at = None
        _enqueue(row)
    return row


def stop_consumer(*, consumer: Consumer) -> Consumer:
    """Ask a running consumer to stop; its task sees `stopping` within a second and exits cleanly.
    A consumer whose task is dead goes straight to `stopped` (nothing would ever acknowledge)."""
    with transaction.atomic():
        row = Consumer.objects.select_for_update().get(pk=consumer.pk)
        reason = dead_reason(row) if row.status in (Consumer.Status.STARTING, Consumer.Status.RUNNING) else None
        if row.status not in (Consumer.Status.STARTING, Consumer.Status.RUNNING):
            if row.status == Consumer.Status.FAILED:  # nothing runs: stop means "do not restart it"
                row.desired_status = "stopped"
                row.status = Consumer.Status.STOPPED
                row.save(update_fields=["status", "desired_status", "updated_at"])
                return row
            raise ConsumerTransitionError(
                f"consumer {row.name} is {row.status}; only a starting or running consumer can be stopped")
        row.desired_status = "stopped"
        if reason is not None:
            row.status = Consumer.Status.STOPPED
            row.task_id = ""
            _close_runs(row.pk, f"stopped by an operator; {reason}")
        else:
            row.status = Consumer.Status.STOPPING
        row.save(update_fields=["status", "desired_status", "task_id", "updated_at"])
    return row


def reset_consumer(*, consumer: Consumer, reason: str = "reset by an operator") -> Consumer:
    """Whatever state the row is in, make it `stopped` and not wanted running: close its open runs
    and forget its task (a task that is in fact alive sees `stopped` and exits within a second)."""
    with transaction.atomic():
        row = Consumer.objects.select_for_update().get(pk=consumer.pk)
        previous = row.status
        row.status = Consumer.Status.STOPPED
        row.desired_status = "stopped"
        row.task_id = ""
        row.next_restart_at = None
        row.restart_times = []
        row.save(update_fields=["status", "desired_status", "task_id", "next_restart_at", "restart_times",
                                "updated_at"])
        _close_runs(row.pk, f"{reason} (was {previous})")
    return row


def mark_failed(*, consumer_id: int, task_id: str, reason: str) -> bool:
    """The row's task `task_id` is dead: mark the consumer failed with the reason and close its run.
    Only if the row still belongs to that task (an operator or the reconciler may have moved on)."""
    with transaction.atomic():
        changed = Consumer.objects.filter(pk=consumer_id, task_id=task_id, status__in=ACTIVE).update(
            status=Consumer.Status.FAILED, last_error=reason[:2000], updated_at=timezone.now())
        _close_runs(consumer_id, reason, task_id=task_id)
    if changed:
        log.warning("consumer_failed", consumer_id=consumer_id, task_id=task_id, reason=reason)
    return bool(changed)


@dataclass
class ReconcileReport:
    failed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


def _restart_delay_s(restarts_in_window: int) -> float:
    """Backoff before the next automatic restart: 0 s for the first, then 5, 10, 20 … s, at most 5 min."""
    return 0.0 if restarts_in_window == 0 else min(300.0, 5.0 * 2 ** (restarts_in_window - 1))


def reconcile_consumers(*, now: dt.datetime | None = None, k2: K2Config | None = None) -> ReconcileReport:
    """One pass of the reconciler (Celery beat every few seconds, one at a time under a Redis lock):
    active rows whose task is dead become `failed` (or `stopped` if they were stopping) with the
    reason, their runs closed; failed rows an operator wants running are restarted, at most
    K2_CONSUMER_MAX_RESTARTS times per K2_CONSUMER_RESTART_WINDOW_MINUTES, with a growing delay;
    beyond that they stay failed and say so."""
    k2 = k2 or settings.K2
    now = now or timezone.now()
    report = ReconcileReport()
    for row in Consumer.objects.filter(status__in=ACTIVE):
        reason = dead_reason(row, now=now, stale_seconds=k2.consumer_stale_seconds)
        if reason is None:
            continue
        if row.status == Consumer.Status.STOPPING:
            with transaction.atomic():
                if Consumer.objects.filter(pk=row.pk, task_id=row.task_id, status=row.status).update(
                        status=Consumer.Status.STOPPED, task_id="", updated_at=now):
                    _close_runs(row.pk, f"stopped: {reason}")
                    report.stopped.append(row.name)
        elif mark_failed(consumer_id=row.pk, task_id=row.task_id, reason=reason):
            report.failed.append(row.name)
    window = dt.timedelta(minutes=k2.consumer_restart_window_minutes)
    for row in Consumer.objects.filter(status=Consumer.Status.FAILED, desired_status="running"):
        with transaction.atomic():
            row = Consumer.objects.select_for_update().get(pk=row.pk)
            if row.status != Consumer.Status.FAILED or row.desired_status != "running":
                continue
            recent = [t for t in row.restart_times if now - dt.datetime.fromisoformat(t) < window]
            if len(recent) >= k2.consumer_max_restarts:
                note = (f"gave up restarting: {len(recent)} automatic restarts in the last "
                        f"{k2.consumer_restart_window_minutes} min (K2_CONSUMER_MAX_RESTARTS); start it from the admin")
                if note not in row.last_error:
                    row.last_error = f"{row.last_error}\n{note}".strip()
                    row.save(update_fields=["last_error", "updated_at"])
                    report.gave_up.append(row.name)
                continue
            if row.next_restart_at is None:
                row.next_restart_at = now + dt.timedelta(seconds=_restart_delay_s(len(recent)))
                if row.next_restart_at > now:
                    row.save(update_fields=["next_restart_at", "updated_at"])
                    continue
            elif row.next_restart_at > now:
                continue
            row.restart_times = [*recent, now.isoformat()]
            row.next_restart_at = None
            _enqueue(row)
            report.restarted.append(row.name)
            log.warning("consumer_restarting", consumer=row.name, restarts_in_window=len(row.restart_times),
                        last_error=row.last_error)
    return report


def ensure_default_consumers(*, exchange: str = "asx", asset_class: str = "equities") -> list[Consumer]:
    """One Consumer row per data type on the exchange's topics (idempotent), for `make run`."""
    rows = []
    for data_type in DATA_TYPES:
        name = topic_name(asset_class=asset_class, data_type=data_type, exchange=exchange)
        topic, _ = Topic.objects.get_or_create(name=name, defaults={"asset_class": asset_class,
                                                                   "data_type": data_type, "exchange": exchange})
        row, _ = Consumer.objects.get_or_create(
            name=f"{data_type}-{exchange}",
            defaults={"data_type": data_type, "topic": topic, "group_id": consumer_group(data_type)})
        rows.append(row)
    return rows


def start_default_consumers(*, exchange: str = "asx", asset_class: str = "equities",
                            data_types: tuple[str, ...] = DATA_TYPES) -> list[Consumer]:
    """Create the default consumers and start those not already running (boot of `make run`)."""
    started = []
    for row in ensure_default_consumers(exchange=exchange, asset_class=asset_class):
        if row.data_type not in data_types:
            continue
        if row.status in ACTIVE:
            # a previous `make run` ended without stopping it: its task is gone
            reset_consumer(consumer=row, reason="boot of `make run`: its previous task is gone")
            row.refresh_from_db()
        started.append(start_consumer(consumer=row))
    return started


# --- used by the Celery task --------------------------------------------------------------
HEARTBEAT_EVERY_S = 2.0


def _beat(row: Any, done: threading.Event) -> None:
    """The process is alive: write heartbeat_at every HEARTBEAT_EVERY_S from a thread of its own, so
    a loop that waits (a rebalance, an Iceberg commit retrying through an outage) is not taken
    for a dead one. The reconciler judges death on this (K2_CONSUMER_STALE_SECONDS)."""
    from django.db import connection

    try:
        while not done.wait(HEARTBEAT_EVERY_S):
            try:
                row.update(heartbeat_at=timezone.now())
            except Exception as exc:  # noqa: BLE001 - Postgres briefly away: try again next beat
                log.warning("heartbeat_failed", error=str(exc))
    finally:
        connection.close()


def run_consumer_row(*, consumer_id: int, task_id: str | None = None) -> ConsumerStats | None:
    """Run the engine for a Consumer row until its status becomes `stopping` (the stop signal),
    keeping heartbeat, stats and a ConsumerRun up to date.

    With `task_id` (the Celery task), every write is fenced on the row still naming this task: a
    task the reconciler or an operator has replaced exits at once and never overwrites the row.
    A pool process whose worker died (its parent changed) stops gracefully and marks the row failed."""
    consumer = Consumer.objects.select_related("topic").get(pk=consumer_id)
    mine = Consumer.objects.filter(pk=consumer_id)
    if task_id is not None:
        mine = mine.filter(task_id=task_id)
        if consumer.task_id != task_id:
            log.info("consumer_task_superseded", consumer=consumer.name, task_id=task_id, current=consumer.task_id)
            return None
    if consumer.status in (Consumer.Status.STOPPING, Consumer.Status.STOPPED):
        mine.filter(status=Consumer.Status.STOPPING).update(status=Consumer.Status.STOPPED)
        return None
    worker = f"{socket.gethostname()} pid {os.getpid()}"
    parent = os.getppid()
    run = ConsumerRun.objects.create(consumer=consumer, task_id=task_id or "", worker=worker)
    mine.update(status=Consumer.Status.RUNNING, heartbeat_at=timezone.now(), worker=worker)
    orphaned: list[str] = []

    def stop_signal() -> bool:
        if os.getppid() != parent:  # the Celery worker that forked this pool process is gone
            if not orphaned:  # (prefork sets PDEATHSIG, so this is for pools that do not)
                orphaned.append(f"the Celery worker process {parent} died; its pool process {os.getpid()} "
                                "stopped the consumer")
            return True
        status = mine.values_list("status", flat=True).first()
        return status in (None, Consumer.Status.STOPPING, Consumer.Status.STOPPED, Consumer.Status.FAILED)

    def heartbeat(stats: ConsumerStats) -> None:
        data = stats.as_dict()
        mine.update(heartbeat_at=timezone.now(), stats=data)
        samples.record(consumer_id=consumer_id, stats=data)  # the dashboard's last-hour sparklines
        ConsumerRun.objects.filter(pk=run.pk).update(messages=stats.messages, batches=stats.batches,
                                                     gaps=stats.gaps, dlq=stats.dlq)

    def end_run(stats: ConsumerStats, reason: str, error: str = "") -> None:
        ConsumerRun.objects.filter(pk=run.pk).update(messages=stats.messages, batches=stats.batches,
                                                     gaps=stats.gaps, dlq=stats.dlq)
        ConsumerRun.objects.filter(pk=run.pk, ended_at__isnull=True).update(  # unless already closed with a reason
            ended_at=timezone.now(), error=error, end_reason=reason[:500])

    beating = threading.Event()
    beat_thread = threading.Thread(target=_beat, args=(mine, beating), name="k2-consumer-heartbeat", daemon=True)
    beat_thread.start()
    engine = None
    try:
        config = consumer_config(
            data_type=consumer.data_type,
            topics=(consumer.topic.name,) if consumer.topic and not consumer.topic_pattern else None,
            topic_pattern=consumer.topic_pattern or None, group_id=consumer.group_id or None,
            batch_size=consumer.batch_size, max_batch_ms=consumer.max_batch_ms,
            min_commit_interval_ms=consumer.min_commit_interval_ms, progress_interval_s=5.0)
        engine = build_engine(config=config, stop_signal=stop_signal, heartbeat=heartbeat)
        with engine.signals_stop_gracefully():  # a worker's SIGTERM reaching this pool process
            stats = engine.run()
    except Exception as exc:
        stats = engine.stats if engine is not None else ConsumerStats()
        error = f"{type(exc).__name__}: {exc}"
        mine.filter(status__in=ACTIVE).update(status=Consumer.Status.FAILED, last_error=error,
                                              stats=stats.as_dict(), updated_at=timezone.now())
        end_run(stats, f"failed: {error}", error)
        raise
    finally:
        beating.set()
        beat_thread.join(timeout=10)
    if orphaned:
        mine.filter(status__in=ACTIVE).update(status=Consumer.Status.FAILED, last_error=orphaned[0],
                                              stats=stats.as_dict(), heartbeat_at=timezone.now(),
                                              updated_at=timezone.now())
        end_run(stats, orphaned[0])
        return stats
    mine.filter(status__in=(Consumer.Status.STOPPING, Consumer.Status.RUNNING)).update(
        status=Consumer.Status.STOPPED, stats=stats.as_dict(), heartbeat_at=timezone.now(), task_id="")
    end_run(stats, "stopped")
    return stats


__all__ = ["ConsumerTransitionError", "ReconcileReport", "build_engine", "consumer_config", "dead_reason",
           "ensure_default_consumers", "mark_failed", "reconcile_consumers", "reset_consumer", "run_consumer_row",
           "start_consumer", "start_default_consumers", "stop_consumer"]
