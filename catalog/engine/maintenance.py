"""Table maintenance: compaction of day partitions and snapshot expiry.

A consumer that commits every 1,000–5,000 rows leaves thousands of small files per day;
DuckDB then opens each one (measured: ~170 ms for a symbol-day over 2,000 files against
~26 ms over one symbol-sorted file). `compact_partition` rewrites one day partition's
small files (under `small_file_bytes`, 32 MB: what an earlier compaction wrote is left as it
is, so compacting today's partition every 15 minutes rewrites what arrived since, not the whole
day again) into few files sorted by symbol, exchange_timestamp, sequence_number (the table's
sort order; row groups small enough that a one-symbol query skips the others) in ONE
Iceberg overwrite commit that deletes exactly the files it read and adds the new ones.
`compact_days` does many days in that one commit (rewriting a day at a time, so memory
holds one day): the table then has one manifest for all compacted files, and DuckDB
opens one manifest instead of one per day.

Safe while consumers append: the commit is optimistic. When a consumer commits first,
pyiceberg's commit loop refreshes the table and rebuilds the snapshot on the new parent
(the consumer's new files are kept: they are not among the deleted files). The only
conflict that matters for a rewrite is one of *our* input files disappearing (another
compaction got there first); that is checked, and then the whole compaction is planned
again from the new table state, so no row is lost or doubled. This is Iceberg's
RewriteFiles semantics (snapshot isolation for rewrites): pyiceberg's default
"serializable" check would refuse any concurrent append anywhere in the table.

`expire_snapshots` drops snapshots older than the retention window (time travel reaches
back that far), always keeping the newest `retain_last`, and thins the older part of the
window: a consumer commits a snapshot per batch (thousands an hour), and every commit writes
the table's metadata with every snapshot in it, so keeping them all for days makes each
commit slower by the hour. Snapshots younger than `full_detail` are all kept; older ones
(within the retention) keep the newest of each `thin_interval` (UTC-aligned): time travel to
an instant in that range answers with the table as of at most one interval earlier.
Expiry goes through `fast_commit.expire_snapshots` (pyiceberg's own is O(N²) in snapshots).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import structlog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from catalog.engine import fast_commit, storage
from catalog.engine.writer import OFFSETS_KEY, OFFSETS_PREFIX, snapshot_records

log = structlog.get_logger("catalog.maintenance").bind(component="maintenance")

EPOCH = dt.date(1970, 1, 1)
DEFAULT_ROW_GROUP_ROWS = 65_536
# Only files below this size are rewritten: what a compaction wrote earlier stays as it is, so a
# run over today's partition costs what arrived since the last run, not the whole day so far.
DEFAULT_SMALL_FILE_BYTES = 32 * 1024 * 1024


@dataclass
class CompactionResult:
    table: str
    day: dt.date
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    attempts: int = 0
    snapshot_id: int | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class SnapshotPolicy:
    """Which snapshots a table keeps (see `expire_snapshots`), and how often a consumer applies it
    itself (`every_s`): a consumer committing every 50 ms adds 72,000 snapshots an hour, and each
    commit writes all that are kept, so waiting for the maintenance task (every 15 minutes)
    would let each commit's cost grow between its runs."""

    retention: dt.timedelta
    full_detail: dt.timedelta
    thin_interval: dt.timedelta
    every_s: float = 60.0
    retain_last: int = 5

    def __post_init__(self) -> None:
        if self.every_s <= 0 or self.retain_last < 1:
            raise ValueError("every_s must be positive and retain_last at least 1")

    def apply(self, table: Table, now: dt.datetime | None = None) -> ExpiryResult:
        return expire_snapshots(table, retention=self.retention, retain_last=self.retain_last, now=now,
                                full_detail=self.full_detail, thin_interval=self.thin_interval)


@dataclass
class ExpiryResult:
    table: str
    expired: list[int] = field(default_factory=list)
    kept: int = 0


def partition_day(data_file) -> dt.date | None:  # type: ignore[no-untyped-def]
    """The UTC day of a data file's `exchange_date` partition (days since epoch)."""
    value = data_file.partition[0] if len(data_file.partition) else None
    if value is None:
        return None
    return value if isinstance(value, dt.date) else EPOCH + dt.timedelta(days=int(value))


def sort_columns(table: Table) -> list[str]:
    """The columns of the table's recorded sort order (the data type's spec wrote it)."""
    schema = table.schema()
    return [schema.find_column_name(f.source_id) for f in table.sort_order().fields]  # type: ignore[misc]


def files_per_day(table: Table, *, smaller_than: int | None = None) -> dict[dt.date, int]:
    """Data files per UTC day partition (only those under `smaller_than` bytes, when given)."""
    counts: dict[dt.date, int] = {}
    for task in table.scan().plan_files():
        day = partition_day(task.file)
        if day is not None and (smaller_than is None or task.file.file_size_in_bytes < smaller_than):
            counts[day] = counts.get(day, 0) + 1
    return counts


