"""Appending Arrow batches to an Iceberg table, with retries that never write a batch twice.

One `append` is one Iceberg transaction (one snapshot). Transient failures (connection errors,
timeouts, SQLAlchemy's `OperationalError` from a dropped catalog connection, and
`CommitFailedException`: another writer committed first) are retried with exponential backoff
(100 ms first delay, ×2, capped at 10 s; tenacity) for a time budget (`RetryPolicy.budget_seconds`,
K2_CATALOG_RETRY_SECONDS, default 60 s), long enough to ride out a catalog Postgres restart or
failover; then `CatalogUnavailable` says which catalog to check. A full warehouse disk
(`ENOSPC`/`EDQUOT` while writing a data, manifest or metadata file, before anything is
committed) is retried the same way, since space can come back (orphan cleanup, an operator),
and then raises `WarehouseFull` (a `CatalogUnavailable`: the table's storage refused the commit)
naming the warehouse. Permanent errors, such as a missing table or a batch whose schema does not
match, fail at once. `call_catalog` gives the same budget to other catalog calls (opening the
catalog and loading a table when a consumer starts). A table created by an older K2 that lacks
a lineage column the batch carries (`source_topic`, `source_topic_id`) gains it by schema
evolution at the first append (no rewrite: older rows read NULL there).

A failed commit may still have happened (an ambiguous commit: Postgres committed, the reply
was lost). So before every retry the table is reloaded and the batch counts as committed when
the table already holds it: a snapshot carries this append's `k2.commit-id`, or the table's
recorded Kafka offsets (below) cover every topic-partition of the batch. When another writer
advanced one of the batch's partitions only part of the way, the append stops with
`OffsetConflict` instead of writing rows twice. pyiceberg's own commit retry, which re-applies
an append on top of whatever is there without such a check, is off on this path
(`fast_commit.append`).

Each consumer snapshot carries, in its summary, the Kafka position right after its batch for
every topic-partition it covers: `k2.kafka.offsets` = JSON {topic: {partition: next_offset}},
with `k2.kafka.topic-ids` (the Kafka topic ids) and `k2.kafka.group` (who wrote it). The record
is the table's, whatever group writes it: a consumer of any group resumes after what the table
holds (`recorded_offsets`), so a second group on the same table writes nothing twice. Snapshots
written before this format recorded per group (`k2.kafka.offsets.<group>`,
`k2.kafka.topic-ids.<group>`); they are read the same way (`snapshot_records`).

A real pyiceberg `Table` is appended to through `catalog.engine.fast_commit.append`: the same
commit as `Table.append`, without pyiceberg 0.12.0's deep copies of the whole table metadata
(19 per append), whose cost grew with the snapshot count (see that module). Anything else
with an `append` method (tests wrap the table to inject faults) is called as is.

Plain Python, no Django import.
"""

from __future__ import annotations

import errno
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from catalog.engine import fast_commit
from catalog.engine.iceberg import add_missing_columns
from k2core import metrics
from k2core.logging import get_logger

log = get_logger(__name__, component="storage")

OFFSETS_KEY = "k2.kafka.offsets"  # {topic: {partition: next offset}}, whatever group wrote it
TOPIC_IDS_KEY = "k2.kafka.topic-ids"  # {topic: Kafka topic id}
GROUP_KEY = "k2.kafka.group"  # the consumer group that wrote the snapshot (informative)
COMMIT_ID_KEY = "k2.commit-id"  # one per `append` call, to recognise an ambiguous commit
OFFSETS_PREFIX = "k2.kafka.offsets."  # before: one record per group (k2.kafka.offsets.<group>)
TOPIC_IDS_PREFIX = "k2.kafka.topic-ids."
# {topic: {partition: offset}}: a rewind (an operator's explicit rewrite of a range). Offsets recorded
# by earlier snapshots stop counting at this offset; the snapshot deleted the rows from it onwards.
REWOUND_KEY = "k2.kafka.rewound"

TopicPartition = tuple[str, int]


class CatalogUnavailable(RuntimeError):
    """The catalog did not accept a commit within the retry budget; the message says what to check."""


class WarehouseFull(CatalogUnavailable):
    """The warehouse's disk stayed full (or over quota) for the whole retry budget: nothing of the
    batch was committed. A `CatalogUnavailable`, so every caller that reports an unreachable
    catalog clearly (`manage.py consume`, the consumer task) reports this one as clearly."""


class OffsetConflict(RuntimeError):
    """Another writer recorded part of this batch's offsets in the table meanwhile: appending the
    batch would write rows twice, and skipping it would lose the rest."""


