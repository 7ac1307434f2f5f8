"""Writes of the producer side of the ingestion app: topics (broker + Topic rows), schema
registration and producing CSV files. Thin Django shell over `ingestion.engine` (HackSoft style:
keyword-only, typed; commands and tasks call these)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.engine.schemas import DATA_TYPES, schema_text, subject_name, topic_name
from ingestion.engine import topics as topic_engine
from ingestion.engine.producer import ProduceError, ProduceResult, ProducerSettings, produce_csv_parallel
from ingestion.models import Topic


def producer_settings(*, delivery_timeout_ms: int | None = None, connect_timeout_s: float | None = None) -> ProducerSettings:
    """Producer settings for this deployment's broker (K2_KAFKA_BOOTSTRAP or the embedded one)."""
    base = ProducerSettings(bootstrap_servers=settings.K2.bootstrap_servers)
    return ProducerSettings(
        bootstrap_servers=base.bootstrap_servers,
        delivery_timeout_ms=delivery_timeout_ms or base.delivery_timeout_ms,
        connect_timeout_s=connect_timeout_s or base.connect_timeout_s,
    )


def create_topics(*, partitions: int | None = None, exchanges: tuple[str, ...] = ("asx",),
                  asset_class: str = "equities", timeout: float = 10.0) -> dict[str, str]:
    """Create the declared topics on the broker (idempotent) and record them as Topic rows."""
    specs = topic_engine.declared_topics(exchanges=exchanges, asset_class=asset_class, partitions=partitions)
    outcome = topic_engine.create_topics(settings.K2.bootstrap_servers, specs, timeout=timeout)
    actual = topic_engine.existing_partitions(settings.K2.bootstrap_servers, timeout=timeout)
    with transaction.atomic():
        for spec in specs:
            Topic.objects.update_or_create(
                name=spec.name,
                defaults={"asset_class": spec.asset_class, "data_type": spec.data_type, "exchange": spec.exchange,
                          "partitions": actual.get(spec.name, spec.partitions)},
            )
    return outcome


def refresh_watermarks(*, topic_names: list[str] | None = None, timeout: float = 10.0) -> dict[str, dict[int, tuple[int, int]]]:
    """Read each Topic's per-partition low/high watermarks from the broker and store them.

    Note that the embedded broker (Tansu) reports as high watermark the base offset of the
    last record batch, so its figures can be slightly low."""
    rows = Topic.objects.all() if topic_names is None else Topic.objects.filter(name__in=topic_names)
    found: dict[str, dict[int, tuple[int, int]]] = {}
    for topic in rows:
        marks = topic_engine.watermarks(settings.K2.bootstrap_servers, topic.name, timeout=timeout)
        topic.watermarks = {str(p): {"low": low, "high": high} for p, (low, high) in marks.items()}
        topic.partitions = len(marks)
        topic.watermarks_refreshed_at = timezone.now()
        topic.save(update_fields=["watermarks", "partitions", "watermarks_refreshed_at"])
        found[topic.name] = marks
    return found


def register_schemas(*, asset_class: str = "equities", exchanges: tuple[str, ...] = ("asx",)) -> dict[str, int]:
    """Register every data type's schema under its `{topic}-value` subject (idempotent). Subject → id."""
    from catalog.selectors import get_registry

    registry = get_registry()
    ids = {}
    for exchange in exchanges:
        for data_type in DATA_TYPES:
            subject = subject_name(topic_name(asset_class=asset_class, data_type=data_type, exchange=exchange))
            ids[subject] = registry.register(subject, schema_text(data_type))
    return ids


def produce_file(*, csv_path: Path, data_type: str, exchange: str, asset_class: str = "equities",
                 dlq_path: Path | None = None, delivery_timeout_ms: int | None = None,
                 connect_timeout_s: float | None = None, on_progress: Callable[[int], None] | None = None,
                 workers: int = 1) -> ProduceResult:
    """Produce one CSV file to `market.{asset_class}.{data_type}.{exchange}` through this process's registry
    (schema registered once here; with workers > 1 the rows are split over processes by symbol)."""
    from catalog.engine.exchanges import UnknownExchange
    from catalog.selectors import exchange as registered_exchange
    from catalog.selectors import get_registry

    try:
        zone = registered_exchange(exchange).timezone
    except UnknownExchange as exc:
        raise ProduceError(str(exc)) from None
    return produce_csv_parallel(workers=workers, csv_path=csv_path, data_type=data_type, exchange=exchange, timezone=zone,
                       asset_class=asset_class,
                       dlq_path=dlq_path, registry=get_registry(), on_progress=on_progress,
                       settings=producer_settings(delivery_timeout_ms=delivery_timeout_ms, connect_timeout_s=connect_timeout_s))