def _day_filter(day: dt.date):  # type: ignore[no-untyped-def]
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    return And(GreaterThanOrEqual("exchange_timestamp", start.isoformat()),
               LessThan("exchange_timestamp", end.isoformat()))


def _rewrite_validation(producer) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    """Snapshot-isolation check for a rewrite: the files we replace must still be live."""
    from pyiceberg.table.update.validate import _validate_data_files_exist

    def validate() -> None:
        window = producer._commit_window
        if window is None or window.is_empty() or window.head is None or not producer._deleted_data_files:
            return
        _validate_data_files_exist(producer._transaction._table, window.head, producer._deleted_data_files, window.base)

    return validate


def _live_manifests(producer) -> Callable[[], list]:  # type: ignore[no-untyped-def]
    """The parent's manifests minus those holding only DELETED entries of earlier commits.

    pyiceberg's overwrite carries such manifests forward forever (its appends drop them);
    every reader would open them for nothing: after 24 day compactions DuckDB read 48
    manifests instead of 24. Java Iceberg drops them the same way."""
    inherited = producer._existing_manifests

    def existing() -> list:
        return [m for m in inherited()
                if m.has_added_files() or m.has_existing_files() or m.added_snapshot_id == producer._snapshot_id]

    return existing


def _compact_once(load_table: Callable[[], Table], days: list[dt.date], *, min_files: int, row_group_rows: int,
                  small_file_bytes: int, results: dict[dt.date, CompactionResult], attempt: int,
                  before_commit: Callable[[int], None] | None) -> None:
    """One attempt: plan every day on the same snapshot, rewrite each day's small files one day at
    a time (memory holds one day's small files), then commit all replacements together."""
    table = load_table()
    snapshot = table.current_snapshot()
    for result in results.values():
        result.attempts = attempt
    if snapshot is None:
        for result in results.values():
            result.skipped = "table is empty"
        return
    metadata = table.metadata.model_copy(update={"properties": {
        **table.metadata.properties, "write.parquet.row-group-limit": str(row_group_rows)}})
    old_files: list = []
    new_files: list = []
    try:
        for day in days:
            result = results[day]
            result.skipped, result.files_after, result.rows = None, 0, 0
            scan = table.scan(row_filter=_day_filter(day), snapshot_id=snapshot.snapshot_id)
            in_day = [t for t in scan.plan_files() if partition_day(t.file) == day]
            if any(t.delete_files for t in in_day):
                result.skipped = "partition has delete files; compaction of merge-on-read tables is not supported"
                continue
            tasks = [t for t in in_day if t.file.file_size_in_bytes < small_file_bytes]
            result.files_before = len(tasks)
            if len(tasks) < min_files:
                result.skipped = f"{len(tasks)} small file(s) (< {small_file_bytes} bytes), fewer than {min_files}"
                continue
            data: pa.Table = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
            expected_rows = sum(t.file.record_count for t in tasks)
            if data.num_rows != expected_rows:  # every row of exactly these files
                raise RuntimeError(f"read {data.num_rows} rows from {day}'s small files but they hold "
                                   f"{expected_rows}; compaction stopped")
            data = data.sort_by([(c, "ascending") for c in sort_columns(table)])
            written = list(_dataframe_to_data_files(table_metadata=metadata, df=data, io=table.io, write_uuid=uuid.uuid4()))
            new_files.extend(written)
            old_files.extend(t.file for t in tasks)
            result.files_after, result.rows = len(written), data.num_rows
            del data
        if not old_files:
            return
        if before_commit is not None:
            before_commit(attempt)
        compacted = ",".join(d.isoformat() for d in days if not results[d].skipped)
        with table.transaction() as tx:
            with tx.update_snapshot(snapshot_properties={"k2.operation": "compaction",
                                                         "k2.compacted-days": compacted}).overwrite() as producer:
                producer._validate_concurrency = _rewrite_validation(producer)  # noqa: SLF001 - see module docstring
                producer._existing_manifests = _live_manifests(producer)  # noqa: SLF001
                for data_file in old_files:
                    producer.delete_data_file(data_file)
                for data_file in new_files:
                    producer.append_data_file(data_file)
    except BaseException:
        for data_file in new_files:  # not committed, so never referenced by a snapshot: safe to remove
            try:
                table.io.delete(data_file.file_path)
            except OSError:
                pass
        raise
    committed = load_table().current_snapshot()
    for result in results.values():
        if not result.skipped:
            result.snapshot_id = committed.snapshot_id if committed else None