def _connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:  # a dropped catalog connection surfaces as SQLAlchemy's OperationalError
        from sqlalchemy.exc import InterfaceError, OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy ships with the sql catalog
        return False
    return isinstance(exc, OperationalError | InterfaceError)


def _disk_full(exc: BaseException) -> bool:
    """A write refused for want of space (pyarrow's file streams raise OSError with errno set)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, CommitFailedException) or _connection_error(exc) or _disk_full(exc)


@dataclass(frozen=True)
class RetryPolicy:
    """ADR #006, with a time budget: transient errors are retried until `budget_seconds` have
    passed (and at most `retries` times when that is set), waiting first_delay × factor^n,
    capped at max_delay, in between."""

    budget_seconds: float = 60.0
    first_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 10.0
    retries: int | None = None

    def retrying(self, before_sleep: Any) -> Retrying:
        stop = stop_after_delay(self.budget_seconds) if self.budget_seconds > 0 else stop_never
        if self.retries is not None:
            stop = stop | stop_after_attempt(self.retries + 1)
        return Retrying(stop=stop, wait=wait_exponential(multiplier=self.first_delay, exp_base=self.factor,
                                                         max=self.max_delay),
                        retry=retry_if_exception(_transient), before_sleep=before_sleep, reraise=True)


@dataclass(frozen=True)
class AppendResult:
    snapshot_id: int | None
    rows: int
    attempts: int
    duration: float
    already_committed: bool = False  # a failed attempt had in fact committed (or another writer wrote these rows)


T = TypeVar("T")


def call_catalog(call: Callable[[], T], *, what: str, catalog: str, policy: RetryPolicy) -> T:
    """`call()` with the writer's budget for connection errors (a catalog Postgres restarting or
    not up yet): retried with the same backoff, then `CatalogUnavailable` saying what could not be
    done (`what`, e.g. "open the catalog"), the catalog (`catalog`, as a user knows it) and what to
    check. Any other error is raised at once."""
    started = time.monotonic()
    attempts = 0

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("catalog_unreachable_retry", what=what, catalog=catalog, attempt=state.attempt_number,
                    elapsed_seconds=round(time.monotonic() - started, 3), budget_seconds=policy.budget_seconds,
                    error_type=type(exc).__name__, error=str(exc).splitlines()[0] if str(exc) else "",
                    delay_seconds=round(state.next_action.sleep if state.next_action else 0.0, 3))

    retrying = policy.retrying(before_sleep).copy(retry=retry_if_exception(_connection_error))
    try:
        for attempt in retrying:
            with attempt:
                attempts += 1
                return call()
    except Exception as exc:
        if not _connection_error(exc):
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CatalogUnavailable(
            f"the Iceberg catalog {catalog} could not be reached to {what} for {time.monotonic() - started:.0f} s "
            f"({attempts} attempts; last error {type(exc).__name__}: {first_line}): check that the catalog's Postgres "
            "is running and reachable (K2_ICEBERG_CATALOG_URI), or raise K2_CATALOG_RETRY_SECONDS to ride out "
            "longer outages") from exc
    raise AssertionError("unreachable")  # pragma: no cover - tenacity either returns or raises


def describe_uri(uri: str) -> str:
    """A catalog URI as a user knows it, without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URI SQLAlchemy cannot parse is shown as is
        return str(uri)


def describe_catalog(table: Any) -> str:
    """The table's catalog as a user knows it: its URI without a password, or its name."""
    return describe_catalog_of(getattr(table, "catalog", None))


def describe_catalog_of(catalog: Any) -> str:
    """A catalog as a user knows it: its URI without a password, or its name."""
    uri = getattr(catalog, "properties", {}).get("uri") if catalog is not None else None
    if uri:
        return describe_uri(str(uri))
    return str(getattr(catalog, "name", "the Iceberg catalog"))


