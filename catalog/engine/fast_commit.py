"""An append commit path whose cost does not grow with the table's snapshot count.

Why: in pyiceberg 0.12.0 every read of `Transaction.table_metadata` replays the staged updates
through `update_table_metadata`, which ends in `model_copy(deep=True)` of the WHOLE table
metadata, snapshot list included. One `Table.append` reads that property ~18 times, and the
catalog's commit (`MetastoreCatalog._update_and_stage_table`) deep-copies once more: 19 deep
copies per append. Measured: 89 ms per 1,000-row append with < 20 snapshots, 650-750 ms with
300-340 (cProfile at 300 snapshots: 31 of 37 s in `copy.deepcopy`). A consumer commits a
snapshot per batch, and time travel needs days of snapshots, so this grew without bound.
(Upstream: apache/iceberg-python PRs #3302 and #3784 cache the property; not in 0.12.0.)

What this module does, for appends only (`append` below, used by `IcebergWriter`):

- `_ShallowTransaction`, a `Transaction` whose `table_metadata` applies the staged updates
  exactly as `update_table_metadata` does (same `_apply_table_update` functions, same
  metadata-log, `last_updated_ms` and spec/sort-order checks) but returns a shallow copy
  instead of a deep one;
- while `append` runs (a ContextVar, so other threads and every other commit are untouched),
  the catalog's `update_table_metadata` does the same for the commit's final metadata;
- and, also only inside `append`, the catalog's compare-and-swap base is not parsed again
  when it is the metadata file the table already holds: `SqlCatalog.commit_table` loads the
  current table, i.e. reads and validates the whole metadata JSON (every snapshot: ~15 ms at
  300 snapshots, growing with each commit), although in the usual case it is the very file
  our `Table` was loaded from or last committed. Iceberg metadata files are immutable (each
  commit writes a new file under a new name), so the file at that location can only parse to
  the metadata the table holds: `FromInputFile.table_metadata` returns it for that one
  location and reads every other location (another writer's newer commit) as before.

Why dropping the deep copy is safe here: pyiceberg's metadata models are frozen (no field
can be reassigned); the deep copy only guards the shared lists/dicts/models against in-place
mutation. On this path nothing mutates them: the two updates an append stages,
`AddSnapshotUpdate` and `SetSnapshotRefUpdate`, build new containers
(`snapshots + [new]`, `{**refs, main: ref}`, `snapshot_log + [entry]`), the snapshot producer
only reads the metadata (its summary totals go into a NEW `Summary`), and readers such as
`Table.scan` already use `Table.metadata` without any copy. The catalog's new metadata
shares objects only with the metadata it has just loaded from the metadata file and with our
own update objects, both discarded after the commit. Any other update type in the staged
tuple falls back to pyiceberg's own deep-copying function, so the shortcut is limited to
exactly the code audited. The metadata written (and so what DuckDB, Spark, Trino read) is
byte-for-byte what pyiceberg would write: serialisation does not depend on copies.

Snapshot expiry (`expire_snapshots` below) has the same problem, worse: pyiceberg's
`ExpireSnapshots.by_id` reads `Transaction.table_metadata` twice per id, so expiring N of N
snapshots makes 2N deep copies of N snapshots: O(N²), measured 5 s for 295 and 23 s for 595.
Those reads stage nothing, so the same shallow `table_metadata` serves them. The removal itself
(`RemoveSnapshotsUpdate`, which builds new lists and never mutates) takes the shallow path too,
applied with sets (`_remove_snapshots`: pyiceberg's handler scans the id list three times per
snapshot, O(N·M)); a removal that a branch, tag or statistics file points at goes to pyiceberg.

What still cost time per snapshot in every commit, also only inside `append`/`expire_snapshots`:

- the metadata JSON: every snapshot and snapshot-log entry is serialised again by each commit
  (~5 µs each); `metadata_json` keeps each list's JSON from the previous commit and serialises
  only the new items (same bytes, checked once per process);
- `TableMetadata.snapshot_by_id`, a scan from the oldest snapshot that an append makes ~13
  times (a miss among them), answered from an index extended with each new list (`_index_of`).

Guard: the shortcut mirrors private pyiceberg code, so `audit_problems()` checks the pyiceberg
version AND a hash of the source of every function mirrored or relied on along the path an
append and an expiry take (`Transaction.append`, its commit and retry loop, the snapshot
producer, the catalog commit, the metadata serialisers). It runs as the Django system check
`catalog.E001` (`manage.py check`, `migrate`, `runserver`, CI: `tests/platform/test_system_checks.py`)
and again before the first fast commit of a process (`verify_pyiceberg()` raises
`FastCommitUnsupported`): a pyiceberg upgrade fails loudly at deploy instead of silently
changing behaviour. Re-audit, then update `_SOURCE_HASHES`.

Plain Python, no Django import.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyiceberg
import pyiceberg.catalog as _catalog_module
import structlog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io import InputFile, OutputFile
from pyiceberg.serializers import Compressor, FromInputFile, ToOutputFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table import update as _update_module
from pyiceberg.table.metadata import TableMetadata, TableMetadataCommonFields, TableMetadataV2
from pyiceberg.table.snapshots import update_snapshot_summaries
from pyiceberg.table.update import (
    AddSnapshotUpdate,
    RemoveSnapshotsUpdate,
    SetSnapshotRefUpdate,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.table.update.snapshot import ExpireSnapshots, _FastAppendFiles, _SnapshotProducer
from pyiceberg.utils.config import Config
from pyiceberg.utils.datetime import datetime_to_millis

log = structlog.get_logger("catalog.fast_commit").bind(component="storage")

SUPPORTED_PYICEBERG = "0.12.0"

# sha256 (first 16 hex digits) of the source of what this module mirrors or depends on, as
# audited for pyiceberg 0.12.0.
_SOURCE_HASHES = {
    "update_table_metadata": "cdfaa6553c2f4d68",
    "_update_table_metadata_log": "1e055143f050efa3",
    "Transaction.table_metadata": "b17e042b477c6adb",
    "Transaction.append": "8acc34ccfcc5028d",
    "Transaction.commit_transaction": "31e91e28f2729338",
    "Transaction._apply": "1d7d332b972488aa",
    "Transaction.__exit__": "ac35b07f0017dda3",
    "Table._do_commit": "794b91fe1dcf7b5f",
    "_SnapshotProducer._commit": "c6fc9654eaee932c",
    "_SnapshotProducer._summary": "2ed6b411b541a0c2",
    "_SnapshotProducer._manifests": "f57f3aac3c95f9f3",
    "_FastAppendFiles._existing_manifests": "d0255db202bdc4a0",
    "_FastAppendFiles._deleted_entries": "cb6620a6a55a8123",
    "update_snapshot_summaries": "d6ef18bed997f9c5",
    "MetastoreCatalog._update_and_stage_table": "2a491d0056395468",
    "_apply_table_update[AddSnapshotUpdate]": "fc20a1a424f10764",
    "_apply_table_update[SetSnapshotRefUpdate]": "dde0da466978ae2f",
    "FromInputFile.table_metadata": "06dde228f3460887",
    "SqlCatalog._convert_orm_to_iceberg": "f444ea8e12456c62",
    "SqlCatalog.commit_table": "fb22ea690ba68b07",
    "ExpireSnapshots.by_id": "fcf76714ee1d53fd",
    "ExpireSnapshots._commit": "3a93a6b38693889d",
    "_apply_table_update[RemoveSnapshotsUpdate]": "e455116c87e837e9",
    "ToOutputFile.table_metadata": "5fae1315550ee2b5",
    "TableMetadata.snapshot_by_id": "75e74f74b599292b",
}

# The only updates an append or an expiry stages; anything else takes pyiceberg's own
# (deep-copying) path.
_SHALLOW_UPDATES = (AddSnapshotUpdate, SetSnapshotRefUpdate, RemoveSnapshotsUpdate)

_ORIGINAL_UPDATE_TABLE_METADATA = _update_module.update_table_metadata
_ORIGINAL_READ_METADATA = FromInputFile.table_metadata
_ORIGINAL_WRITE_METADATA = ToOutputFile.table_metadata
_ORIGINAL_SNAPSHOT_BY_ID = TableMetadataCommonFields.snapshot_by_id
_ORIGINAL_REMOVE_SNAPSHOTS = _apply_table_update.registry[RemoveSnapshotsUpdate]
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("k2_fast_append_commit", default=False)
# (metadata location, the metadata parsed from it) of the table being appended to, inside `append`
_HELD: contextvars.ContextVar[tuple[str, TableMetadata] | None] = contextvars.ContextVar("k2_fast_append_held",
                                                                                        default=None)
_install_lock = threading.Lock()
_verified = False


class FastCommitUnsupported(RuntimeError):
    """The installed pyiceberg is not the one this commit path was audited against."""


def _source_hashes() -> dict[str, str]:
    def digest(obj: Any) -> str:
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]

    registry = _apply_table_update.registry
    return {
        "update_table_metadata": digest(_ORIGINAL_UPDATE_TABLE_METADATA),
        "_update_table_metadata_log": digest(_update_table_metadata_log),
        "Transaction.table_metadata": digest(Transaction.table_metadata.fget),
        "Transaction.append": digest(Transaction.append),
        "Transaction.commit_transaction": digest(Transaction.commit_transaction),
        "Transaction._apply": digest(Transaction._apply),
        "Transaction.__exit__": digest(Transaction.__exit__),
        "Table._do_commit": digest(Table._do_commit),
        "_SnapshotProducer._commit": digest(_SnapshotProducer._commit),
        "_SnapshotProducer._summary": digest(_SnapshotProducer._summary),
        "_SnapshotProducer._manifests": digest(_SnapshotProducer._manifests),
        "_FastAppendFiles._existing_manifests": digest(_FastAppendFiles._existing_manifests),
        "_FastAppendFiles._deleted_entries": digest(_FastAppendFiles._deleted_entries),
        "update_snapshot_summaries": digest(update_snapshot_summaries),
        "MetastoreCatalog._update_and_stage_table": digest(_catalog_module.MetastoreCatalog._update_and_stage_table),
        "_apply_table_update[AddSnapshotUpdate]": digest(registry[AddSnapshotUpdate]),
        "_apply_table_update[SetSnapshotRefUpdate]": digest(registry[SetSnapshotRefUpdate]),
        "FromInputFile.table_metadata": digest(_ORIGINAL_READ_METADATA),
        "SqlCatalog._convert_orm_to_iceberg": digest(SqlCatalog._convert_orm_to_iceberg),
        "SqlCatalog.commit_table": digest(SqlCatalog.commit_table),
        "ExpireSnapshots.by_id": digest(ExpireSnapshots.by_id),
        "ExpireSnapshots._commit": digest(ExpireSnapshots._commit),
        "_apply_table_update[RemoveSnapshotsUpdate]": digest(_ORIGINAL_REMOVE_SNAPSHOTS),
        "ToOutputFile.table_metadata": digest(_ORIGINAL_WRITE_METADATA),
        "TableMetadata.snapshot_by_id": digest(_ORIGINAL_SNAPSHOT_BY_ID),
    }


def audit_problems() -> list[str]:
    """What differs between the installed pyiceberg and the code this module was audited against
    (empty when nothing does). Run by `verify_pyiceberg` before the first fast commit and by the
    Django system check `catalog.E001` (`manage.py check`, every deploy and CI run)."""
    if pyiceberg.__version__ != SUPPORTED_PYICEBERG:
        return [f"catalog.engine.fast_commit was audited for pyiceberg {SUPPORTED_PYICEBERG}, found "
                f"{pyiceberg.__version__}: re-audit it (see its docstring) before use"]
    try:
        found = _source_hashes()
    except (OSError, TypeError, KeyError) as exc:
        return [f"cannot inspect pyiceberg's source: {exc}"]
    changed = sorted(name for name, expected in _SOURCE_HASHES.items() if found.get(name) != expected)
    if changed:
        return [f"pyiceberg code that catalog.engine.fast_commit mirrors has changed: {', '.join(changed)}; "
                "re-audit it (see its docstring), then update _SOURCE_HASHES"]
    return []


def verify_pyiceberg() -> None:
    """Raise `FastCommitUnsupported` unless pyiceberg is exactly the audited version and code;
    then install the ContextVar-gated catalog hook (once; inert outside `append`)."""
    global _verified
    if _verified:
        return
    with _install_lock:
        if _verified:
            return
        problems = audit_problems()
        if problems:
            raise FastCommitUnsupported("; ".join(problems))
        current = _catalog_module.update_table_metadata
        if current is not _catalog_update_table_metadata:
            if current is not _ORIGINAL_UPDATE_TABLE_METADATA:
                raise FastCommitUnsupported("pyiceberg.catalog.update_table_metadata is already patched by someone else")
            _catalog_module.update_table_metadata = _catalog_update_table_metadata
        current_read = FromInputFile.__dict__["table_metadata"].__func__
        if current_read is not _read_table_metadata:
            if current_read is not _ORIGINAL_READ_METADATA:
                raise FastCommitUnsupported("pyiceberg.serializers.FromInputFile.table_metadata is already patched")
            FromInputFile.table_metadata = staticmethod(_read_table_metadata)  # type: ignore[method-assign]
        current_write = ToOutputFile.__dict__["table_metadata"].__func__
        if current_write is not _write_table_metadata:
            if current_write is not _ORIGINAL_WRITE_METADATA:
                raise FastCommitUnsupported("pyiceberg.serializers.ToOutputFile.table_metadata is already patched")
            ToOutputFile.table_metadata = staticmethod(_write_table_metadata)  # type: ignore[method-assign]
        current_lookup = TableMetadataCommonFields.snapshot_by_id
        if current_lookup is not _snapshot_by_id:
            if current_lookup is not _ORIGINAL_SNAPSHOT_BY_ID:
                raise FastCommitUnsupported("pyiceberg TableMetadata.snapshot_by_id is already patched")
            TableMetadataCommonFields.snapshot_by_id = _snapshot_by_id  # type: ignore[method-assign]
        _verified = True


def _shallow_safe(updates: tuple[TableUpdate, ...]) -> bool:
    return all(isinstance(update, _SHALLOW_UPDATES) for update in updates)


def _update_table_metadata_shallow(base_metadata: TableMetadata, updates: tuple[TableUpdate, ...],
                                   metadata_location: str | None = None) -> TableMetadata:
    """pyiceberg 0.12.0's `update_table_metadata` (enforce_validation=False) minus the final
    `model_copy(deep=True)`; only called with append and snapshot-removal updates (see the
    module docstring)."""
    if any(isinstance(update, RemoveSnapshotsUpdate) and _removal_touches_refs(update, base_metadata)
           for update in updates):
        return _ORIGINAL_UPDATE_TABLE_METADATA(base_metadata, updates, metadata_location=metadata_location)
    context = _TableMetadataUpdateContext()
    new_metadata = base_metadata
    for update in updates:
        if isinstance(update, RemoveSnapshotsUpdate):
            new_metadata = _remove_snapshots(update, new_metadata, context)
        else:
            new_metadata = _apply_table_update(update, new_metadata, context)
    if context.has_changes():
        if metadata_location:
            new_metadata = _update_table_metadata_log(new_metadata, metadata_location, base_metadata.last_updated_ms)
        if base_metadata.last_updated_ms == new_metadata.last_updated_ms:
            new_metadata = new_metadata.model_copy(update={"last_updated_ms": datetime_to_millis(datetime.now().astimezone())})
    new_metadata.spec().check_compatible(new_metadata.schema())
    new_metadata.sort_order().check_compatible(new_metadata.schema())
    return new_metadata.model_copy()  # shallow: the top-level object is new, the containers are shared


def _removal_touches_refs(update: RemoveSnapshotsUpdate, base_metadata: TableMetadata) -> bool:
    ids = set(update.snapshot_ids)
    return (any(ref.snapshot_id in ids for ref in base_metadata.refs.values())
            or any(stats.snapshot_id in ids for stats in base_metadata.statistics))


def _remove_snapshots(update: RemoveSnapshotsUpdate, base_metadata: TableMetadata,
                      context: _TableMetadataUpdateContext) -> TableMetadata:
    """`_apply_table_update` for `RemoveSnapshotsUpdate` (pyiceberg 0.12.0), with sets instead of
    three scans of the id list per snapshot (O(N·M): ~2 M comparisons to thin 200 of 3,000).
    Same checks, same result, for a removal that no branch, tag or statistics file points at
    (the caller sends any other to pyiceberg's own code)."""
    ids = set(update.snapshot_ids)
    present = {snapshot.snapshot_id for snapshot in base_metadata.snapshots}
    for remove_snapshot_id in update.snapshot_ids:
        if remove_snapshot_id not in present:
            raise ValueError(f"Snapshot with snapshot id {remove_snapshot_id} does not exist: {base_metadata.snapshots}")
    snapshots = [
        snapshot.model_copy(update={"parent_snapshot_id": None}) if snapshot.parent_snapshot_id in ids else snapshot
        for snapshot in base_metadata.snapshots
        if snapshot.snapshot_id not in ids
    ]
    snapshot_log = [entry for entry in base_metadata.snapshot_log if entry.snapshot_id not in ids]
    context.add_update(update)
    return base_metadata.model_copy(update={"snapshots": snapshots, "snapshot_log": snapshot_log})


# --- metadata JSON: each snapshot serialised once ----------------------------------------------
# Every commit writes the table's whole metadata JSON, every snapshot and snapshot-log entry in
# it (~5 µs a snapshot: 10 ms at 2,000). Snapshots never change once committed, and with the
# shallow updates above the metadata of one commit shares its Snapshot objects with the next, so
# the JSON of each list is kept per table and extended by the new items only while the list
# still starts with the same objects (the cache holds them alive, so an id() is never reused),
# and the metadata is written as pydantic's JSON of everything else with the lists spliced in.
# The first write of each process is checked against pydantic's JSON of the whole; a difference
# switches the cache off for good (logged).
_cache_lock = threading.Lock()
_json_state = {"checked": False, "enabled": True}
# (table uuid, field, exclude_none) -> (the items, their id()s, their JSON joined by commas)
_list_json: dict[tuple[str, str, bool], tuple[list[Any], list[int], str]] = {}


def _joined_json(key: tuple[str, str, bool], items: list[Any]) -> str:
    exclude_none = key[2]
    ids = list(map(id, items))
    with _cache_lock:
        cached = _list_json.get(key)
        if cached is not None and len(cached[1]) <= len(ids) and ids[:len(cached[1])] == cached[1]:
            tail = ",".join([item.model_dump_json(exclude_none=exclude_none) for item in items[len(cached[1]):]])
            joined = cached[2] + "," + tail if cached[2] and tail else cached[2] or tail
        else:  # the first write, or the list changed other than at its end (an expiry, a reload)
            joined = ",".join([item.model_dump_json(exclude_none=exclude_none) for item in items])
        _list_json[key] = (list(items), ids, joined)
    return joined


def metadata_json(metadata: TableMetadata, exclude_none: bool = True) -> str:
    """`metadata.model_dump_json(exclude_none=...)`, with the snapshot and snapshot-log lists'
    JSON built incrementally (see above)."""
    if not _json_state["enabled"] or not isinstance(metadata, TableMetadataV2) or not metadata.snapshots:
        return metadata.model_dump_json(exclude_none=exclude_none)
    skeleton = metadata.model_copy(update={"snapshots": [], "snapshot_log": []}).model_dump_json(exclude_none=exclude_none)
    marks = ('"snapshots":[]', '"snapshot-log":[]')
    if any(skeleton.count(mark) != 1 for mark in marks):
        return metadata.model_dump_json(exclude_none=exclude_none)
    table = str(metadata.table_uuid)
    snapshot_log = _joined_json((table, "snapshot-log", exclude_none), metadata.snapshot_log)
    snapshots = _joined_json((table, "snapshots", exclude_none), metadata.snapshots)
    # neither list's JSON can hold the other's empty mark, so the order of the two replaces is free
    text = skeleton.replace(marks[1], f'"snapshot-log":[{snapshot_log}]', 1).replace(
        marks[0], f'"snapshots":[{snapshots}]', 1)
    if not _json_state["checked"]:
        _json_state["checked"] = True
        if text != metadata.model_dump_json(exclude_none=exclude_none):
            _json_state["enabled"] = False
            log.error("metadata_json_cache_disabled", reason="spliced JSON differs from pydantic's")
            return metadata.model_dump_json(exclude_none=exclude_none)
    return text


# (the snapshot list, its length, its id()s, snapshot id -> snapshot) of the lists last looked up in
_snapshot_index: OrderedDict[int, tuple[list[Any], int, list[int], dict[int, Any]]] = OrderedDict()


def _index_of(snapshots: list[Any]) -> dict[int, Any]:
    """snapshot id -> snapshot for this list; built from the index of a list it extends (an
    append's new list is the old one plus one) instead of from scratch."""
    with _cache_lock:
        hit = _snapshot_index.get(id(snapshots))
        if hit is not None and hit[0] is snapshots and hit[1] == len(snapshots):
            return hit[3]
        ids = list(map(id, snapshots))
        index: dict[int, Any] | None = None
        for _held, length, base_ids, base_index in reversed(_snapshot_index.values()):
            if length <= len(ids) and ids[:length] == base_ids:  # `_held` keeps those objects alive
                index = dict(base_index)
                index.update((s.snapshot_id, s) for s in snapshots[length:])
                break
        if index is None:
            index = {s.snapshot_id: s for s in snapshots}
        _snapshot_index[id(snapshots)] = (snapshots, len(snapshots), ids, index)
        while len(_snapshot_index) > 8:
            _snapshot_index.popitem(last=False)
        return index


def _snapshot_by_id(self: TableMetadata, snapshot_id: int) -> Any:
    """`TableMetadata.snapshot_by_id` from an index inside `append`/`expire_snapshots` (ids are
    unique in a table, so the answer is the same; an append looks snapshots up ~13 times, each a
    scan of the whole list, a miss included)."""
    if _ACTIVE.get():
        return _index_of(self.snapshots).get(snapshot_id)
    return _ORIGINAL_SNAPSHOT_BY_ID(self, snapshot_id)


def _write_table_metadata(metadata: TableMetadata, output_file: OutputFile, overwrite: bool = False) -> None:
    """`ToOutputFile.table_metadata` (pyiceberg 0.12.0), except inside `append`/`expire_snapshots`
    below, where the JSON comes from `metadata_json` (same bytes)."""
    if not _ACTIVE.get():
        return _ORIGINAL_WRITE_METADATA(metadata, output_file, overwrite)
    with output_file.create(overwrite=overwrite) as output_stream:
        exclude_none = False if Config().get_bool("legacy-current-snapshot-id") else True
        json_bytes = metadata_json(metadata, exclude_none).encode("utf-8")
        json_bytes = Compressor.get_compressor(output_file.location).bytes_compressor()(json_bytes)
        output_stream.write(json_bytes)
    return None


def _catalog_update_table_metadata(base_metadata: TableMetadata, updates: tuple[TableUpdate, ...],
                                   enforce_validation: bool = False,
                                   metadata_location: str | None = None) -> TableMetadata:
    """Stands in for `update_table_metadata` inside `pyiceberg.catalog`: identical to it except
    during `append` below, for append-only updates on an existing table."""
    if _ACTIVE.get() and not enforce_validation and _shallow_safe(updates):
        return _update_table_metadata_shallow(base_metadata, updates, metadata_location)
    return _ORIGINAL_UPDATE_TABLE_METADATA(base_metadata, updates, enforce_validation=enforce_validation,
                                           metadata_location=metadata_location)


def _read_table_metadata(input_file: InputFile, encoding: str = "utf-8") -> TableMetadata:
    """`FromInputFile.table_metadata`, except inside `append` for the metadata file the table
    already holds (immutable by the Iceberg spec: the same location always holds the same metadata)."""
    held = _HELD.get()
    if held is not None and input_file.location == held[0]:
        return held[1]
    return _ORIGINAL_READ_METADATA(input_file, encoding)


class _ShallowTransaction(Transaction):
    """A Transaction whose `table_metadata` does not deep-copy the metadata while the staged
    updates are append updates or none (appends, and the reads expiry makes before it stages its
    removal)."""

    @property
    def table_metadata(self) -> TableMetadata:
        if _shallow_safe(self._updates):
            return _update_table_metadata_shallow(self._table.metadata, self._updates)
        return _ORIGINAL_UPDATE_TABLE_METADATA(self._table.metadata, self._updates)


def append(table: Table, df: pa.Table, snapshot_properties: dict[str, str] | None = None) -> None:
    """`table.append(df, snapshot_properties=...)` (pyiceberg 0.12.0 `Table.append`, main branch),
    without the per-append deep copies of the table metadata. Same files, same snapshot, same
    summary, same retries on a concurrent commit; raises `FastCommitUnsupported` when pyiceberg
    is not the audited version."""
    verify_pyiceberg()
    token = _ACTIVE.set(True)
    held = _HELD.set((table.metadata_location, table.metadata))
    try:
        with _ShallowTransaction(table) as tx:
            tx.append(df=df, snapshot_properties=snapshot_properties or {})
    finally:
        _HELD.reset(held)
        _ACTIVE.reset(token)


def expire_snapshots(table: Table, snapshot_ids: list[int]) -> None:
    """`table.maintenance.expire_snapshots().by_ids(snapshot_ids).commit()` in O(N) instead of
    O(N²) (see the module docstring): same checks (each id exists and is not a branch or tag
    head), same `RemoveSnapshotsUpdate`, same commit."""
    verify_pyiceberg()
    token = _ACTIVE.set(True)
    held = _HELD.set((table.metadata_location, table.metadata))
    try:
        ExpireSnapshots(transaction=_ShallowTransaction(table, autocommit=True)).by_ids(snapshot_ids).commit()
    finally:
        _HELD.reset(held)
        _ACTIVE.reset(token)