def compact_days(load_table: Callable[[], Table], days: list[dt.date], *, min_files: int = 2,
                 row_group_rows: int = DEFAULT_ROW_GROUP_ROWS, max_attempts: int = 5,
                 small_file_bytes: int = DEFAULT_SMALL_FILE_BYTES,
                 before_commit: Callable[[int], None] | None = None) -> list[CompactionResult]:
    """Rewrite UTC day partitions into symbol-sorted files, all in ONE overwrite commit (one
    new manifest for the lot, so readers open few manifests).

    `load_table` returns a fresh Table (each attempt re-plans from the current state);
    `before_commit(attempt)` runs after the new files are written and before the commit
    (tests use it to commit concurrently)."""
    days = sorted(set(days))
    results = {day: CompactionResult(table="", day=day) for day in days}
    counter = {"attempt": 0}
    for attempt in Retrying(retry=retry_if_exception_type((CommitFailedException, ValidationException)),
                            stop=stop_after_attempt(max_attempts), wait=wait_random_exponential(0.05, 2), reraise=True):
        with attempt:
            counter["attempt"] += 1
            _compact_once(load_table, days, min_files=min_files, row_group_rows=row_group_rows,
                          small_file_bytes=small_file_bytes, results=results, attempt=counter["attempt"],
                          before_commit=before_commit)
    name = ".".join(load_table().name())
    for result in results.values():
        result.table = name
        if result.skipped:
            log.info("compaction_skipped", table=name, day=result.day.isoformat(), reason=result.skipped)
        else:
            log.info("compaction_committed", table=name, day=result.day.isoformat(), files_before=result.files_before,
                     files_after=result.files_after, rows=result.rows, attempts=result.attempts,
                     snapshot_id=result.snapshot_id)
    return [results[day] for day in days]


def compact_partition(load_table: Callable[[], Table], day: dt.date, **kwargs: Any) -> CompactionResult:
    """Rewrite one UTC day partition (see `compact_days`)."""
    return compact_days(load_table, [day], **kwargs)[0]


def compact_table(load_table: Callable[[], Table], *, days: list[dt.date] | None = None, min_files: int = 2,
                  row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
                  small_file_bytes: int = DEFAULT_SMALL_FILE_BYTES) -> list[CompactionResult]:
    """Compact every day partition holding at least `min_files` small files (or the given days), in one commit."""
    if days is None:
        days = sorted(day for day, n in files_per_day(load_table(), smaller_than=small_file_bytes).items()
                      if n >= min_files)
    if not days:
        return []
    return compact_days(load_table, days, min_files=min_files, row_group_rows=row_group_rows,
                        small_file_bytes=small_file_bytes)


def _latest_offset_snapshots(snaps: list) -> set[int]:  # type: ignore[type-arg]
    """The snapshots that hold each topic-partition's recorded Kafka offset (`k2.kafka.offsets`,
    or the older per-group `k2.kafka.offsets.<group>`): per topic-partition and topic id, the
    newest snapshot among those recording the highest offset.

    A restarted consumer (of any group) resumes from the highest offset the table records for
    its topic-partition (exactly-once across a crash between the Iceberg and the Kafka commit);
    compaction snapshots carry none, and a batch records only the partitions it read, so expiry
    must never remove the snapshot that records a partition's offset, however old it is. One
    per topic id, so a re-created topic's record and its predecessor's are both kept."""
    best: dict[tuple[str, int, str], tuple[int, int]] = {}  # (topic, partition, id) -> (offset, snapshot)
    for snap in snaps:  # oldest first: later ones win ties
        extra = snap.summary.additional_properties if snap.summary is not None else {}
        if OFFSETS_KEY not in extra and not any(key.startswith(OFFSETS_PREFIX) for key in extra):
            continue
        try:
            records = snapshot_records(extra)
        except (ValueError, AttributeError, TypeError):
            best[("", -1, str(snap.snapshot_id))] = (0, snap.snapshot_id)  # unreadable: keep the snapshot whole
            continue
        for record in records:
            for (topic, partition), offset in record.offsets.items():
                key = (topic, partition, record.topic_ids.get(topic, ""))
                if key not in best or offset >= best[key][0]:
                    best[key] = (offset, snap.snapshot_id)
    return {snapshot_id for _, snapshot_id in best.values()}