class IcebergWriter:
    """Appends to one table. `table` is a pyiceberg Table (or anything with append/refresh/metadata)."""

    def __init__(self, table: Any, *, table_name: str, exchange: str = "", asset_class: str = "",
                 policy: RetryPolicy | None = None) -> None:
        self.table = table
        self.table_name = table_name
        self.exchange = exchange
        self.asset_class = asset_class
        self.policy = policy or RetryPolicy()

    def _retrying(self, operation: str, started: float) -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            metrics.ICEBERG_WRITE_RETRIES.labels(table=self.table_name, operation=operation,
                                                 error=type(exc).__name__).inc()
            log.warning("iceberg_write_retry", table=self.table_name, operation=operation,
                        attempt=state.attempt_number, elapsed_seconds=round(time.monotonic() - started, 3),
                        budget_seconds=self.policy.budget_seconds, error=str(exc).splitlines()[0] if str(exc) else "",
                        error_type=type(exc).__name__, delay_seconds=round(delay, 3))

        return self.policy.retrying(before_sleep)

    def _give_up(self, exc: BaseException, attempts: int, started: float, operation: str) -> BaseException:
        """The error to raise once the budget is spent: a connection failure becomes a
        `CatalogUnavailable` naming the catalog and what to check, a full disk `WarehouseFull`
        naming the table's location."""
        elapsed = time.monotonic() - started
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        if _disk_full(exc):
            location = getattr(getattr(self.table, "metadata", None), "location", None) or "the warehouse"
            return WarehouseFull(
                f"the warehouse disk holding {location} is full: table {self.table_name} could not be written for "
                f"{elapsed:.0f} s ({attempts} attempts; last error: {first_line}). Nothing of this batch was "
                "committed: free space there (K2_WAREHOUSE; expired snapshots' and orphan files go with "
                "`manage.py compact_tables --expire --remove-orphans`), or raise K2_CATALOG_RETRY_SECONDS to wait longer. Kafka offsets were "
                "not committed past what the table holds: a restart resumes where the table ends")
        if not _connection_error(exc):
            return exc
        return CatalogUnavailable(
            f"the Iceberg catalog {describe_catalog(self.table)} could not be reached to {operation} table "
            f"{self.table_name} for {elapsed:.0f} s ({attempts} attempts; last error {type(exc).__name__}: "
            f"{first_line}): check that the catalog's Postgres is running and reachable (K2_ICEBERG_CATALOG_URI), "
            "or raise K2_CATALOG_RETRY_SECONDS to ride out longer outages. Kafka offsets were not committed past "
            "what the table holds: a restart resumes where the table ends")

    def refresh(self) -> None:
        """Reload the table's metadata, riding out a catalog outage like `append`."""
        started = time.monotonic()
        attempts = 0
        try:
            for attempt in self._retrying("refresh", started):
                with attempt:
                    attempts += 1
                    self.table.refresh()
        except Exception as exc:
            raise self._give_up(exc, attempts, started, "reload") from exc

    def append(self, batch: pa.Table, *, properties: dict[str, str] | None = None) -> AppendResult:
        """Append `batch` in one Iceberg transaction; transient errors are retried within the
        budget, and never write the batch twice (see the module docstring)."""
        attempts = 0
        start = time.perf_counter()
        started = time.monotonic()
        commit_id = uuid.uuid4().hex
        props = {**(properties or {}), COMMIT_ID_KEY: commit_id}
        ends, ids = _own_offsets(props)
        base = self.table.metadata  # immutable: what the table held before the first attempt
        already = False
        found_id: int | None = None
        try:
            for attempt in self._retrying("append", started):
                with attempt:
                    attempts += 1
                    if attempts > 1:  # the last attempt failed; it may still have committed
                        self.table.refresh()
                        already, found_id = self._holds(base, commit_id, ends, ids)
                        if already:
                            break
                    if hasattr(self.table, "update_schema") and add_missing_columns(self.table, batch.schema.names):
                        log.info("iceberg_schema_evolved", table=self.table_name, columns=batch.schema.names)
                    log.debug("iceberg_write_attempt", table=self.table_name, attempt=attempts, rows=batch.num_rows)
                    metrics.ICEBERG_WRITE_ATTEMPTS.labels(table=self.table_name, operation="append").inc()
                    if isinstance(self.table, Table):
                        fast_commit.append(self.table, batch, snapshot_properties=props)
                    else:
                        self.table.append(batch, snapshot_properties=props)
        except Exception as exc:
            metrics.ICEBERG_WRITE_FAILURES.labels(table=self.table_name, operation="append",
                                                  error=type(exc).__name__).inc()
            log.error("iceberg_write_failed", table=self.table_name, attempts=attempts, error=str(exc),
                      error_type=type(exc).__name__, transient=_transient(exc))
            raise self._give_up(exc, attempts, started, "commit to") from exc
        duration = time.perf_counter() - start
        if already:
            log.warning("iceberg_commit_found_after_failure", table=self.table_name, attempts=attempts,
                        rows=batch.num_rows, commit_id=commit_id)
        metrics.ICEBERG_WRITE_DURATION.labels(exchange=self.exchange, asset_class=self.asset_class,
                                              table=self.table_name, operation="append").observe(duration)
        # the id, not current_snapshot(): that scans every snapshot from the oldest
        snapshot_id = found_id if already and found_id is not None else self.table.metadata.current_snapshot_id
        return AppendResult(snapshot_id=snapshot_id, rows=batch.num_rows,
                            attempts=attempts, duration=duration, already_committed=already)

    def _holds(self, base: Any, commit_id: str, ends: dict[TopicPartition, int],
               ids: dict[str, str]) -> tuple[bool, int | None]:
        """Whether the (reloaded) table already holds this batch, and the snapshot that wrote it
        when known: a snapshot newer than `base` carries its commit id, or the recorded offsets
        reach the batch's end on every topic-partition (another writer's rows). Raises
        `OffsetConflict` when another writer recorded only part of it."""
        known = {s.snapshot_id for s in base.snapshots}
        for snapshot in reversed(self.table.metadata.snapshots):
            if snapshot.snapshot_id in known:
                continue
            summary = snapshot.summary
            if summary is not None and summary.additional_properties.get(COMMIT_ID_KEY) == commit_id:
                return True, snapshot.snapshot_id
        if not ends:
            return False, None
        now = _max_offsets(self.table.metadata.snapshots, ids, set(ends))
        if all(now.get(key, -1) >= end for key, end in ends.items()):
            return True, None
        before = _max_offsets(base.snapshots, ids, set(ends))
        moved = {key: now[key] for key in ends if now.get(key, -1) > before.get(key, -1)}
        if moved:
            where = ", ".join(f"{t}[{p}] now at {o} (this batch ends at {ends[(t, p)]})" for (t, p), o in moved.items())
            raise OffsetConflict(
                f"another writer recorded offsets in table {self.table_name} while this batch was being committed: "
                f"{where}. Two consumers are writing the same partitions into one table; stop one of them. This "
                "batch was not written; a restart resumes after what the table holds")
        return False, None


