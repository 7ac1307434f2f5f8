"""Step 3: sequence gaps and late events, reported to a `GapSink` before the Iceberg commit, so a
crash can never hide a gap (a replay re-reports it, and the sink's unique key keeps one row)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from catalog.engine.datatypes import spec
from ingestion.engine.consumer.stats import ConsumerStats, metric_labels
from ingestion.engine.decode import INDEX_COLUMN, Poison
from ingestion.engine.sequence import SequenceTracker
from k2core import metrics
from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")


@dataclass(frozen=True)
class GapRecord:
    """A gap as the sink stores it: the tracker's finding (`sequence.GapFound`: which stream, which
    row of the batch) placed in Kafka (topic, partition, offset of the message that revealed it)
    and in time. The tracker knows rows, not Kafka; this is the only form that leaves the engine."""

    detected_at: datetime
    exchange: str
    asset_class: str
    data_type: str
    symbol: str
    expected_sequence: int
    received_sequence: int
    topic: str
    partition: int
    offset: int

    @property
    def gap_size(self) -> int:
        return self.received_sequence - self.expected_sequence


@dataclass(frozen=True)
class LateRecord:
    exchange: str
    data_type: str
    symbol: str
    sequence: int
    seen_at: datetime


class GapSink(Protocol):
    # Optional: the longest value (characters) the sink stores per column, e.g. {"symbol": 32}.
    # A record whose value is longer is poison (dead-letter topic) before sequence tracking.
    max_lengths: dict[str, int]

    def record_gaps(self, gaps: list[GapRecord]) -> list[tuple[GapRecord, str]] | None:
        """Persist gaps; the same gap reported twice (a replay) must stay one record. Returns the
        gaps that could not be stored because of a value in them, each with the reason (their
        records go to the dead-letter topic instead of the table; a replay can never get past
        them otherwise). Outages raise."""

    def record_late(self, events: list[LateRecord]) -> int:
        """Apply late events to open gaps that contain them; return how many gaps became filled."""


class MemoryGapSink:
    """In-process sink (benchmarks, tests, and an engine run where no database is wanted: pass it
    explicitly, gaps are then kept in this process only)."""

    def __init__(self) -> None:
        self.gaps: dict[tuple[str, str, str, int], GapRecord] = {}
        self.late: list[LateRecord] = []

    max_lengths: dict[str, int] = {}

    def record_gaps(self, gaps: list[GapRecord]) -> list[tuple[GapRecord, str]]:
        for gap in gaps:
            self.gaps.setdefault((gap.exchange, gap.data_type, gap.symbol, gap.expected_sequence), gap)
        return []

    def record_late(self, events: list[LateRecord]) -> int:
        self.late.extend(events)
        return 0


class GapReporter:
    """Checks a decoded batch's sequence numbers (`SequenceTracker`) and reports to the sink."""

    def __init__(self, *, sink: GapSink, tracker: SequenceTracker, data_type: str, stats: ConsumerStats) -> None:
        self.sink = sink
        self.tracker = tracker
        self.data_type = data_type
        self.stats = stats

    def unstorable(self, table: pa.Table) -> tuple[pa.Table, list[Poison]]:
        """Rows with a value longer than the gap sink stores (e.g. a 40-character symbol): poison,
        taken out before sequence tracking, so a gap in such a stream can never make the gap
        insert fail before the Iceberg commit (a batch replayed and failed forever)."""
        return too_long(table, self.data_type, getattr(self.sink, "max_lengths", None) or {})


    def track(self, table: pa.Table, fresh: list[Any], topics: list[str]) -> list[Poison]:
        """Sequence checks; gaps and late events to the sink. Returns the records whose gap the sink
        could not store (a value in them): the caller sends them to the DLQ instead of the table."""
        data_type = self.data_type
        if not spec(data_type).sequenced or table.num_rows == 0:
            return []
        report = self.tracker.check(table.select(["exchange", "symbol", "sequence_number", INDEX_COLUMN]),
                                    row_column=INDEX_COLUMN)
        now = datetime.now(UTC)
        gaps: list[GapRecord] = []
        rows: dict[int, int] = {}  # id(record) → row
        for gap in report.gaps:
            msg = fresh[gap.row]
            lbl = metric_labels(topics[gap.row], data_type)
            record = GapRecord(detected_at=now, exchange=gap.exchange, asset_class=lbl["asset_class"],
                               data_type=data_type, symbol=gap.symbol, expected_sequence=gap.expected,
                               received_sequence=gap.received, topic=msg.topic(), partition=msg.partition(),
                               offset=msg.offset())
            gaps.append(record)
            rows[id(record)] = gap.row
        rejected: list[Poison] = []
        if gaps:
            refused = {id(g): reason for g, reason in (self.sink.record_gaps(gaps) or [])}
            for record in gaps:
                row = rows[id(record)]
                if id(record) in refused:
                    rejected.append(Poison(row, "gap_unstorable",
                                           f"sequence gap {record.expected_sequence}..{record.received_sequence - 1} "
                                           f"of {record.symbol!r} cannot be stored: {refused[id(record)]}"))
                    continue
                log.warning("sequence_gap_detected", symbol=record.symbol, exchange=record.exchange,
                            data_type=data_type, expected=record.expected_sequence,
                            received=record.received_sequence, gap=record.gap_size, topic=record.topic,
                            partition=record.partition, offset=record.offset)
                lbl = metric_labels(topics[row], data_type)
                metrics.SEQUENCE_GAPS.labels(**lbl).inc()
                metrics.SEQUENCE_GAP_MESSAGES.labels(**lbl).inc(record.gap_size)
                self.stats.gaps += 1
        if report.late:
            for event in report.late:
                metrics.SEQUENCE_OUT_OF_ORDER.labels(**metric_labels(topics[event.row], data_type)).inc()
            filled = self.sink.record_late([LateRecord(exchange=e.exchange, data_type=data_type,
                                                       symbol=e.symbol, sequence=e.sequence, seen_at=now)
                                            for e in report.late])
            self.stats.out_of_order += len(report.late)
            self.stats.gaps_filled += filled
            if filled:
                metrics.SEQUENCE_GAPS_FILLED.labels(**metric_labels(topics[report.late[0].row], data_type)).inc(filled)
        if report.evicted:
            metrics.SEQUENCE_EVICTIONS.labels(**metric_labels(topics[0], data_type)).inc(report.evicted)
            self.stats.evictions += report.evicted
        metrics.SEQUENCE_TRACKED.labels(**metric_labels(topics[0], data_type)).set(len(self.tracker))
        return rejected


def too_long(table: pa.Table, data_type: str, limits: Mapping[str, int]) -> tuple[pa.Table, list[Poison]]:
    """`table` without the rows of a sequenced data type whose value in a column of `limits` is
    longer than its limit, and those rows as poison (`value_too_long`, by `INDEX_COLUMN`)."""
    if not spec(data_type).sequenced or table.num_rows == 0 or not limits:
        return table, []
    masks = {col: pc.greater(pc.utf8_length(table[col]), limit)
             for col, limit in limits.items() if col in table.column_names}
    masks = {col: mask for col, mask in masks.items() if pc.any(mask).as_py()}
    if not masks:
        return table, []
    poison: list[Poison] = []
    bad = None
    for col, mask in masks.items():
        limit = limits[col]
        rows = table.filter(mask)
        for index, value in zip(rows[INDEX_COLUMN].to_pylist(), rows[col].to_pylist(), strict=True):
            poison.append(Poison(index, "value_too_long",
                                 f"{col} is {len(value)} characters long ({value[:40]!r}…); at most {limit} can "
                                 "be stored (sequence-gap store)"))
        bad = mask if bad is None else pc.or_(bad, mask)
    return table.filter(pc.invert(bad)), poison
