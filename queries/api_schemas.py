"""Response schemas and parameter descriptions of the JSON API, for the OpenAPI document at
/api/v1/docs. The endpoints return ready-made HttpResponses (JSON, CSV, Parquet or Arrow), so
these schemas document the JSON shapes; they do not change what is sent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ninja import Schema
from pydantic import Field


class ErrorOut(Schema):
    error: str = Field(description="machine-readable code: bad_request, unauthorized, forbidden, not_found, "
                                   "validation_error, rate_limited, stream_unavailable, timeout")
    message: str = Field(description="what was wrong, in words")
    field: str | None = Field(None, description="the parameter at fault, when there is one")
    details: list[dict[str, str]] | None = Field(None, description="422 only: each invalid parameter and its problem")


class FreshMeta(Schema):
    rows: int = Field(description="rows read from the stream beyond the snapshot (before the query's own filter)")
    messages: int = Field(description="messages read beyond the snapshot")
    dead_letters: int = Field(description="of those, messages left out: the consumer sends them to its dead-letter topic")
    complete: bool = Field(description="false when the read stopped at its time or size cap before the end of a partition "
                                       "(a read answered by the standing reader goes as far as the broker has delivered "
                                       "to it: a fetch behind the log end at most)")
    read_ms: float = Field(description="how long reading and decoding the tail took, in ms")
    upto: dict[str, dict[str, int]] = Field(description="per topic and partition, the next offset after what was read")


class TickMeta(Schema):
    table: str = Field(description="trades, quotes or ohlcv's source table")
    snapshot_id: int | None = Field(description="the Iceberg snapshot the rows were read from (pass as `as_of` to repeat)")
    rows: int
    next_cursor: str | None = Field(description="pass back as `cursor` for the next page; null on the last page. "
                                                "For csv/parquet/arrow it is the X-K2-Next-Cursor header")
    truncated: bool = Field(description="true when a row cap cut the result")
    fresh: FreshMeta | None = Field(None, description="fresh=true only: what was read from Kafka beyond the snapshot. "
                                                       "For csv/parquet/arrow it is the X-K2-Fresh header (JSON)")


class Trade(Schema):
    symbol: str
    exchange: str
    exchange_timestamp: dt.datetime = Field(description="UTC instant")
    price: str = Field(description="decimal string, never a float")
    volume: int
    sequence_number: int | None
    source_partition: int
    source_offset: int
    source_topic: str | None = Field(None, description="Kafka topic the row came from (null for rows written before K2 recorded it)")
    source_topic_id: str | None = Field(None, description="Kafka topic id: with partition and offset unique across "
                                                          "broker lifetimes (null where the broker has none)")


class TradesOut(Schema):
    data: list[dict[str, Any]] = Field(description="one object per trade or quote (see Trade for a trade's fields)")
    meta: TickMeta


class Bar(Schema):
    symbol: str
    bar_start: dt.datetime = Field(description="UTC instant the bar starts")
    open: str
    high: str
    low: str
    close: str
    volume: int
    vwap: str | None
    trade_count: int


class OhlcvOut(Schema):
    data: list[Bar]
    meta: TickMeta


class SnapshotOut(Schema):
    snapshot_id: int
    parent_id: int | None
    committed_at: dt.datetime
    operation: str | None
    summary: dict[str, Any]


class SnapshotMeta(Schema):
    table: str
    rows: int


class SnapshotsOut(Schema):
    data: list[SnapshotOut]
    meta: SnapshotMeta


class TableOut(Schema):
    table: str
    exists: bool
    identifier: str | None = None
    current_snapshot_id: int | None = None
    snapshots: int | None = None
    total_records: int | None = None
    total_data_files: int | None = None
    last_committed_at: dt.datetime | None = None


class TablesOut(Schema):
    data: list[TableOut]


class GapOut(Schema):
    id: int
    detected_at: dt.datetime
    symbol: str
    exchange: str
    asset_class: str
    data_type: str
    expected_sequence: int = Field(description="the first missing sequence number")
    received_sequence: int = Field(description="the number that arrived instead")
    gap_size: int
    missing_remaining: int
    topic: str
    partition: int
    offset: int
    state: str = Field(description="open, filled or acknowledged")
    filled_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    note: str


class PageMeta(Schema):
    rows: int
    offset: int
    limit: int


class GapsOut(Schema):
    data: list[GapOut]
    meta: PageMeta


class SavedQueryOut(Schema):
    slug: str
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="name → {type, default}")
    row_limit: int
    timeout_seconds: float
    updated_at: dt.datetime
    sql: str | None = Field(None, description="only on /queries/{slug}")


class SavedQueriesOut(Schema):
    data: list[SavedQueryOut]


class SavedQueryDetailOut(Schema):
    data: SavedQueryOut


class RunMeta(Schema):
    query: str
    rows: int
    truncated: bool
    snapshot_ids: dict[str, int | None] | None = Field(None, description="the snapshot each table was read at")


class RunOut(Schema):
    data: list[dict[str, Any]]
    meta: RunMeta


ERRORS = {status: ErrorOut for status in (400, 401, 403, 404, 422, 429, 503, 504)}

# Query-parameter descriptions shared by the tick endpoints.
DOC = {
    "symbol": "one or more symbols (repeat the parameter or separate by commas); omit for all",
    "date": "an exchange-local trading date (Australia/Sydney for ASX), YYYY-MM-DD",
    "end_date": "last trading date of a range starting at `date` (inclusive)",
    "start": "UTC instant the range starts (inclusive), ISO 8601 with an offset",
    "end": "UTC instant the range ends (exclusive)",
    "limit": "rows per page",
    "cursor": "the `next_cursor` of the previous page",
    "as_of": "time travel: a snapshot id or a UTC instant",
    "fresh": "true: also the rows on the Kafka topics that the consumer has not committed yet (the current snapshot "
             "plus the stream beyond the offsets it records; not with as_of). Up to the moment, not repeatable",
    "order": "by exchange time: asc or desc",
    "exchange": "the exchange whose trading calendar `date` refers to",
    "format": "json, csv, parquet or arrow (or send an Accept header)",
    "interval": "bar width: 1m, 5m, 15m, 1h (UTC-aligned) or 1d (exchange trading day)",
}