def offsets_properties(group: str, offsets: dict[TopicPartition, int],
                       topic_ids: dict[str, str] | None = None) -> dict[str, str]:
    """Snapshot summary properties recording the next offset per topic-partition (the table's
    record, whatever group writes it), the group, and the Kafka topic ids, so offsets of a deleted
    and re-created topic are never mistaken for the new one's (the embedded broker forgets its
    topics when it restarts)."""
    by_topic: dict[str, dict[str, int]] = {}
    for (topic, partition), next_offset in offsets.items():
        by_topic.setdefault(topic, {})[str(partition)] = next_offset
    props = {OFFSETS_KEY: json.dumps(by_topic, separators=(",", ":"), sort_keys=True), GROUP_KEY: group}
    ids = {t: i for t, i in (topic_ids or {}).items() if t in by_topic and i}
    if ids:
        props[TOPIC_IDS_KEY] = json.dumps(ids, separators=(",", ":"), sort_keys=True)
    return props


def parse_offsets(raw: str) -> dict[TopicPartition, int]:
    """The {(topic, partition): next offset} that an offsets property holds."""
    return {(topic, int(partition)): int(offset)
            for topic, parts in json.loads(raw).items() for partition, offset in parts.items()}


@dataclass(frozen=True)
class OffsetRecord:
    """The Kafka offsets one snapshot records: `group` is who wrote them (None when unknown)."""

    group: str | None
    offsets: dict[TopicPartition, int]
    topic_ids: dict[str, str]


def snapshot_records(properties: dict[str, str]) -> list[OffsetRecord]:
    """The offset records of one snapshot summary, in the table-wide format and the older
    per-group one. Raises ValueError on a record that cannot be parsed."""
    records: list[OffsetRecord] = []
    raw = properties.get(OFFSETS_KEY)
    if raw:
        records.append(OffsetRecord(properties.get(GROUP_KEY), parse_offsets(raw),
                                    json.loads(properties.get(TOPIC_IDS_KEY) or "{}")))
    for key, value in properties.items():
        if key.startswith(OFFSETS_PREFIX) and value:
            group = key[len(OFFSETS_PREFIX):]
            records.append(OffsetRecord(group, parse_offsets(value),
                                        json.loads(properties.get(TOPIC_IDS_PREFIX + group) or "{}")))
    return records


def _own_offsets(props: dict[str, str]) -> tuple[dict[TopicPartition, int], dict[str, str]]:
    ends: dict[TopicPartition, int] = {}
    ids: dict[str, str] = {}
    for record in snapshot_records(props):
        ends.update(record.offsets)
        ids.update(record.topic_ids)
    return ends, ids


