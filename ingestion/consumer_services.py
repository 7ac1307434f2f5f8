"""Writes of the consumer side of the ingestion app (HackSoft style: keyword-only, typed).

Builds the consumer engine from settings with ORM-backed implementations of its interfaces
(gap sink, stop signal, heartbeat), and moves Consumer rows through their states:
stopped/failed → starting (task enqueued on commit) → running → stopping → stopped.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.engine.schemas import DATA_TYPES, consumer_group, topic_name
from catalog.engine.writer import RetryPolicy
from catalog.selectors import snapshot_policy
from ingestion import samples
from ingestion.engine.consumer import ConsumerConfig, ConsumerStats, IcebergConsumer
from ingestion.gaps import OrmGapSink
from ingestion.models import Consumer, ConsumerRun, Topic
from k2portal.config import K2Config


class ConsumerTransitionError(Exception):
    """A consumer cannot move to the requested state from the one it is in."""


def consumer_config(*, data_type: str, topics: tuple[str, ...] | None = None, topic_pattern: str | None = None,
                    group_id: str | None = None, batch_size: int | None = None, max_batch_ms: int | None = None,
                    max_messages: int | None = None, from_beginning: bool = False, namespace: str | None = None,
                    k2: K2Config | None = None, **extra: Any) -> ConsumerConfig:
    """The engine's config from K2 settings (K2_CONSUMER_BATCH_SIZE, K2_CONSUMER_MAX_BATCH_MS,
    K2_CATALOG_RETRY_SECONDS, broker) with explicit arguments taking precedence."""
    k2 = k2 or settings.K2
    extra.setdefault("snapshot_policy", snapshot_policy(k2))
    extra.setdefault("retry", RetryPolicy(budget_seconds=k2.catalog_retry_seconds))
    kwargs: dict[str, Any] = dict(
        bootstrap_servers=k2.bootstrap_servers, data_type=data_type, topics=topics, topic_pattern=topic_pattern,
        group_id=group_id or consumer_group(data_type), batch_size=batch_size or k2.consumer_batch_size,
        max_batch_ms=max_batch_ms or k2.consumer_max_batch_ms, max_messages=max_messages,
        from_beginning=from_beginning, session_timeout_ms=k2.session_timeout_ms, **extra)
    if namespace:
        kwargs["namespace"] = namespace
    return ConsumerConfig(**kwargs)


def build_engine(*, config: ConsumerConfig, **hooks: Any) -> IcebergConsumer:
    """The engine with this deployment's catalog, registry and the ORM gap sink."""
    from catalog.selectors import get_catalog, get_registry

    return IcebergConsumer(config, catalog=get_catalog(), registry=get_registry(), gap_sink=OrmGapSink(), **hooks)


# --- Consumer rows: start / stop (admin actions, boot) ---------------------------------------
def start_consumer(*, consumer: Consumer) -> Consumer:
    """Mark the consumer starting and enqueue its task once the transaction commits."""
    from ingestion.tasks import run_consumer

    with transaction.atomic():
        row = Consumer.objects.select_for_update().get(pk=consumer.pk)
        if row.status not in (Consumer.Status.STOPPED, Consumer.Status.FAILED):
            raise ConsumerTransitionError(
                f"consumer {row.name} is {row.status}; only a stopped or failed consumer can be started")
        row.status = Consumer.Status.STARTING
        row.last_error = ""
        row.save(update_fields=["status", "last_error", "updated_at"])

        def enqueue() -> None:
            result = run_consumer.apply_async(args=[row.pk], queue="consumers")
            Consumer.objects.filter(pk=row.pk).update(task_id=result.id)

        transaction.on_commit(enqueue)
    return row


def stop_consumer(*, consumer: Consumer) -> Consumer:
    """Ask a running consumer to stop; its task sees `stopping` within a second and exits cleanly."""
    with transaction.atomic():
        row = Consumer.objects.select_for_update().get(pk=consumer.pk)
        if row.status not in (Consumer.Status.STARTING, Consumer.Status.RUNNING):
            raise ConsumerTransitionError(
                f"consumer {row.name} is {row.status}; only a starting or running consumer can be stopped")
        row.status = Consumer.Status.STOPPING
        row.save(update_fields=["status", "updated_at"])
    return row


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
        if row.status in (Consumer.Status.STARTING, Consumer.Status.RUNNING, Consumer.Status.STOPPING):
            # a previous `make run` ended without stopping it: its task is gone
            Consumer.objects.filter(pk=row.pk).update(status=Consumer.Status.STOPPED)
            row.refresh_from_db()
        started.append(start_consumer(consumer=row))
    return started


# --- used by the Celery task --------------------------------------------------------------
def run_consumer_row(*, consumer_id: int) -> ConsumerStats | None:
    """Run the engine for a Consumer row until its status becomes `stopping` (the stop signal),
    keeping heartbeat, stats and a ConsumerRun up to date."""
    consumer = Consumer.objects.select_related("topic").get(pk=consumer_id)
    if consumer.status == Consumer.Status.STOPPING:
        Consumer.objects.filter(pk=consumer_id).update(status=Consumer.Status.STOPPED)
        return None
    run = ConsumerRun.objects.create(consumer=consumer)
    Consumer.objects.filter(pk=consumer_id).update(status=Consumer.Status.RUNNING, heartbeat_at=timezone.now())

    def stop_signal() -> bool:
        status = Consumer.objects.filter(pk=consumer_id).values_list("status", flat=True).first()
        return status in (None, Consumer.Status.STOPPING, Consumer.Status.STOPPED)

    def heartbeat(stats: ConsumerStats) -> None:
        data = stats.as_dict()
        Consumer.objects.filter(pk=consumer_id).update(heartbeat_at=timezone.now(), stats=data)
        samples.record(consumer_id=consumer_id, stats=data)  # the dashboard's last-hour sparklines
        ConsumerRun.objects.filter(pk=run.pk).update(messages=stats.messages, batches=stats.batches,
                                                     gaps=stats.gaps, dlq=stats.dlq)

    config = consumer_config(
        data_type=consumer.data_type,
        topics=(consumer.topic.name,) if consumer.topic and not consumer.topic_pattern else None,
        topic_pattern=consumer.topic_pattern or None, group_id=consumer.group_id or None,
        batch_size=consumer.batch_size, max_batch_ms=consumer.max_batch_ms, progress_interval_s=5.0)
    engine = build_engine(config=config, stop_signal=stop_signal, heartbeat=heartbeat)
    try:
        with engine.signals_stop_gracefully():  # a worker's SIGTERM reaching this pool process
            stats = engine.run()
    except Exception as exc:
        Consumer.objects.filter(pk=consumer_id).update(status=Consumer.Status.FAILED, last_error=str(exc),
                                                       stats=engine.stats.as_dict())
        ConsumerRun.objects.filter(pk=run.pk).update(ended_at=timezone.now(), error=str(exc),
                                                     messages=engine.stats.messages, batches=engine.stats.batches,
                                                     gaps=engine.stats.gaps, dlq=engine.stats.dlq)
        raise
    Consumer.objects.filter(pk=consumer_id).update(status=Consumer.Status.STOPPED, stats=stats.as_dict(),
                                                   heartbeat_at=timezone.now())
    ConsumerRun.objects.filter(pk=run.pk).update(ended_at=timezone.now(), messages=stats.messages,
                                                 batches=stats.batches, gaps=stats.gaps, dlq=stats.dlq)
    return stats


__all__ = ["ConsumerTransitionError", "build_engine", "consumer_config", "ensure_default_consumers",
           "run_consumer_row", "start_consumer", "start_default_consumers", "stop_consumer"]
