"""Appending Arrow batches to an Iceberg table, with ADR #006 retries and Kafka offsets.

One `append` is one Iceberg transaction (one snapshot). Transient failures are retried with
exponential backoff (3 retries, 100 ms first delay, ×2, 10 s cap; tenacity): connection
errors, timeouts and `CommitFailedException` (another writer committed first: the table is
reloaded and the append tried again on top of the new snapshot). Permanent errors, such as
a missing table or a batch whose schema does not match, fail at once.

Each consumer snapshot carries, in its summary, the Kafka position right after its batch
for every topic-partition it covers (`k2.kafka.offsets.<group>` = JSON
{topic: {partition: next_offset}}). ADR #003 assumed Iceberg appends are idempotent; they
are not, so this is how a restarted consumer knows what is already in the table and never
writes a batch twice. `recorded_offsets` reads them back.

A real pyiceberg `Table` is appended to through `catalog.engine.fast_commit.append`: the same
commit as `Table.append`, without pyiceberg 0.12.0's deep copies of the whole table metadata
(19 per append), whose cost grew with the snapshot count (see that module). Anything else
with an `append` method (tests wrap the table to inject faults) is called as is.

Plain Python, no Django import.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from catalog.engine import fast_commit
from k2portal import metrics
from k2portal.logging import get_logger

log = get_logger(__name__, component="storage")

OFFSETS_PREFIX = "k2.kafka.offsets."
TOPIC_IDS_PREFIX = "k2.kafka.topic-ids."


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, CommitFailedException | ConnectionError | TimeoutError):
        return True
    try:  # a dropped catalog connection surfaces as SQLAlchemy's OperationalError
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy ships with the sql catalog
        return False
    return isinstance(exc, OperationalError)


@dataclass(frozen=True)
class RetryPolicy:
    """ADR #006."""

    retries: int = 3
    first_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 10.0


@dataclass(frozen=True)
class AppendResult:
    snapshot_id: int | None
    rows: int
    attempts: int
    duration: float


class IcebergWriter:
    """Appends to one table. `table` is a pyiceberg Table (or anything with append/refresh)."""

    def __init__(self, table: Any, *, table_name: str, exchange: str = "", asset_class: str = "",
                 policy: RetryPolicy | None = None) -> None:
        self.table = table
        self.table_name = table_name
        self.exchange = exchange
        self.asset_class = asset_class
        self.policy = policy or RetryPolicy()

    def append(self, batch: pa.Table, *, properties: dict[str, str] | None = None) -> AppendResult:
        """Append `batch` in one Iceberg transaction; retries transient errors (ADR #006)."""
        attempts = 0
        start = time.perf_counter()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            metrics.ICEBERG_WRITE_RETRIES.labels(table=self.table_name, operation="append",
                                                 error=type(exc).__name__).inc()
            log.warning("iceberg_write_retry", table=self.table_name, attempt=state.attempt_number,
                        max_attempts=self.policy.retries + 1, error=str(exc),
                        error_type=type(exc).__name__, delay_seconds=round(delay, 3))
            if isinstance(exc, CommitFailedException):
                self.table.refresh()  # another writer won: retry on top of its snapshot

        retrying = Retrying(
            stop=stop_after_attempt(self.policy.retries + 1),
            wait=wait_exponential(multiplier=self.policy.first_delay, exp_base=self.policy.factor,
                                  max=self.policy.max_delay),
            retry=retry_if_exception(_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    log.debug("iceberg_write_attempt", table=self.table_name, attempt=attempts, rows=batch.num_rows)
                    metrics.ICEBERG_WRITE_ATTEMPTS.labels(table=self.table_name, operation="append").inc()
                    if isinstance(self.table, Table):
                        fast_commit.append(self.table, batch, snapshot_properties=properties or {})
                    else:
                        self.table.append(batch, snapshot_properties=properties or {})
        except Exception as exc:
            metrics.ICEBERG_WRITE_FAILURES.labels(table=self.table_name, operation="append",
                                                  error=type(exc).__name__).inc()
            log.error("iceberg_write_failed", table=self.table_name, attempts=attempts, error=str(exc),
                      error_type=type(exc).__name__, transient=_transient(exc))
            raise
        duration = time.perf_counter() - start
        metrics.ICEBERG_WRITE_DURATION.labels(exchange=self.exchange, asset_class=self.asset_class,
                                              table=self.table_name, operation="append").observe(duration)
        # the id, not current_snapshot(): that scans every snapshot from the oldest
        return AppendResult(snapshot_id=self.table.metadata.current_snapshot_id, rows=batch.num_rows,
                            attempts=attempts, duration=duration)


def offsets_properties(group: str, offsets: dict[tuple[str, int], int],
                       topic_ids: dict[str, str] | None = None) -> dict[str, str]:
    """Snapshot summary properties recording the next offset per topic-partition for a group, and
    the Kafka topic ids, so offsets of a deleted and re-created topic are never mistaken for
    the new one's (the embedded broker forgets its topics when it restarts)."""
    by_topic: dict[str, dict[str, int]] = {}
    for (topic, partition), next_offset in offsets.items():
        by_topic.setdefault(topic, {})[str(partition)] = next_offset
    props = {OFFSETS_PREFIX + group: json.dumps(by_topic, separators=(",", ":"), sort_keys=True)}
    ids = {t: i for t, i in (topic_ids or {}).items() if t in by_topic and i}
    if ids:
        props[TOPIC_IDS_PREFIX + group] = json.dumps(ids, separators=(",", ":"), sort_keys=True)
    return props


def parse_offsets(raw: str) -> dict[tuple[str, int], int]:
    """The {(topic, partition): next offset} that a snapshot's `k2.kafka.offsets.<group>` property holds."""
    return {(topic, int(partition)): int(offset)
            for topic, parts in json.loads(raw).items() for partition, offset in parts.items()}


def recorded_offsets(table: Any, group: str, topic_ids: dict[str, str] | None = None) -> dict[tuple[str, int], int]:
    """The highest next-offset per topic-partition that `group` recorded in any snapshot still in
    the table's history (compaction snapshots carry none and are skipped). With `topic_ids`
    (the topics' current Kafka ids), offsets recorded for another incarnation of a topic are ignored."""
    key = OFFSETS_PREFIX + group
    ids_key = TOPIC_IDS_PREFIX + group
    found: dict[tuple[str, int], int] = {}
    for snapshot in table.metadata.snapshots:
        summary = snapshot.summary
        extra = summary.additional_properties if summary is not None else {}
        raw = extra.get(key)
        if not raw:
            continue
        recorded_ids = json.loads(extra.get(ids_key) or "{}")
        for (topic, partition), next_offset in parse_offsets(raw).items():
            current = (topic_ids or {}).get(topic)
            if current and recorded_ids.get(topic) and recorded_ids[topic] != current:
                continue  # written from a topic of the same name that has since been deleted
            if next_offset > found.get((topic, partition), -1):
                found[(topic, partition)] = next_offset
    return found