def _max_offsets(snapshots: Iterable[Any], topic_ids: dict[str, str] | None, keys: set[TopicPartition] | None = None,
                 group: str | None = None) -> dict[TopicPartition, int]:
    found: dict[TopicPartition, int] = {}
    for snapshot in snapshots:  # in commit order
        summary = snapshot.summary
        extra = summary.additional_properties if summary is not None else {}
        if REWOUND_KEY in extra:
            for key, offset in parse_offsets(extra[REWOUND_KEY]).items():
                if (keys is None or key in keys) and found.get(key, -1) > offset:
                    found[key] = offset
        if OFFSETS_KEY not in extra and not any(k.startswith(OFFSETS_PREFIX) for k in extra):
            continue
        for record in snapshot_records(extra):
            if group is not None and record.group != group:
                continue
            for (topic, partition), next_offset in record.offsets.items():
                if keys is not None and (topic, partition) not in keys:
                    continue
                current = (topic_ids or {}).get(topic)
                recorded = record.topic_ids.get(topic)
                if current and recorded and recorded != current:
                    continue  # written from a topic of the same name that has since been deleted
                if next_offset > found.get((topic, partition), -1):
                    found[(topic, partition)] = next_offset
    return found


def recorded_offsets(table: Any, group: str | None = None,
                     topic_ids: dict[str, str] | None = None) -> dict[TopicPartition, int]:
    """The highest next-offset per topic-partition recorded in any snapshot still in the table's
    history, whatever group wrote it (only `group`'s records when one is given; compaction
    snapshots carry none and are skipped), counted from the last rewind of that partition
    (`rewind_rows`). With `topic_ids` (the topics' current Kafka ids), offsets recorded for
    another incarnation of a topic are ignored."""
    return _max_offsets(table.metadata.snapshots, topic_ids, group=group)


def rewind_rows(table: Any, starts: dict[TopicPartition, int]) -> int | None:
    """Delete the rows that came from each topic-partition at or after its start offset, in one
    Iceberg commit that also records the rewind (`k2.kafka.rewound`), so the table's record of
    each partition goes back to its start and a consumer resuming there writes those rows again,
    once. Returns the snapshot id of the commit (None when there was nothing to rewind).

    Rows are matched on `source_partition` and `source_offset`, and on `source_topic` where the
    table has that column (rows written before it read NULL there, and are matched when the
    table records a single topic). Raises ValueError when the rows of one topic cannot be told
    from another's (several topics in the table, no topic column)."""
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, IsNull, Or

    if not starts:
        return None
    names = {f.name for f in table.schema().fields}
    topics = {topic for record in (snapshot_records(s.summary.additional_properties)
                                   for s in table.metadata.snapshots if s.summary is not None)
              for r in record for topic, _ in r.offsets} | {topic for topic, _ in starts}
    clauses = []
    for (topic, partition), start in sorted(starts.items()):
        clause = And(EqualTo("source_partition", partition), GreaterThanOrEqual("source_offset", start))
        if "source_topic" in names:
            same_topic = EqualTo("source_topic", topic)
            clause = And(clause, Or(same_topic, IsNull("source_topic")) if len(topics) == 1 else same_topic)
        elif len(topics) > 1:
            raise ValueError(f"the table holds rows of several topics ({', '.join(sorted(topics))}) and has no "
                             "source_topic column to tell them apart: a range cannot be rewritten")
        clauses.append(clause)
    delete_filter = clauses[0]
    for clause in clauses[1:]:
        delete_filter = Or(delete_filter, clause)
    by_topic: dict[str, dict[str, int]] = {}
    for (topic, partition), start in starts.items():
        by_topic.setdefault(topic, {})[str(partition)] = start
    marker = {REWOUND_KEY: json.dumps(by_topic, separators=(",", ":"), sort_keys=True)}
    before = table.metadata.current_snapshot_id
    table.delete(delete_filter=delete_filter, snapshot_properties=marker)
    table.refresh()
    if table.metadata.current_snapshot_id == before:  # nothing matched: record the rewind on its own
        import pyarrow as pa

        table.append(pa.Table.from_pylist([], schema=table.schema().as_arrow()), snapshot_properties=marker)
        table.refresh()
    log.info("offsets_rewound", table=".".join(table.name()), starts={f"{t}[{p}]": o for (t, p), o in starts.items()},
             snapshot_id=table.metadata.current_snapshot_id)
    return table.metadata.current_snapshot_id
