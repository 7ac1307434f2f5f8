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

Also only inside `append` (issue 15, each part described where it is defined below): manifests
are merged in tiers (`_TieredMergeManager`: each entry rewritten at most twice, where pyiceberg's
bin packing rewrote the part-filled merged manifest at nearly every commit); the catalog's
compare-and-swap is one UPDATE on the metadata the table holds (`_sql_commit_table`: no SELECT
first; when another commit got in, pyiceberg's own `commit_table` runs); the transaction's
metadata is kept while its inputs are the same objects; a batch's Arrow schema is checked
against the table's once per pair (`_check_schema_compatible`) and converted to an Iceberg schema
once per schema (`_pyarrow_to_schema`), both keyed with the batch's field ids; an Avro file's
schema and reader tree are kept per header schema (`_avro_file_enter`); and a batch that falls in
one partition (one UTC day) is not grouped and filtered by Acero (`_determine_partitions`);
a manifest's entry schema, Avro writer tree and header JSON are kept per schema
(`_with_partition`, `_avro_output_init`, `_avro_write_header`: these three are pure caches, not
gated, see there); and the manifest list an append wrote is kept as written, so the next append
does not read it back from its file (`_add_manifests`, `_read_manifests`).
Together, 2026-12-03: an append of 350 rows went from 37 ms of process CPU (median of 3 runs'
means) to 21, its p90 from 65 ms to 25 (docs/benchmarks.md, "The commit path (issue 15 items 1
and 4)"); the last two parts, 2026-12-07, in the section after it.

Also only inside `append`, pyiceberg's commit retry is off (`commit.retry.num-retries` reads 0,
`_property_as_int`): on a concurrent commit it would rebuild the append on top of whatever is
there without asking whether those rows are already in the table (after an ambiguous commit, or
another consumer's); `CommitFailedException` reaches `IcebergWriter`, which checks the table's
recorded offsets before it tries again (issue 11).

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

Also only inside `append`/`expire_snapshots`, the metadata JSON: every commit writes every
snapshot and snapshot-log entry again (~5 µs each); `metadata_json_pieces` keeps each list's JSON
from the previous commit as UTF-8 chunks and serialises only the new items, and the file is
written piece by piece, never built as one string (same bytes, checked once per process against
pydantic's JSON of the whole; a difference switches it off for good, logged).

Kept and dropped by measurement (issue 10; `bench/bench_append.py --compare`, every part
switched on and off in turn on one table, docs/benchmarks.md "fast_commit: what each part is
worth", 2,000 snapshots): the shallow copies, the held metadata (not parsed again) and the
JSON lists each pay for themselves; an id()-keyed index for `TableMetadata.snapshot_by_id`
(an append scans the snapshot list ~13 times) did not, and was removed.

Guard: the shortcut mirrors private pyiceberg code and relies on what pyiceberg's append
and expiry do around it (that nothing mutates the metadata in place, that `commit_transaction`
reads its retry count through `property_as_int`, that the SQL catalog loads its compare-and-swap
base through `FromInputFile`), so `audit_problems()` checks the pyiceberg version AND a hash of
the source of every pyiceberg function an append and an expiry run through in the table,
update, snapshot, metadata, catalog and serializer modules (the list is traced:
`tests/platform/test_system_checks.py` fails when one is missing) plus every function mirrored.
It runs as the Django system check `catalog.E001` (`manage.py check`, `migrate`, `runserver`;
CI: `tests/platform/test_system_checks.py` runs `manage.py check` against an unchanged and a
changed pyiceberg) and again before the first fast commit of a process (`verify_pyiceberg()`
raises `FastCommitUnsupported`): a pyiceberg upgrade fails loudly at deploy instead of silently
changing behaviour. Re-audit, then update `_SOURCE_HASHES`.

Only for the SQL catalog: the audit covers `SqlCatalog.commit_table`, which writes the metadata
JSON itself. With any other catalog (an Iceberg REST catalog: the server writes the metadata
file, K2 only sends the updates) `append` and `expire_snapshots` are plain pyiceberg
(`Table.append`, `ExpireSnapshots`): same snapshots and summaries (the consumer's offsets ride
in them either way), without the shortcut, so each commit's cost grows with the snapshot count
as pyiceberg's does (`uses_fast_path`).

Plain Python, no Django import.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib
import inspect
import json
import os
import threading
from datetime import datetime
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyiceberg
import pyiceberg.catalog as _catalog_module
import pyiceberg.io.pyarrow as _pyarrow_io_module
import pyiceberg.manifest as _manifest_module
import pyiceberg.table as _table_module
import structlog
from pyiceberg.avro.codecs import AVRO_CODEC_KEY, CODEC_MAPPING_ICEBERG_TO_AVRO
from pyiceberg.avro.decoder import new_decoder
from pyiceberg.avro.file import _SCHEMA_KEY, MAGIC, META_SCHEMA, SYNC_SIZE, AvroFile, AvroFileHeader, AvroOutputFile
from pyiceberg.avro.resolver import construct_writer, resolve_reader, resolve_writer
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io import InputFile, OutputFile
from pyiceberg.manifest import ManifestListWriter, ManifestWriter
from pyiceberg.serializers import Compressor, FromInputFile, NoopCompressor, ToOutputFile
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table import snapshots as _snapshots_module
from pyiceberg.table import update as _update_module
from pyiceberg.table.metadata import TableMetadata, TableMetadataV2
from pyiceberg.table.update import (
    AddSnapshotUpdate,
    RemoveSnapshotsUpdate,
    SetSnapshotRefUpdate,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.table.update import snapshot as _snapshot_module
from pyiceberg.table.update.snapshot import ExpireSnapshots
from pyiceberg.typedef import EMPTY_DICT
from pyiceberg.utils.config import Config
from pyiceberg.utils.datetime import datetime_to_millis
from pyiceberg.utils.schema_conversion import AvroSchemaConversion

log = structlog.get_logger("catalog.fast_commit").bind(component="storage")

SUPPORTED_PYICEBERG = "0.12.0"

# sha256 (first 16 hex digits) of the source of each pyiceberg function audited, as shipped in
# pyiceberg 0.12.0: every function an append and an expiry run through in these modules (traced;
# `tests/platform/test_system_checks.py` fails when the trace finds one missing) and every one this
# module mirrors or replaces. Keys are "module:qualname".
_SOURCE_HASHES = {
    "pyiceberg.catalog.sql:SqlCatalog._convert_orm_to_iceberg": "f444ea8e12456c62",
    "pyiceberg.catalog.sql:SqlCatalog._iceberg_type_filter": "df8ba97f3178a00f",
    "pyiceberg.catalog.sql:SqlCatalog.commit_table": "fb22ea690ba68b07",
    "pyiceberg.catalog.sql:SqlCatalog.load_table": "44dda2f08f80b821",
    "pyiceberg.avro.file:AvroFile.__enter__": "ee6d6eda1ce049c8",
    "pyiceberg.avro.file:AvroFile._read_header": "bce3609930403be4",
    "pyiceberg.avro.file:AvroFileHeader.get_schema": "a83caafc1e857bfc",
    "pyiceberg.avro.file:AvroOutputFile.__init__": "141dcfe3690bdaf4",
    "pyiceberg.avro.file:AvroOutputFile._write_header": "94841dc5ca2c1924",
    "pyiceberg.manifest:ManifestWriter._with_partition": "0feb42507fcf42b3",
    "pyiceberg.manifest:ManifestListWriter.add_manifests": "ec79259b513243d2",
    "pyiceberg.manifest:_manifests": "1677994c23f89651",
    "pyiceberg.manifest:ManifestListWriterV2.prepare_manifest": "60fa446cdefb1738",
    "pyiceberg.table.snapshots:Snapshot.manifests": "567aa93101c165d4",
    "pyiceberg.catalog:Catalog._delete_old_metadata": "adcfb8eed0294a24",
    "pyiceberg.catalog:Catalog._load_file_io": "82be8a6cfd40f34a",
    "pyiceberg.catalog:Catalog.identifier_to_tuple": "0b0c8bb7ea8dae12",
    "pyiceberg.catalog:Catalog.namespace_from": "f53947278f4fccfb",
    "pyiceberg.catalog:Catalog.namespace_to_string": "8cd29e87a1d1e6b2",
    "pyiceberg.catalog:Catalog.table_name_from": "e854390263216158",
    "pyiceberg.catalog:MetastoreCatalog._parse_metadata_version": "ddcc204ecfc7ae24",
    "pyiceberg.catalog:MetastoreCatalog._update_and_stage_table": "2a491d0056395468",
    "pyiceberg.catalog:MetastoreCatalog._write_metadata": "2ed45bacb9a4b133",
    "pyiceberg.catalog:delete_files": "3f667c2a8fe60590",
    "pyiceberg.io.pyarrow:_check_pyarrow_schema_compatible": "263b4f06dbdee3c9",
    "pyiceberg.io.pyarrow:_TablePartition": "ab3e465ac084eebc",
    "pyiceberg.io.pyarrow:_dataframe_to_data_files": "244100a6322dc372",
    "pyiceberg.io.pyarrow:_determine_partitions": "a63fbe9aa15e1392",
    "pyiceberg.io.pyarrow:pyarrow_to_schema": "3b52a9ab93ce089e",
    "pyiceberg.serializers:Compressor.get_compressor": "67ce4a6a32b009de",
    "pyiceberg.serializers:FromInputFile.table_metadata": "06dde228f3460887",
    "pyiceberg.serializers:NoopCompressor.bytes_compressor": "ebb066c886d338b7",
    "pyiceberg.serializers:ToOutputFile.table_metadata": "5fae1315550ee2b5",
    "pyiceberg.table.metadata:TableMetadataCommonFields.new_snapshot_id": "7d71653130dcbd1d",
    "pyiceberg.table.metadata:TableMetadataCommonFields.next_sequence_number": "bf4fd050943301e7",
    "pyiceberg.table.metadata:TableMetadataCommonFields.schema": "25fe2f51d376b811",
    "pyiceberg.table.metadata:TableMetadataCommonFields.serialize_current_snapshot_id": "b6d5d37efc35fb39",
    "pyiceberg.table.metadata:TableMetadataCommonFields.serialize_snapshots": "9201fd09d62e50ad",
    "pyiceberg.table.metadata:TableMetadataCommonFields.snapshot_by_id": "75e74f74b599292b",
    "pyiceberg.table.metadata:TableMetadataCommonFields.snapshot_by_name": "ca2875ff8bad5c91",
    "pyiceberg.table.metadata:TableMetadataCommonFields.sort_order": "f5f4e147d2a79384",
    "pyiceberg.table.metadata:TableMetadataCommonFields.sort_order_by_id": "d35cd9b876ca3f5e",
    "pyiceberg.table.metadata:TableMetadataCommonFields.spec": "01c948b1acb04973",
    "pyiceberg.table.metadata:TableMetadataCommonFields.specs": "e9e6399a9356c758",
    "pyiceberg.table.metadata:TableMetadataV2.check_partition_specs": "0e11eed9ffd60a20",
    "pyiceberg.table.metadata:TableMetadataV2.check_schemas": "a6c631d55a9c73bf",
    "pyiceberg.table.metadata:TableMetadataV2.check_sort_orders": "4d021472d8a070a9",
    "pyiceberg.table.metadata:TableMetadataV2.construct_refs": "5b4550f8208d74d2",
    "pyiceberg.table.metadata:_generate_snapshot_id": "fa0b3c6a37588e05",
    "pyiceberg.table.metadata:check_partition_specs": "e20ab1d28c80e0c1",
    "pyiceberg.table.metadata:check_schemas": "100ad54ba2c8950a",
    "pyiceberg.table.metadata:check_sort_orders": "5aad0ac6e5430762",
    "pyiceberg.table.metadata:construct_refs": "9d2ad551875678dd",
    "pyiceberg.table.snapshots:SnapshotSummaryCollector.__init__": "23b49bfcfafe96c0",
    "pyiceberg.table.snapshots:SnapshotSummaryCollector.add_file": "9e6c2d789e1e1856",
    "pyiceberg.table.snapshots:SnapshotSummaryCollector.build": "3ad1411178af969c",
    "pyiceberg.table.snapshots:SnapshotSummaryCollector.update_partition_metrics": "575cfd9bba41d15e",
    "pyiceberg.table.snapshots:Summary.__getitem__": "9e606754c298fc2e",
    "pyiceberg.table.snapshots:Summary.__init__": "7aae11071cd9055b",
    "pyiceberg.table.snapshots:Summary.__len__": "b21cc1addf10e7c9",
    "pyiceberg.table.snapshots:Summary.__setitem__": "356a202a879c192a",
    "pyiceberg.table.snapshots:Summary.ser_model": "d889d13dd446c361",
    "pyiceberg.table.snapshots:UpdateMetrics.__init__": "ac11a8b897ec9745",
    "pyiceberg.table.snapshots:UpdateMetrics.add_file": "e1fd9f3285942598",
    "pyiceberg.table.snapshots:UpdateMetrics.to_dict": "432caaf98df0e279",
    "pyiceberg.table.snapshots:set_when_positive": "512142687e490e8d",
    "pyiceberg.table.snapshots:update_snapshot_summaries": "d6ef18bed997f9c5",
    "pyiceberg.table.update.snapshot:ExpireSnapshots.__init__": "e8b38aef88733496",
    "pyiceberg.table.update.snapshot:ExpireSnapshots._commit": "3a93a6b38693889d",
    "pyiceberg.table.update.snapshot:ExpireSnapshots._get_protected_snapshot_ids": "f5f98f63dd83ea99",
    "pyiceberg.table.update.snapshot:ExpireSnapshots.by_id": "fcf76714ee1d53fd",
    "pyiceberg.table.update.snapshot:ExpireSnapshots.by_ids": "91ef3bb9807eaa01",
    "pyiceberg.table.update.snapshot:UpdateSnapshot.__init__": "c92d868f3f9057dd",
    "pyiceberg.table.update.snapshot:UpdateSnapshot.merge_append": "84c067a0b9537124",
    "pyiceberg.table.update.snapshot:_FastAppendFiles._deleted_entries": "cb6620a6a55a8123",
    "pyiceberg.table.update.snapshot:_ManifestMergeManager.__init__": "0a775279326d4d5e",
    "pyiceberg.table.update.snapshot:_ManifestMergeManager._create_manifest": "4b92b581460f2a82",
    "pyiceberg.table.update.snapshot:_ManifestMergeManager._group_by_spec": "3659c4cd2a4f122b",
    "pyiceberg.table.update.snapshot:_ManifestMergeManager._merge_group": "1fb100f1744e15e8",
    "pyiceberg.table.update.snapshot:_ManifestMergeManager.merge_manifests": "253237ff3eb47774",
    "pyiceberg.table.update.snapshot:_MergeAppendFiles.__init__": "1643051b9eac538c",
    "pyiceberg.table.update.snapshot:_MergeAppendFiles._process_manifests": "c5bd11e40527f506",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.__init__": "b852274884153a53",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._build_delete_files_partition_predicate": "b94b24c0c5e4493e",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._cleanup_uncommitted": "c201b0e5b1a49086",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._commit": "c6fc9654eaee932c",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._current_branch_head_id": "1e4d9c74c8c90f50",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._manifests": "f57f3aac3c95f9f3",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._summary": "2ed6b411b541a0c2",
    "pyiceberg.table.update.snapshot:_SnapshotProducer._validate_target_branch": "47fb5b49d9c64a98",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.append_data_file": "b5a7ac906ad56d86",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.commit": "5b81b509a6dc5418",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.fetch_manifest_entry": "603bb596eb7b015b",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.new_manifest_output": "c2e6e1d9b54e0205",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.new_manifest_writer": "9d0c7567dedaaf5a",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.schema": "ca3e8d61d8b76e87",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.snapshot_id": "cb0b013e478f7e6f",
    "pyiceberg.table.update.snapshot:_SnapshotProducer.spec": "fb1818a5d5cfe470",
    "pyiceberg.table.update.snapshot:_new_manifest_file_name": "7591cef8ce9a7cd0",
    "pyiceberg.table.update.snapshot:_new_manifest_list_file_name": "ac212740cb942793",
    "pyiceberg.table.update:AssertRefSnapshotId.validate": "cde2a83586f0f59b",
    "pyiceberg.table.update:AssertTableUUID.validate": "0c46b99452bda028",
    "pyiceberg.table.update:UpdateTableMetadata.__enter__": "93c0e1c9eec03927",
    "pyiceberg.table.update:UpdateTableMetadata.__exit__": "37c6c4dadf89544a",
    "pyiceberg.table.update:UpdateTableMetadata.__init__": "b34c8936f792a17f",
    "pyiceberg.table.update:UpdateTableMetadata.commit": "ce996207a5d2b195",
    "pyiceberg.table.update:_TableMetadataUpdateContext.__init__": "3c35b7ed4e58e9e9",
    "pyiceberg.table.update:_TableMetadataUpdateContext.add_update": "5b7f1815705d05f2",
    "pyiceberg.table.update:_TableMetadataUpdateContext.has_changes": "9836ee0f165d408c",
    "pyiceberg.table.update:_TableMetadataUpdateContext.is_added_snapshot": "dc8510513393e1d1",
    "pyiceberg.table.update:_apply_table_update[AddSnapshotUpdate]": "fc20a1a424f10764",
    "pyiceberg.table.update:_apply_table_update[RemoveSnapshotsUpdate]": "e455116c87e837e9",
    "pyiceberg.table.update:_apply_table_update[SetSnapshotRefUpdate]": "dde0da466978ae2f",
    "pyiceberg.table.update:_update_table_metadata_log": "1e055143f050efa3",
    "pyiceberg.table.update:update_table_metadata": "cdfaa6553c2f4d68",
    "pyiceberg.table:Table.__init__": "548e237b72bdbe7d",
    "pyiceberg.table:Table._check_uuid": "0136216994e40db4",
    "pyiceberg.table:Table._do_commit": "794b91fe1dcf7b5f",
    "pyiceberg.table:Table.location_provider": "0f76b644b6ceba44",
    "pyiceberg.table:Table.name": "58307c83cc5c3223",
    "pyiceberg.table:Transaction.__enter__": "fba615c758ff3167",
    "pyiceberg.table:Transaction.__exit__": "ac35b07f0017dda3",
    "pyiceberg.table:Transaction.__init__": "19002cf5755316db",
    "pyiceberg.table:Transaction._append_snapshot_producer": "1094520849e4f4bc",
    "pyiceberg.table:Transaction._apply": "1d7d332b972488aa",
    "pyiceberg.table:Transaction._cleanup_uncommitted_manifests": "f4b2c5730afedcc3",
    "pyiceberg.table:Transaction._register_snapshot_producer": "8a4621960de5c544",
    "pyiceberg.table:Transaction._stage": "6881b41fb183aa8d",
    "pyiceberg.table:Transaction.append": "8acc34ccfcc5028d",
    "pyiceberg.table:Transaction.commit_transaction": "31e91e28f2729338",
    "pyiceberg.table:Transaction.table_metadata": "b17e042b477c6adb",
    "pyiceberg.table:Transaction.update_snapshot": "e0eafdde057d67ab",
    "pyiceberg.utils.properties:property_as_bool": "466ca1a7bf2f6519",
    "pyiceberg.utils.properties:property_as_int": "c147a20103c5d6af",
}
# The only updates an append or an expiry stages; anything else takes pyiceberg's own
# (deep-copying) path.
_SHALLOW_UPDATES = (AddSnapshotUpdate, SetSnapshotRefUpdate, RemoveSnapshotsUpdate)

_ORIGINAL_UPDATE_TABLE_METADATA = _update_module.update_table_metadata
_ORIGINAL_READ_METADATA = FromInputFile.table_metadata
_ORIGINAL_WRITE_METADATA = ToOutputFile.table_metadata
_ORIGINAL_REMOVE_SNAPSHOTS = _apply_table_update.registry[RemoveSnapshotsUpdate]
_ORIGINAL_PROPERTY_AS_INT = _table_module.property_as_int
_ORIGINAL_MERGE_MANAGER = _snapshot_module._ManifestMergeManager
_ORIGINAL_CHECK_SCHEMA = _pyarrow_io_module._check_pyarrow_schema_compatible
_ORIGINAL_PYARROW_TO_SCHEMA = _pyarrow_io_module.pyarrow_to_schema
_ORIGINAL_DETERMINE_PARTITIONS = _pyarrow_io_module._determine_partitions
_ORIGINAL_SQL_COMMIT_TABLE = SqlCatalog.commit_table
_ORIGINAL_AVRO_ENTER = AvroFile.__enter__
_ORIGINAL_WITH_PARTITION = ManifestWriter._with_partition
_ORIGINAL_AVRO_OUTPUT_INIT = AvroOutputFile.__init__
_ORIGINAL_AVRO_WRITE_HEADER = AvroOutputFile._write_header
_ORIGINAL_ADD_MANIFESTS = ManifestListWriter.add_manifests
_ORIGINAL_MANIFESTS = _snapshots_module._manifests
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("k2_fast_append_commit", default=False)
# (metadata location, the metadata parsed from it) of the table being appended to, inside `append`
_HELD: contextvars.ContextVar[tuple[str, TableMetadata] | None] = contextvars.ContextVar("k2_fast_append_held",
                                                                                        default=None)
_install_lock = threading.Lock()
_verified = False


class FastCommitUnsupported(RuntimeError):
    """The installed pyiceberg is not the one this commit path was audited against."""


# pyiceberg functions this module replaces while it runs (ContextVar-gated, except the pure caches and the
# kept manifest lists, which say why where they are defined): audited as pyiceberg ships them
_REPLACED = {
    "pyiceberg.avro.file:AvroFile.__enter__": _ORIGINAL_AVRO_ENTER,
    "pyiceberg.avro.file:AvroOutputFile.__init__": _ORIGINAL_AVRO_OUTPUT_INIT,
    "pyiceberg.avro.file:AvroOutputFile._write_header": _ORIGINAL_AVRO_WRITE_HEADER,
    "pyiceberg.manifest:ManifestWriter._with_partition": _ORIGINAL_WITH_PARTITION,
    "pyiceberg.manifest:ManifestListWriter.add_manifests": _ORIGINAL_ADD_MANIFESTS,
    "pyiceberg.manifest:_manifests": _ORIGINAL_MANIFESTS,
    "pyiceberg.catalog.sql:SqlCatalog.commit_table": _ORIGINAL_SQL_COMMIT_TABLE,
    "pyiceberg.io.pyarrow:_check_pyarrow_schema_compatible": _ORIGINAL_CHECK_SCHEMA,
    "pyiceberg.io.pyarrow:_determine_partitions": _ORIGINAL_DETERMINE_PARTITIONS,
    "pyiceberg.io.pyarrow:pyarrow_to_schema": _ORIGINAL_PYARROW_TO_SCHEMA,
    "pyiceberg.serializers:FromInputFile.table_metadata": _ORIGINAL_READ_METADATA,
    "pyiceberg.serializers:ToOutputFile.table_metadata": _ORIGINAL_WRITE_METADATA,
    "pyiceberg.table.update:update_table_metadata": _ORIGINAL_UPDATE_TABLE_METADATA,
}


# module globals this module replaces (installed by `verify_pyiceberg`): audited as pyiceberg ships them
_REPLACED_GLOBALS: dict[tuple[Any, str], Any] = {(_snapshot_module, "_ManifestMergeManager"): _ORIGINAL_MERGE_MANAGER}


def _audited(key: str) -> Any:
    """The pyiceberg function a `_SOURCE_HASHES` key names ("module:qualname", or
    "module:_apply_table_update[UpdateType]" for one handler of that singledispatch function)."""
    if key in _REPLACED:
        return _REPLACED[key]
    module_name, _, qualname = key.partition(":")
    if qualname.startswith("_apply_table_update["):
        return _apply_table_update.registry[getattr(_update_module, qualname[len("_apply_table_update["):-1])]
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        # a module global this module replaces while it runs (installed by `verify_pyiceberg`)
        obj = _REPLACED_GLOBALS.get((obj, part)) or inspect.getattr_static(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    return obj


def _source_hashes() -> dict[str, str]:
    return {key: hashlib.sha256(inspect.getsource(_audited(key)).encode()).hexdigest()[:16] for key in _SOURCE_HASHES}


def audit_problems() -> list[str]:
    """What differs between the installed pyiceberg and the code this module was audited against
    (empty when nothing does). Run by `verify_pyiceberg` before the first fast commit and by the
    Django system check `catalog.E001` (`manage.py check`, every deploy and CI run)."""
    if pyiceberg.__version__ != SUPPORTED_PYICEBERG:
        return [f"catalog.engine.fast_commit was audited for pyiceberg {SUPPORTED_PYICEBERG}, found "
                f"{pyiceberg.__version__}: re-audit it (see its docstring) before use"]
    try:
        found = _source_hashes()
    except (OSError, TypeError, KeyError, AttributeError, ImportError) as exc:
        return [f"cannot inspect pyiceberg's source: {exc}"]
    changed = sorted(name for name, expected in _SOURCE_HASHES.items() if found.get(name) != expected)
    if changed:
        return [f"pyiceberg code that catalog.engine.fast_commit mirrors has changed: {', '.join(changed)}; "
                "re-audit it (see its docstring), then update _SOURCE_HASHES"]
    return []


def _hooks() -> tuple[tuple[Any, str, Any, Any], ...]:
    """(owner, attribute, this module's stand-in, pyiceberg's own) for everything `verify_pyiceberg`
    installs; a staticmethod stays one."""
    return (
        (_catalog_module, "update_table_metadata", _catalog_update_table_metadata, _ORIGINAL_UPDATE_TABLE_METADATA),
        (FromInputFile, "table_metadata", _read_table_metadata, _ORIGINAL_READ_METADATA),
        (ToOutputFile, "table_metadata", _write_table_metadata, _ORIGINAL_WRITE_METADATA),
        (_snapshot_module, "_ManifestMergeManager", _merge_manager, _ORIGINAL_MERGE_MANAGER),
        (_pyarrow_io_module, "_check_pyarrow_schema_compatible", _check_schema_compatible, _ORIGINAL_CHECK_SCHEMA),
        (_pyarrow_io_module, "pyarrow_to_schema", _pyarrow_to_schema, _ORIGINAL_PYARROW_TO_SCHEMA),
        (_pyarrow_io_module, "_determine_partitions", _determine_partitions, _ORIGINAL_DETERMINE_PARTITIONS),
        (SqlCatalog, "commit_table", _sql_commit_table, _ORIGINAL_SQL_COMMIT_TABLE),
        (AvroFile, "__enter__", _avro_file_enter, _ORIGINAL_AVRO_ENTER),
        (ManifestWriter, "_with_partition", _with_partition, _ORIGINAL_WITH_PARTITION),
        (AvroOutputFile, "__init__", _avro_output_init, _ORIGINAL_AVRO_OUTPUT_INIT),
        (AvroOutputFile, "_write_header", _avro_write_header, _ORIGINAL_AVRO_WRITE_HEADER),
        (ManifestListWriter, "add_manifests", _add_manifests, _ORIGINAL_ADD_MANIFESTS),
        (_snapshots_module, "_manifests", _read_manifests, _ORIGINAL_MANIFESTS),
        (_table_module, "property_as_int", _property_as_int, _ORIGINAL_PROPERTY_AS_INT),
    )


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
        for owner, name, ours, original in _hooks():
            current = inspect.getattr_static(owner, name)
            static = isinstance(current, staticmethod)
            if static:
                current = current.__func__
            if current is ours:
                continue
            if current is not original:
                where = owner.__name__ if isinstance(owner, ModuleType) else f"{owner.__module__}.{owner.__qualname__}"
                raise FastCommitUnsupported(f"{where}.{name} is already patched by someone else")
            setattr(owner, name, staticmethod(ours) if static else ours)
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


# --- this module's caches ------------------------------------------------------------------------
# One lock for every cache below (the JSON lists, the schema pairs and conversions, the Avro readers).
_cache_lock = threading.Lock()


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Keep `value` under `key` in one of this module's small caches (emptied when 64 are held:
    schemas and table layouts change rarely, so a small bound is plenty)."""
    with _cache_lock:
        if len(cache) >= 64:
            cache.clear()
        cache[key] = value


# --- metadata JSON: each snapshot serialised once ----------------------------------------------
# Every commit writes the table's whole metadata JSON, every snapshot and snapshot-log entry in
# it (~5 µs a snapshot: 10 ms at 2,000). Snapshots never change once committed, and with the
# shallow updates above the metadata of one commit shares its Snapshot objects with the next, so
# the JSON of each list is kept per table and extended by the new items only while the list
# still starts with the same objects (the cache holds them alive, so an id() is never reused),
# and the metadata is written as pydantic's JSON of everything else with the lists spliced in.
# The lists are kept as UTF-8 chunks (each commit's new items one chunk, joined into one when
# more than `_CHUNKS_KEPT` pile up) and written to the file piece by piece: at 2,500 snapshots the
# file is ~3 MB, and building it as one string (the lists joined, spliced into the rest twice, then
# encoded) copied it four times per commit, ~2 ms (py-spy, 2026-12-07).
# The first write of each process is checked against pydantic's JSON of the whole; a difference
# switches the cache off for good (logged).
_json_state = {"checked": False, "enabled": True}
_CHUNKS_KEPT = 32
# (table uuid, field, exclude_none) -> (the items, their id()s, their JSON as comma-joined UTF-8 chunks)
_list_json: dict[tuple[str, str, bool], tuple[list[Any], list[int], list[bytes]]] = {}


def _joined_json(key: tuple[str, str, bool], items: list[Any]) -> list[bytes]:
    """The JSON of `items`, comma-separated without the brackets, as chunks to write in order."""
    exclude_none = key[2]
    ids = list(map(id, items))
    with _cache_lock:
        cached = _list_json.get(key)
        if cached is not None and len(cached[1]) <= len(ids) and ids[:len(cached[1])] == cached[1]:
            chunks = cached[2]
            tail = ",".join([item.model_dump_json(exclude_none=exclude_none) for item in items[len(cached[1]):]])
            if tail:
                chunks = [*chunks, ("," + tail if chunks else tail).encode("utf-8")]
        else:  # the first write, or the list changed other than at its end (an expiry, a reload)
            joined = ",".join([item.model_dump_json(exclude_none=exclude_none) for item in items])
            chunks = [joined.encode("utf-8")] if joined else []
        if len(chunks) > _CHUNKS_KEPT:
            chunks = [b"".join(chunks)]
        _list_json[key] = (list(items), ids, chunks)
    return chunks


def metadata_json_pieces(metadata: TableMetadata, exclude_none: bool = True) -> list[bytes]:
    """`metadata.model_dump_json(exclude_none=...)` as UTF-8, in pieces to write in order, with
    the snapshot and snapshot-log lists' JSON built incrementally (see above)."""
    if not _json_state["enabled"] or not isinstance(metadata, TableMetadataV2) or not metadata.snapshots:
        return [metadata.model_dump_json(exclude_none=exclude_none).encode("utf-8")]
    skeleton = metadata.model_copy(update={"snapshots": [], "snapshot_log": []}).model_dump_json(exclude_none=exclude_none)
    marks = ('"snapshots":[]', '"snapshot-log":[]')
    if any(skeleton.count(mark) != 1 for mark in marks):
        return [metadata.model_dump_json(exclude_none=exclude_none).encode("utf-8")]
    table = str(metadata.table_uuid)
    lists = {marks[0]: _joined_json((table, "snapshots", exclude_none), metadata.snapshots),
             marks[1]: _joined_json((table, "snapshot-log", exclude_none), metadata.snapshot_log)}
    # neither list's JSON can hold the other's empty mark; each is written between its '[' and ']'
    pieces: list[bytes] = []
    at = 0
    for position, mark in sorted((skeleton.index(mark), mark) for mark in marks):
        pieces.append(skeleton[at:position + len(mark) - 1].encode("utf-8"))
        pieces.extend(lists[mark])
        at = position + len(mark) - 1
    pieces.append(skeleton[at:].encode("utf-8"))
    if not _json_state["checked"]:
        _json_state["checked"] = True
        whole = metadata.model_dump_json(exclude_none=exclude_none).encode("utf-8")
        if b"".join(pieces) != whole:
            _json_state["enabled"] = False
            log.error("metadata_json_cache_disabled", reason="spliced JSON differs from pydantic's")
            return [whole]
    return pieces


def _write_table_metadata(metadata: TableMetadata, output_file: OutputFile, overwrite: bool = False) -> None:
    """`ToOutputFile.table_metadata` (pyiceberg 0.12.0), except inside `append`/`expire_snapshots`
    below, where the JSON comes from `metadata_json_pieces` (same bytes), written piece by piece
    when the file is not compressed."""
    if not _ACTIVE.get():
        return _ORIGINAL_WRITE_METADATA(metadata, output_file, overwrite)
    with output_file.create(overwrite=overwrite) as output_stream:
        exclude_none = False if Config().get_bool("legacy-current-snapshot-id") else True
        pieces = metadata_json_pieces(metadata, exclude_none)
        compressor = Compressor.get_compressor(output_file.location)
        if isinstance(compressor, NoopCompressor):
            for piece in pieces:
                output_stream.write(piece)
        else:
            output_stream.write(compressor.bytes_compressor()(b"".join(pieces)))
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


def _property_as_int(properties: dict[str, str], property_name: str, default: int | None = None) -> int | None:
    """`property_as_int` as `Transaction.commit_transaction` reads it (its only caller in
    pyiceberg.table), except inside `append`: there `commit.retry.num-retries` is 0. pyiceberg's
    own retry rebuilds the append on top of whatever another commit left, without asking whether
    those rows are already in the table (after an ambiguous commit, or another consumer's);
    `IcebergWriter` retries instead, after checking the table's recorded offsets."""
    if _ACTIVE.get() and property_name == TableProperties.COMMIT_NUM_RETRIES:
        return 0
    return _ORIGINAL_PROPERTY_AS_INT(properties, property_name, default)


def _read_table_metadata(input_file: InputFile, encoding: str = "utf-8") -> TableMetadata:
    """`FromInputFile.table_metadata`, except inside `append` for the metadata file the table
    already holds (immutable by the Iceberg spec: the same location always holds the same metadata)."""
    held = _HELD.get()
    if held is not None and input_file.location == held[0]:
        return held[1]
    return _ORIGINAL_READ_METADATA(input_file, encoding)


# --- manifest merging in tiers ------------------------------------------------------------------
# pyiceberg's merge append packs the manifests into bins of `commit.manifest.target-size-bytes`
# from the oldest and rewrites every bin of more than one manifest that does not hold the new one
# at once (and the one that does once it reaches `min-count-to-merge`). The bin before the
# newest is a part-filled merged manifest plus the latest small ones, so once the small ones
# spill over it, nearly every commit rewrites that manifest, up to the target size (~120 entries
# at 64 KB) in pyiceberg's Python Avro writer: in 600 appends of 350 rows, 38 % of the append's
# CPU and p90 of 90 ms per append against a p50 of 30 (docs/benchmarks.md, "Manifest merging in
# tiers"). Merged in tiers instead (a log-structured merge), each entry is rewritten at most
# twice before its manifest reaches the target size: a manifest of fewer than F files
# (F = min-count-to-merge) is tier 0, fewer than F² tier 1, and so on; when a tier holds F
# manifests below the target size they become one manifest of the next tier; a manifest of the
# target size or more is never merged again by a commit (maintenance compacts a day's files
# into one manifest). With F = 16 a commit merges 16 one-file manifests every 16 commits and
# 16 tier-1 manifests every 256; a table holds at most 2(F - 1) small manifests besides the full
# ones. Entries are written by pyiceberg's own `_create_manifest` (added, existing and deleted
# entries as its merge writes them), so the manifests' content is what pyiceberg's merge gives.


def _files_in(manifest: Any) -> int:
    return ((manifest.added_files_count or 0) + (manifest.existing_files_count or 0)
            + (manifest.deleted_files_count or 0))


def _tier(manifest: Any, fanout: int) -> int:
    files, tier = _files_in(manifest), 0
    while files >= fanout:
        files //= fanout
        tier += 1
    return tier


class _TieredMergeManager(_ORIGINAL_MERGE_MANAGER):  # type: ignore[misc, valid-type]
    """pyiceberg's `_ManifestMergeManager` with the merge policy above (the same constructor,
    grouping by partition spec and manifest writer)."""

    def merge_manifests(self, manifests: list[Any]) -> list[Any]:
        if not self._merge_enabled or len(manifests) == 0:
            return manifests
        groups = self._group_by_spec(manifests)
        merged: list[Any] = []
        for spec_id in reversed(groups.keys()):
            merged.extend(self._merge_tiers(spec_id, groups[spec_id]))
        return merged

    def _merge_tiers(self, spec_id: int, manifests: list[Any]) -> list[Any]:
        fanout = max(2, self._min_count_to_merge)
        out = list(manifests)
        tier = 0
        while True:
            open_ = [m for m in out if m.manifest_length < self._target_size_bytes]
            if not any(_tier(m, fanout) >= tier for m in open_):
                return out
            members = [m for m in open_ if _tier(m, fanout) == tier]
            if len(members) >= fanout:
                new = self._create_manifest(spec_id, members)
                gone = {id(m) for m in members[1:]}
                out = [new if m is members[0] else m for m in out if id(m) not in gone]
            tier += 1


def _merge_manager(**kwargs: Any) -> Any:
    """Stands in for `_ManifestMergeManager` inside `pyiceberg.table.update.snapshot` (its only
    caller is the merge append's `_process_manifests`): the tiered policy inside `append` below,
    pyiceberg's own everywhere else."""
    if _ACTIVE.get():
        return _TieredMergeManager(**kwargs)
    return _ORIGINAL_MERGE_MANAGER(**kwargs)


# Every batch of a consumer has the same Arrow schema and the table the same Iceberg schema, yet
# pyiceberg converts the Arrow schema to an Iceberg one and compares the two at every append
# (4-5 % of an append's CPU). Inside `append` a pair found compatible is remembered (the Iceberg
# `Schema` is immutable and held by the cache, so its id() is never reused; `pa.Schema` hashes
# and compares by value); an incompatible pair is checked, and raises, every time. The Arrow schema
# is keyed by its IPC serialisation (`_schema_key`), not by `pa.Schema` itself: a `pa.Schema`
# compares and hashes WITHOUT field metadata, where pyiceberg reads the field ids
# (`PARQUET:field_id`), so a batch with the right names and types but wrong field ids would
# otherwise pass as the compatible batch before it.
_compatible_schemas: dict[tuple[int, bytes, bool, int], Any] = {}


def _schema_key(schema: pa.Schema) -> bytes:
    """The Arrow schema with every field's metadata (its field id) and the schema's own (~30 µs)."""
    return schema.serialize().to_pybytes()


def _check_schema_compatible(requested_schema: Any, provided_schema: pa.Schema,
                             downcast_ns_timestamp_to_us: bool = False, format_version: Any = 2) -> None:
    """Stands in for `_check_pyarrow_schema_compatible` in `pyiceberg.io.pyarrow`: the same check,
    done once per schema pair inside `append` below, pyiceberg's own everywhere else."""
    if not _ACTIVE.get():
        return _ORIGINAL_CHECK_SCHEMA(requested_schema, provided_schema, downcast_ns_timestamp_to_us, format_version)
    key = (id(requested_schema), _schema_key(provided_schema), bool(downcast_ns_timestamp_to_us), int(format_version))
    if _compatible_schemas.get(key) is requested_schema:
        return None
    _ORIGINAL_CHECK_SCHEMA(requested_schema, provided_schema, downcast_ns_timestamp_to_us, format_version)
    _remember(_compatible_schemas, key, requested_schema)
    return None


# pyiceberg also converts the batch's Arrow schema to an Iceberg one again for the write tasks
# (`_dataframe_to_data_files`: ~0.45 ms of CPU per append). Inside `append` the result is kept per
# (Arrow schema with its field ids, name mapping, flags): `Schema` and `NameMapping` are immutable,
# and the name mapping is held by the cache so its id() is never reused.
_converted_schemas: dict[tuple[bytes, int, bool, Any], tuple[Any, Any]] = {}


def _pyarrow_to_schema(schema: pa.Schema, name_mapping: Any = None, downcast_ns_timestamp_to_us: bool = False,
                       format_version: Any = TableProperties.DEFAULT_FORMAT_VERSION) -> Any:
    """Stands in for `pyarrow_to_schema` in `pyiceberg.io.pyarrow`: the same conversion, done once per
    schema inside `append` below, pyiceberg's own everywhere else (and for whatever it refuses)."""
    if not _ACTIVE.get():
        return _ORIGINAL_PYARROW_TO_SCHEMA(schema, name_mapping, downcast_ns_timestamp_to_us, format_version)
    key = (_schema_key(schema), id(name_mapping), bool(downcast_ns_timestamp_to_us), format_version)
    kept = _converted_schemas.get(key)
    if kept is not None and kept[0] is name_mapping:
        return kept[1]
    converted = _ORIGINAL_PYARROW_TO_SCHEMA(schema, name_mapping, downcast_ns_timestamp_to_us, format_version)
    _remember(_converted_schemas, key, (name_mapping, converted))
    return converted


def _determine_partitions(spec: Any, schema: Any, arrow_table: pa.Table) -> Any:
    """Stands in for `_determine_partitions` in `pyiceberg.io.pyarrow`. A consumer's batch nearly
    always falls in one partition (one UTC day), for which pyiceberg still groups by the
    partition values and filters the table with Arrow's Acero engine (0.6-0.7 ms of CPU per append,
    and a thread-pool hand-off that waits for a core on a busy machine). Inside `append`, when every
    partition field's transformed values are one and the same non-null value, the whole table is
    that partition: the same key (built from the same value, as pyiceberg's `to_pylist` gives it)
    and the same rows in the same order, combined into fresh buffers as pyiceberg does. Anything
    else (several values, a null, outside `append`) goes to pyiceberg's own."""
    if not _ACTIVE.get() or not spec.fields or len(arrow_table) == 0:
        return _ORIGINAL_DETERMINE_PARTITIONS(spec, schema, arrow_table)
    values = []
    for partition in spec.fields:
        name = schema.find_column_name(partition.source_id)
        if name is None or name not in arrow_table.column_names:  # nested source: pyiceberg's own
            return _ORIGINAL_DETERMINE_PARTITIONS(spec, schema, arrow_table)
        source = schema.find_field(partition.source_id)
        transformed = partition.transform.pyarrow_transform(source.field_type)(arrow_table.column(name))
        if transformed.null_count:
            return _ORIGINAL_DETERMINE_PARTITIONS(spec, schema, arrow_table)
        bounds = pc.min_max(transformed)
        low, high = bounds["min"], bounds["max"]
        if not low.is_valid or not low.equals(high):
            return _ORIGINAL_DETERMINE_PARTITIONS(spec, schema, arrow_table)
        values.append(transformed.slice(0, 1).to_pylist()[0])  # the value as pyiceberg's to_pylist gives it
    key = _pyarrow_io_module.PartitionKey(
        field_values=[_pyarrow_io_module.PartitionFieldValue(field=field, value=value)
                      for field, value in zip(spec.fields, values, strict=True)],
        partition_spec=spec, schema=schema)
    return iter([_pyarrow_io_module._TablePartition(partition_key=key,
                                                   arrow_table_partition=arrow_table.combine_chunks())])


# --- the catalog's compare-and-swap without reading the row first -------------------------------
# `SqlCatalog.commit_table` first loads the table (a SELECT through the ORM session, 13 % of an
# append's time), builds the new metadata on what it found, then swaps the metadata location
# with `UPDATE ... WHERE metadata_location = <what it found>`. Inside `append` the table's held
# metadata file is nearly always the current one, so the new metadata is built on it and the
# UPDATE's WHERE is the check: one round trip. When another writer got in first (the UPDATE
# changes no row), the metadata file just written is deleted and pyiceberg's own `commit_table`
# runs, so a concurrent maintenance commit (an expiry that leaves `main` where it was) is
# handled exactly as pyiceberg handles it.
_cas_statement: Any = None


def _compare_and_swap() -> Any:
    global _cas_statement
    if _cas_statement is None:
        from pyiceberg.catalog.sql import IcebergTables
        from sqlalchemy import bindparam, update

        _cas_statement = (
            update(IcebergTables)
            .where(IcebergTables.catalog_name == bindparam("k2_catalog"),
                   IcebergTables.table_namespace == bindparam("k2_namespace"),
                   IcebergTables.table_name == bindparam("k2_table"),
                   IcebergTables.metadata_location == bindparam("k2_expected"))
            .values(metadata_location=bindparam("k2_new"), previous_metadata_location=bindparam("k2_previous")))
    return _cas_statement


def _sql_commit_table(self: SqlCatalog, table: Table, requirements: tuple[Any, ...],
                      updates: tuple[TableUpdate, ...]) -> Any:
    """Stands in for `SqlCatalog.commit_table` (pyiceberg 0.12.0): inside `append`, for the table
    whose held metadata file is being committed on, the swap above; pyiceberg's own otherwise."""
    held = _HELD.get()
    if (not _ACTIVE.get() or held is None or held[0] != table.metadata_location
            or not self.engine.dialect.supports_sane_rowcount):
        return _ORIGINAL_SQL_COMMIT_TABLE(self, table, requirements, updates)
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import CommitTableResponse

    identifier = table.name()
    staged = self._update_and_stage_table(table, identifier, requirements, updates)
    if staged.metadata == table.metadata:
        return CommitTableResponse(metadata=table.metadata, metadata_location=table.metadata_location)
    self._write_metadata(metadata=staged.metadata, io=staged.io, metadata_path=staged.metadata_location)
    with self.engine.begin() as connection:
        swapped = connection.execute(_compare_and_swap(), {
            "k2_catalog": self.name,
            "k2_namespace": Catalog.namespace_to_string(Catalog.namespace_from(identifier)),
            "k2_table": Catalog.table_name_from(identifier),
            "k2_expected": table.metadata_location, "k2_new": staged.metadata_location,
            "k2_previous": table.metadata_location}).rowcount
    if swapped < 1:
        staged.io.delete(staged.metadata_location)
        return _ORIGINAL_SQL_COMMIT_TABLE(self, table, requirements, updates)
    return CommitTableResponse(metadata=staged.metadata, metadata_location=staged.metadata_location)


# --- Avro readers built once per file schema ----------------------------------------------------
# Opening an Avro file (a manifest list at every commit, 16 manifests at every tier-1 merge) parses
# the file's schema from its header JSON and builds a reader tree for it: 80-90 % of reading a
# small manifest, and most of a merge (py-spy). Every manifest K2 writes has the same header
# schema, so inside `append` the (schema, reader) pair is kept per (header schema JSON, read
# schema, read types, read enums); readers are stateless (each `read` builds a new record), and the
# read schemas are pyiceberg's module constants, held by the cache so their id()s stay theirs.
_readers: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}


def _avro_file_enter(self: AvroFile) -> AvroFile:
    """`AvroFile.__enter__` (pyiceberg 0.12.0), with the schema and reader tree kept per header
    schema inside `append` below; pyiceberg's own everywhere else."""
    if not _ACTIVE.get():
        return _ORIGINAL_AVRO_ENTER(self)
    with self.input_file.open() as f:
        self.decoder = new_decoder(f.read())
    self.header = self._read_header()
    schema_json = self.header.meta.get(_SCHEMA_KEY)
    requested = self.read_schema
    key = (schema_json, id(requested), tuple(self.read_types.items()), tuple(self.read_enums.items()))
    kept = _readers.get(key) if schema_json is not None else None
    if kept is not None and kept[0] is requested:
        self.schema, self.reader = kept[1], kept[2]
    else:
        self.schema = self.header.get_schema()  # raises as pyiceberg does when the header has none
        self.reader = resolve_reader(self.schema, requested or self.schema, self.read_types, self.read_enums)
        _remember(_readers, key, (requested, self.schema, self.reader))
    if not self.read_schema:
        self.read_schema = self.schema
    return self


# --- Avro writers: the schema work done once per schema -------------------------------------------
# Writing a manifest (every append, on pyiceberg's worker thread) and a manifest list (every
# append) spends most of its time before the first record: the manifest entry schema is built
# again from the partition spec and the table schema (`ManifestWriter._with_partition`, twice per
# manifest), the writer tree is resolved from it (`AvroOutputFile.__init__`), and the header's
# Avro schema JSON converted and dumped, with the header's own writer tree (`_write_header`): ~80 %
# of writing a one-entry manifest (py-spy, 2026-12-07). Each is a pure function of schema objects
# that do not change between appends (pyiceberg's schemas and specs are frozen, the table's are the
# same objects from one commit to the next on this path, the manifest list's are module
# constants), so each is kept per those objects, held by the cache (an id() is never reused while
# held) and compared by identity: a changed schema or spec is a different object and is worked out
# afresh. Writer trees are stateless (every `write` is given its encoder and value). These hooks
# are not gated by `_ACTIVE`: the manifest is written on pyiceberg's executor thread, which does
# not see the append's context, and a cache that returns what the function would compute from the
# very same objects changes nothing for any other caller.
_writers: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_header_writer: list[Any] = []  # construct_writer(META_SCHEMA), once


def _with_partition(self: ManifestWriter, format_version: Any) -> Any:
    """`ManifestWriter._with_partition` (pyiceberg 0.12.0), kept per (format version, spec, schema)."""
    spec, schema = self._spec, self._schema
    key = ("manifest_entry", format_version, id(spec), id(schema))
    kept = _writers.get(key)
    if kept is not None and kept[0] is spec and kept[1] is schema:
        return kept[2]
    built = _ORIGINAL_WITH_PARTITION(self, format_version)
    _remember(_writers, key, (spec, schema, built))
    return built


def _avro_output_init(self: AvroOutputFile, output_file: OutputFile, file_schema: Any, schema_name: str,
                      record_schema: Any = None, metadata: dict[str, str] = EMPTY_DICT) -> None:
    """`AvroOutputFile.__init__` (pyiceberg 0.12.0), the writer tree kept per (file, record) schema."""
    self.output_file = output_file
    self.file_schema = file_schema
    self.schema_name = schema_name
    self.sync_bytes = os.urandom(SYNC_SIZE)
    key = ("writer", id(file_schema), id(record_schema))
    kept = _writers.get(key)
    if kept is not None and kept[0] is file_schema and kept[1] is record_schema:
        self.writer = kept[2]
    else:
        self.writer = (construct_writer(file_schema=file_schema) if record_schema is None
                       else resolve_writer(record_schema=record_schema, file_schema=file_schema))
        _remember(_writers, key, (file_schema, record_schema, self.writer))
    self.metadata = metadata


def _avro_write_header(self: AvroOutputFile) -> None:
    """`AvroOutputFile._write_header` (pyiceberg 0.12.0), the Avro schema JSON kept per (file
    schema, schema name) and the header's writer tree built once."""
    codec_name = self.metadata.get(AVRO_CODEC_KEY, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT)
    if avro_codec_name := CODEC_MAPPING_ICEBERG_TO_AVRO.get(codec_name):
        codec_name = avro_codec_name
    key = ("header", id(self.file_schema), self.schema_name)
    kept = _writers.get(key)
    if kept is not None and kept[0] is self.file_schema:
        json_schema = kept[1]
    else:
        json_schema = json.dumps(AvroSchemaConversion().iceberg_to_avro(self.file_schema, schema_name=self.schema_name))
        _remember(_writers, key, (self.file_schema, json_schema))
    if not _header_writer:
        _header_writer.append(construct_writer(META_SCHEMA))
    meta = {**self.metadata, _SCHEMA_KEY: json_schema, AVRO_CODEC_KEY: codec_name}
    _header_writer[0].write(self.encoder, AvroFileHeader(MAGIC, meta, self.sync_bytes))


# --- manifest lists kept as written -------------------------------------------------------------
# Every append reads its parent snapshot's manifest list (`Snapshot.manifests`, on pyiceberg's
# executor thread): the file the append before wrote, opened, its header parsed and a reader tree
# built (not the readers kept above: that thread does not see the append's context), ~1 ms of a
# 12 ms append. Manifest lists are immutable files under a new name each (a snapshot's id and a
# UUID), so inside `append` the records a manifest list was written with (`add_manifests`: what
# `write_block` encodes, the sequence numbers assigned) are kept under its location, and reading
# that location gives them back (through pyiceberg's per-manifest cache, as a read does); every
# other location is read from its file. Only lists this process wrote itself are kept, the last
# 16 (a few tables' newest ones); `tests/consumer/test_writer.py::
# test_manifest_lists_kept_as_written_are_what_their_files_read_back_and_no_parent_list_is_read` reads
# every list back from its file and compares.
_written_lists: dict[str, tuple[Any, ...]] = {}
_WRITTEN_LISTS_KEPT = 16


def _add_manifests(self: ManifestListWriter, manifest_files: list[Any]) -> ManifestListWriter:
    """`ManifestListWriter.add_manifests` (pyiceberg 0.12.0), keeping what it wrote inside `append`."""
    prepared = [self.prepare_manifest(manifest_file) for manifest_file in manifest_files]
    self._writer.write_block(prepared)
    if _ACTIVE.get():
        location = self._output_file.location
        with _cache_lock:
            kept = _written_lists.pop(location, ())
            _written_lists[location] = (*kept, *prepared)
            while len(_written_lists) > _WRITTEN_LISTS_KEPT:
                del _written_lists[next(iter(_written_lists))]
    return self


def _read_manifests(io: Any, manifest_list: str) -> tuple[Any, ...]:
    """`pyiceberg.manifest._manifests` (0.12.0): a manifest list this process wrote gives back the
    records it was written with; any other is read from its file."""
    kept = _written_lists.get(manifest_list)
    if kept is None:
        return _ORIGINAL_MANIFESTS(io, manifest_list)
    return tuple(_manifest_module._manifest_cache.get_or_cache(manifest_file) for manifest_file in kept)


class _ShallowTransaction(Transaction):
    """A Transaction whose `table_metadata` does not deep-copy the metadata while the staged
    updates are append updates or none (appends, and the reads expiry makes before it stages its
    removal)."""

    _memo: tuple[TableMetadata, tuple[TableUpdate, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        # An append reads this ~20 times; the staged updates change twice. Both inputs are
        # immutable (frozen metadata, a tuple replaced whenever an update is staged), so the
        # result is kept while they are the same objects (12 % of an append's CPU before).
        base, updates, memo = self._table.metadata, self._updates, self._memo
        if memo is not None and memo[0] is base and memo[1] is updates:
            return memo[2]
        if _shallow_safe(updates):
            metadata = _update_table_metadata_shallow(base, updates)
            self._memo = (base, updates, metadata)
            return metadata
        return _ORIGINAL_UPDATE_TABLE_METADATA(base, updates)


def uses_fast_path(table: Table) -> bool:
    """True for a table of pyiceberg's SQL catalog (the commit path audited above); any other
    catalog (REST) takes pyiceberg's own commit."""
    return isinstance(getattr(table, "catalog", None), SqlCatalog)


def append(table: Table, df: pa.Table, snapshot_properties: dict[str, str] | None = None) -> None:
    """`table.append(df, snapshot_properties=...)` (pyiceberg 0.12.0 `Table.append`, main branch),
    without the per-append deep copies of the table metadata and without pyiceberg's commit
    retry: a concurrent commit raises `CommitFailedException` (its files are cleaned up), and the
    caller (`IcebergWriter`) decides whether the rows are already in the table before trying
    again. Same files, same snapshot, same summary; raises `FastCommitUnsupported` when pyiceberg
    is not the audited version. Not an SQL catalog's table (REST): plain
    `table.append`, with pyiceberg's own commit retry."""

    if not uses_fast_path(table):
        table.append(df, snapshot_properties=snapshot_properties or {})
        return
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
    head), same `RemoveSnapshotsUpdate`, same commit. Not an SQL catalog's table: pyiceberg's own."""
    if not uses_fast_path(table):
        table.maintenance.expire_snapshots().by_ids(snapshot_ids).commit()
        return
    verify_pyiceberg()
    token = _ACTIVE.set(True)
    held = _HELD.set((table.metadata_location, table.metadata))
    try:
        ExpireSnapshots(transaction=_ShallowTransaction(table, autocommit=True)).by_ids(snapshot_ids).commit()
    finally:
        _HELD.reset(held)
        _ACTIVE.reset(token)

