"""Reads of the ingestion app (HackSoft style)."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from ingestion.models import SequenceGap


def gaps(*, exchange: str | None = None, data_type: str | None = None, symbol: str | None = None,
         state: str | None = None, detected_from: dt.datetime | None = None,
         detected_to: dt.datetime | None = None) -> QuerySet[SequenceGap]:
    """Sequence gaps (ADR #014), newest first, filtered: the one gap filter the admin and API share."""
    qs = SequenceGap.objects.all().order_by("-detected_at", "-id")
    if exchange:
        qs = qs.filter(exchange__iexact=exchange)
    if data_type:
        qs = qs.filter(data_type=data_type)
    if symbol:
        qs = qs.filter(symbol=symbol)
    if state:
        qs = qs.filter(state=state)
    if detected_from:
        qs = qs.filter(detected_at__gte=detected_from)
    if detected_to:
        qs = qs.filter(detected_at__lt=detected_to)
    return qs



GAP_CSV_FIELDS = ("id", "detected_at", "symbol", "exchange", "asset_class", "data_type", "expected_sequence",
                  "received_sequence", "gap_size", "missing_remaining", "topic", "partition", "offset", "state",
                  "filled_at", "acknowledged_at", "acknowledged_by", "note")


def gap_list(*, exchange: str | None = None, data_type: str | None = None, symbol: str | None = None,
             state: str | None = None, detected_from: dt.datetime | None = None, detected_to: dt.datetime | None = None,
             limit: int = 100, offset: int = 0) -> list[dict]:
    """Sequence gaps (ADR #014) newest first, filtered; rows as plain dicts."""
    qs = gaps(exchange=exchange, data_type=data_type, symbol=symbol, state=state, detected_from=detected_from,
              detected_to=detected_to)
    fields = ("id", "detected_at", "symbol", "exchange", "asset_class", "data_type", "expected_sequence",
              "received_sequence", "gap_size", "missing_remaining", "topic", "partition", "offset", "state",
              "filled_at", "acknowledged_at", "note")
    return list(qs.values(*fields)[offset:offset + limit])


def gaps_csv(queryset: QuerySet[SequenceGap]) -> str:
    """The gaps as CSV (a header, one row per gap, instants in UTC ISO 8601): the export of the
    admin's filtered list and of `/api/v1/gaps?format=csv`."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(GAP_CSV_FIELDS)
    for row in queryset.values_list(*GAP_CSV_FIELDS[:-2], "acknowledged_by__username", "note"):
        writer.writerow([value.astimezone(dt.UTC).isoformat() if isinstance(value, dt.datetime) else
                         ("" if value is None else value) for value in row])
    return out.getvalue()


def stream_tail():  # type: ignore[no-untyped-def]
    """The reader of fresh reads (`ingestion.engine.tail.KafkaTail`) for the query engine (wired by
    settings.K2_STREAM_TAIL, so the queries app does not import this one): this deployment's
    broker and registry; per data type its declared topics (any other topic the table holds rows
    of is read too, from the table's record) and the default consumer group's committed offsets;
    the gap store's column limits; K2_FRESH_READ_TIMEOUT_MS and K2_FRESH_READ_MAX_MESSAGES."""
    from django.conf import settings

    from catalog.engine.schemas import DATA_TYPES, consumer_group, topic_name
    from catalog.selectors import get_registry
    from ingestion.engine.tail import KafkaTail
    from ingestion.engine.topics import DECLARED_ASSET_CLASSES, DECLARED_EXCHANGES
    from ingestion.gaps import OrmGapSink

    k2 = settings.K2
    topics = {d: tuple(topic_name(asset_class=DECLARED_ASSET_CLASSES[0], data_type=d, exchange=e)
                       for e in DECLARED_EXCHANGES) for d in DATA_TYPES}
    return KafkaTail(bootstrap_servers=k2.bootstrap_servers, registry=_ThreadClosingRegistry(get_registry()), topics_of=topics,
                     group_of={d: consumer_group(d) for d in DATA_TYPES}, max_lengths=OrmGapSink.max_lengths,
                     timeout_s=k2.fresh_read_timeout_ms / 1000, max_messages=k2.fresh_read_max_messages)


class _ThreadClosingRegistry:
    """The registry for fresh reads: a schema looked up on a standing reader's own thread
    (`k2-fresh-*`) closes that thread's database connection after the lookup, so a long-lived
    thread does not hold a connection between its rare lookups (the registry keeps what it read)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def get_schema(self, schema_id: int) -> str:
        import threading

        try:
            return self.inner.get_schema(schema_id)
        finally:
            if threading.current_thread().name.startswith("k2-fresh-"):
                from django.db import connection

                connection.close()