def expire_snapshots(table: Table, *, retention: dt.timedelta, retain_last: int = 1,
                     now: dt.datetime | None = None, full_detail: dt.timedelta | None = None,
                     thin_interval: dt.timedelta | None = None) -> ExpiryResult:
    """Expire snapshots committed before now − retention, and (with `full_detail` and
    `thin_interval`) all but the newest per `thin_interval` of those older than now −
    full_detail; always keeping the newest `retain_last`, every branch/tag head and the
    snapshot recording each topic-partition's highest offset. Data files stay on disk (orphan
    cleanup is a separate job)."""
    if (full_detail is None) != (thin_interval is None):
        raise ValueError("full_detail and thin_interval go together")
    if thin_interval is not None and thin_interval <= dt.timedelta(0):
        raise ValueError(f"thin_interval must be positive, got {thin_interval}")
    now = now or dt.datetime.now(dt.UTC)
    cutoff_ms = int((now - retention).timestamp() * 1000)
    snaps = sorted(table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
    keep = {s.snapshot_id for s in snaps[-retain_last:]} if retain_last > 0 else set()
    keep |= {ref.snapshot_id for ref in table.metadata.refs.values()}
    keep |= _latest_offset_snapshots(snaps)
    expire = [s.snapshot_id for s in snaps if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep]
    if full_detail is not None and thin_interval is not None:
        detail_ms = int((now - full_detail).timestamp() * 1000)
        interval_ms = int(thin_interval.total_seconds() * 1000)
        newest: dict[int, int] = {}
        for s in snaps:  # oldest first: the last one seen in a bucket is its newest
            if cutoff_ms <= s.timestamp_ms < detail_ms:
                newest[s.timestamp_ms // interval_ms] = s.snapshot_id
        kept_per_interval = set(newest.values())
        expire += [s.snapshot_id for s in snaps if cutoff_ms <= s.timestamp_ms < detail_ms
                   and s.snapshot_id not in keep and s.snapshot_id not in kept_per_interval]
    result = ExpiryResult(table=".".join(table.name()), expired=expire, kept=len(snaps) - len(expire))
    if expire:
        fast_commit.expire_snapshots(table, expire)
    log.info("snapshots_expired", table=result.table, expired=len(expire), kept=result.kept,
             retention_s=retention.total_seconds(),
             full_detail_s=full_detail.total_seconds() if full_detail else None,
             thin_interval_s=thin_interval.total_seconds() if thin_interval else None)
    return result


@dataclass
class OrphanResult:
    table: str
    referenced: int = 0
    orphans: list[str] = field(default_factory=list)  # deleted (or, with dry_run, found)
    too_young: int = 0  # unreferenced but newer than `older_than`: possibly a commit in progress
    bytes_freed: int = 0


def referenced_files(table: Table) -> set[str]:
    """Every file a snapshot still in the table, or its metadata, points at: the current and the
    previous metadata JSON files, each snapshot's manifest list, every manifest, and every data
    file a manifest lists as added or existing. A DELETED entry needs no protection of its own: a
    snapshot that can still read that file lists it as added or existing in one of its manifests."""
    io = table.io
    files = {table.metadata_location, *(entry.metadata_file for entry in table.metadata.metadata_log)}
    manifests: dict[str, Any] = {}
    for snapshot in table.metadata.snapshots:
        files.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            manifests.setdefault(manifest.manifest_path, manifest)
    files |= set(manifests)
    for manifest in manifests.values():
        files |= {entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=True)}
    return files


def remove_orphan_files(table: Table, *, older_than: dt.timedelta, now: dt.datetime | None = None,
                        dry_run: bool = False) -> OrphanResult:
    """Delete files under the table's location that nothing in the table refers to any more (data
    files replaced by compaction whose snapshots have expired, files of failed commits, old
    metadata JSON files) and that are older than `older_than`, so a commit still being written is
    never touched. Works on any warehouse pyarrow can list (local disk, s3:// through the table's
    FileIO, so an S3-compatible endpoint and its credentials apply)."""
    from pyarrow import fs as pafs

    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - older_than
    referenced = {_normalise(path) for path in referenced_files(table)}
    result = OrphanResult(table=".".join(table.name()), referenced=len(referenced))
    # the table's own FileIO filesystem: for s3:// it carries the endpoint, region and credentials
    filesystem, root = storage.filesystem(table.location(), table.io)
    scheme = table.location().split("://", 1)[0] + "://" if "://" in table.location() else ""
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        uri = _normalise(scheme + info.path if scheme else info.path)
        if uri in referenced:
            continue
        if info.mtime is not None and info.mtime.replace(tzinfo=info.mtime.tzinfo or dt.UTC) > cutoff:
            result.too_young += 1
            continue
        result.orphans.append(uri)
        result.bytes_freed += info.size or 0
        if not dry_run:
            filesystem.delete_file(info.path)
    log.info("orphan_files_removed", table=result.table, orphans=len(result.orphans), too_young=result.too_young,
             referenced=result.referenced, bytes_freed=result.bytes_freed, dry_run=dry_run,
             older_than_s=older_than.total_seconds())
    return result


def _normalise(path: str) -> str:
    """file:///x and file:/x and /x name the same local file."""
    if path.startswith("file://"):
        return "file://" + "/" + path[len("file://"):].lstrip("/")
    if path.startswith("file:/"):
        return "file:///" + path[len("file:/"):].lstrip("/")
    if path.startswith("/"):
        return "file://" + path
    return path
