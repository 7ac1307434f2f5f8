"""The Iceberg writer's ADR #006 retries, with a wrapped table as the fault injection."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from prometheus_client import REGISTRY
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

from catalog.engine import fast_commit
from catalog.engine.iceberg import arrow_schema, load_catalog
from catalog.engine.writer import (
    CatalogUnavailable,
    IcebergWriter,
    RetryPolicy,
    offsets_properties,
    recorded_offsets,
)
from k2core.duckdb_conn import connect


class FailingTable:
    """Delegates to a real pyiceberg Table; `failures` appends after the first `after` raise `error` instead."""

    def __init__(self, table, error: Exception, failures: int, *, after: int = 0) -> None:
        self._table = table
        self.error = error
        self.failures = failures
        self.after = after
        self.appends = 0
        self.refreshes = 0

    def append(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self.appends += 1
        if self.after < self.appends <= self.after + self.failures:
            raise self.error
        return self._table.append(*args, **kwargs)

    def refresh(self):  # noqa: ANN201
        self.refreshes += 1
        return self._table.refresh()

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._table, name)


def _batch(n: int = 3, start: int = 0) -> pa.Table:
    now = datetime(2026, 3, 10, 1, tzinfo=UTC)
    rows = [{"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
             "price": Decimal("1.000001"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
             "ingestion_timestamp": now, "sequence_number": i, "source_partition": 0, "source_offset": i}
            for i in range(start, start + n)]
    return pa.Table.from_pylist(rows, schema=arrow_schema("trades"))


FAST = RetryPolicy(first_delay=0.01, max_delay=0.05, retries=3)


def _attempts(table_name: str) -> float:
    return REGISTRY.get_sample_value("k2_iceberg_write_attempts_total", {"table": table_name, "operation": "append"}) or 0


def test_transient_commit_failure_succeeds_on_retry(iceberg_tables, catalog_config, unique, caplog) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], CommitFailedException("another writer committed first"), 1)
    name = f"trades-{unique}"
    before = _attempts(name)
    result = IcebergWriter(wrapped, table_name=name, policy=FAST).append(
        _batch(), properties=offsets_properties("g", {("t", 0): 3}))
    assert result.attempts == 2 and wrapped.refreshes == 1
    retries = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "iceberg_write_retry"]
    assert len(retries) == 1
    assert retries[0]["attempt"] == 1 and retries[0]["error_type"] == "CommitFailedException"
    assert retries[0]["delay_seconds"] == 0.01
    assert _attempts(name) - before == 2
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert table.scan().to_arrow().num_rows == 3
    assert recorded_offsets(table, "g") == {("t", 0): 3}


def test_connection_error_retried_three_times_then_raised(iceberg_tables, unique) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], ConnectionError("catalog unreachable"), 10)
    with pytest.raises(CatalogUnavailable):
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=FAST).append(_batch())
    assert wrapped.appends == 4  # first try + 3 retries (an explicit cap; the default is a time budget)


def test_connection_errors_retried_for_the_budget_then_a_clear_error(iceberg_tables, unique, caplog) -> None:
    """Issue 11 #3: a catalog that stays unreachable is retried with capped exponential backoff
    until the time budget is spent, then the error names the catalog and what to check."""
    import time

    wrapped = FailingTable(iceberg_tables["trades"], ConnectionError("catalog unreachable"), 10_000)
    policy = RetryPolicy(budget_seconds=1.5, first_delay=0.05, max_delay=0.2)
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable) as info:
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=policy).append(_batch())
    assert time.monotonic() - started >= 1.5
    message = str(info.value)
    assert "postgresql+psycopg://postgres@127.0.0.1:5432/k2_test_iceberg" in message
    assert "K2_CATALOG_RETRY_SECONDS" in message and "ConnectionError: catalog unreachable" in message
    delays = [r.msg["delay_seconds"] for r in caplog.records
              if isinstance(r.msg, dict) and r.msg.get("event") == "iceberg_write_retry"]
    assert delays[:3] == [0.05, 0.1, 0.2] and max(delays) == 0.2  # exponential, capped
    assert wrapped.appends == len(delays) + 1 and wrapped.appends > 6
    assert iceberg_tables["trades"].current_snapshot() is None


@pytest.mark.parametrize("error", [NoSuchTableError("market_data.nope"), ValueError("schema mismatch")])
def test_permanent_failure_fails_at_once(iceberg_tables, unique, error) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], error, 1)
    with pytest.raises(type(error)):
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=FAST).append(_batch())
    assert wrapped.appends == 1


def test_schema_mismatch_from_the_real_table_is_not_retried(iceberg_tables, unique) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], RuntimeError("unused"), 0)
    bad = pa.table({"symbol": ["BHP"], "volume": ["not a number"]})
    with pytest.raises(ValueError):
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=FAST).append(bad)
    assert wrapped.appends == 1


def _duckdb_count(metadata_location: str, snapshot_id: int | None = None) -> int:
    conn = connect()
    try:
        pinned = f", snapshot_from_id={snapshot_id}" if snapshot_id is not None else ""
        return conn.execute(f"SELECT count(*) FROM iceberg_scan('{metadata_location}'{pinned})").fetchone()[0]
    finally:
        conn.close()


def test_a_batch_schema_found_compatible_is_remembered_but_a_mismatch_is_refused_every_time(iceberg_tables) -> None:
    """fast_commit remembers a (table schema, batch schema) pair once pyiceberg found it
    compatible; a batch whose schema differs only in one column's type is a different pair and
    is refused at every append, after compatible ones and after other refusals alike."""
    table = iceberg_tables["trades"]
    good = _batch(2)
    fast_commit.append(table, good)
    fast_commit.append(table, _batch(2, start=2))
    bad = good.set_column(good.schema.get_field_index("volume"), pa.field("volume", pa.string()),
                          pa.array(["1", "2"]))
    for _ in range(2):
        with pytest.raises(ValueError, match="volume"):
            fast_commit.append(table, bad)
    # Same names and types, but the volume column carries a field id the table does not have: a
    # pa.Schema equal (and hashing equal) to the good one, which pyiceberg still refuses.
    wrong_id = pa.schema([f.with_metadata({b"PARQUET:field_id": b"77"}) if f.name == "volume" else f
                          for f in good.schema])
    assert wrong_id == good.schema
    for _ in range(2):
        with pytest.raises(ValueError, match="volume"):
            fast_commit.append(table, _batch(2, start=4).cast(wrong_id))
    fast_commit.append(table, _batch(2, start=4))
    assert len(table.metadata.snapshots) == 3
    assert sorted(table.scan().to_arrow().column("source_offset").to_pylist()) == list(range(6))


def test_a_batch_schema_converted_once_is_kept_per_schema_with_its_field_ids(iceberg_tables) -> None:
    """Inside a fast append pyiceberg's Arrow → Iceberg schema conversion for the write tasks is
    kept per (Arrow schema with its field ids, name mapping): the kept conversion is exactly what
    pyiceberg converts, and a schema that differs only in a field id or in the name mapping gets
    its own."""
    from pyiceberg.io import pyarrow as pyarrow_io

    table = iceberg_tables["trades"]
    fast_commit.verify_pyiceberg()
    mapping = table.metadata.schema().name_mapping
    with_ids = _batch(1).schema
    no_ids = pa.schema([f.remove_metadata() for f in with_ids])
    other_id = pa.schema([f.with_metadata({b"PARQUET:field_id": b"77"}) if f.name == "volume" else f for f in with_ids])
    original = fast_commit._ORIGINAL_PYARROW_TO_SCHEMA  # noqa: SLF001 - pyiceberg's own, as shipped
    token = fast_commit._ACTIVE.set(True)  # noqa: SLF001 - as inside fast_commit.append
    try:
        fast_commit._converted_schemas.clear()  # noqa: SLF001
        for schema in (with_ids, no_ids, other_id, with_ids, no_ids, other_id):
            for names in (mapping, None):
                if names is None and schema is no_ids:
                    with pytest.raises(ValueError, match="field-ids"):
                        pyarrow_io.pyarrow_to_schema(schema, name_mapping=names)
                    continue
                assert pyarrow_io.pyarrow_to_schema(schema, name_mapping=names) == original(schema, name_mapping=names)
        assert len(fast_commit._converted_schemas) == 5  # noqa: SLF001 - one per pair pyiceberg converted
        assert pyarrow_io.pyarrow_to_schema(other_id).find_field(77).name == "volume"
    finally:
        fast_commit._ACTIVE.reset(token)  # noqa: SLF001


def test_fast_commit_appends_leave_a_valid_table(iceberg_tables, catalog_config, unique, monkeypatch) -> None:
    """`IcebergWriter` commits through `fast_commit.append` (no deep copies of the metadata): the
    table it leaves must be exactly what pyiceberg's own append leaves, for every reader."""
    calls: list[int] = []
    original = fast_commit.append

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fast_commit, "append", counting)
    table = iceberg_tables["trades"]
    writer = IcebergWriter(table, table_name=f"trades-{unique}", policy=FAST)
    n, rows = 12, 3
    for i in range(n):
        before = table.metadata
        before_json = before.model_dump_json()
        result = writer.append(_batch(rows, start=i * rows),
                               properties=offsets_properties("g", {("t", 0): (i + 1) * rows}, {"t": "id-1"}))
        assert result.attempts == 1 and result.snapshot_id == table.current_snapshot().snapshot_id
        assert before.model_dump_json() == before_json  # the previous metadata was not mutated
    assert len(calls) == n

    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert fresh.metadata == table.metadata  # what was written is what the writer holds
    snapshots = fresh.metadata.snapshots
    assert len(snapshots) == n and len(fresh.metadata.snapshot_log) == n
    assert fresh.current_snapshot().snapshot_id == snapshots[-1].snapshot_id
    assert fresh.metadata.refs["main"].snapshot_id == snapshots[-1].snapshot_id
    assert fresh.metadata.last_sequence_number == n
    for i, snapshot in enumerate(snapshots):
        assert snapshot.parent_snapshot_id == (snapshots[i - 1].snapshot_id if i else None)
        assert snapshot.sequence_number == i + 1
        summary = snapshot.summary
        assert summary is not None and summary.operation.value == "append"
        assert summary["added-records"] == str(rows) and summary["total-records"] == str((i + 1) * rows)
        assert json.loads(summary["k2.kafka.offsets"]) == {"t": {"0": (i + 1) * rows}}
        assert summary["k2.kafka.topic-ids"] == '{"t":"id-1"}' and summary["k2.kafka.group"] == "g"
    assert recorded_offsets(fresh, "g", {"t": "id-1"}) == {("t", 0): n * rows}

    data = fresh.scan().to_arrow()
    assert data.num_rows == n * rows
    assert sorted(data.column("source_offset").to_pylist()) == list(range(n * rows))
    assert _duckdb_count(fresh.metadata_location) == n * rows
    earlier = snapshots[4]  # time travel: the state after the 5th append
    assert fresh.scan(snapshot_id=earlier.snapshot_id).to_arrow().num_rows == 5 * rows
    assert _duckdb_count(fresh.metadata_location, earlier.snapshot_id) == 5 * rows


def test_avro_readers_kept_per_header_schema_read_exactly_what_pyiceberg_reads(iceberg_tables) -> None:
    """Inside a fast append, an Avro file's schema and reader tree are kept per header schema (a
    manifest list at each commit, 16 manifests at each tier-1 merge). Read that way, twice, every
    manifest and the manifest list give exactly what pyiceberg's own reader gives."""
    from pyiceberg.manifest import read_manifest_list

    table = iceberg_tables["trades"]
    for i in range(20):  # a tier-1 merge ran (16 one-file manifests read with kept readers)
        fast_commit.append(table, _batch(2, start=2 * i))

    def read_all() -> tuple[list, dict]:
        listed = list(read_manifest_list(table.io.new_input(table.current_snapshot().manifest_list)))
        entries = {m.manifest_path: [(e.status, e.snapshot_id, e.sequence_number, e.file_sequence_number,
                                      e.data_file.file_path, e.data_file.record_count,
                                      dict(e.data_file.lower_bounds), dict(e.data_file.upper_bounds))
                                     for e in m.fetch_manifest_entry(table.io, discard_deleted=False)]
                   for m in listed}
        return [(m.manifest_path, m.added_files_count, m.existing_files_count, m.sequence_number,
                 m.partitions) for m in listed], entries

    plain = read_all()  # outside an append: pyiceberg's AvroFile.__enter__
    token = fast_commit._ACTIVE.set(True)  # noqa: SLF001 - as inside fast_commit.append
    try:
        fast_commit._readers.clear()  # noqa: SLF001
        first, again = read_all(), read_all()  # built, then kept
        assert fast_commit._readers  # noqa: SLF001 - the second read used kept readers
    finally:
        fast_commit._ACTIVE.reset(token)  # noqa: SLF001
    assert first == plain and again == plain
    assert sum(len(v) for v in plain[1].values()) == 20


def _at(table: pa.Table, instants: list[datetime]) -> pa.Table:
    column = table.schema.get_field_index("exchange_timestamp")
    return table.set_column(column, table.schema.field(column), pa.array(instants, table.schema.field(column).type))


def test_a_batch_in_one_day_is_one_partition_as_pyiceberg_splits_it_and_a_batch_over_midnight_is_split(
        iceberg_tables) -> None:
    """Inside a fast append a batch whose rows all fall in one UTC day is written as that day's
    partition without pyiceberg's group-by and filter: the same partition key and the same rows in
    the same order as pyiceberg's own split. A batch that spans midnight is split by pyiceberg, and
    the table read back with plain DuckDB holds every row in the right day's data file."""
    from pyiceberg.io import pyarrow as pyarrow_io

    table = iceberg_tables["trades"]
    fast_commit.verify_pyiceberg()  # installs the stand-in (inert outside an append)
    midnight = datetime(2026, 3, 11, tzinfo=UTC)
    one_day = _at(_batch(4), [midnight - timedelta(hours=h) for h in (3, 1, 2, 4)])
    two_days = _at(_batch(5, start=4), [midnight - timedelta(microseconds=1), midnight, midnight + timedelta(hours=1),
                                        midnight - timedelta(hours=1), midnight])
    spec, schema = table.metadata.spec(), table.metadata.schema()

    def split(batch: pa.Table, active: bool) -> list[tuple]:
        token = fast_commit._ACTIVE.set(active)  # noqa: SLF001 - as inside fast_commit.append
        try:
            parts = list(pyarrow_io._determine_partitions(spec, schema, batch))  # noqa: SLF001
        finally:
            fast_commit._ACTIVE.reset(token)  # noqa: SLF001
        return [(p.partition_key.partition, p.partition_key.to_path(), p.arrow_table_partition) for p in parts]

    for batch in (one_day, two_days):
        ours, theirs = split(batch, True), split(batch, False)
        assert [p[:2] for p in ours] == [p[:2] for p in theirs]
        assert all(a[2].equals(b[2]) for a, b in zip(ours, theirs, strict=True))
    assert len(split(one_day, True)) == 1 and len(split(two_days, True)) == 2

    fast_commit.append(table, one_day)
    fast_commit.append(table, two_days)
    conn = connect()
    try:
        files = conn.execute(f"SELECT file_path FROM iceberg_metadata('{table.metadata_location}')").fetchall()
        rows = conn.execute(
            "SELECT source_offset, exchange_timestamp, filename FROM "
            f"iceberg_scan('{table.metadata_location}') ORDER BY source_offset").fetchall()
    finally:
        conn.close()
    assert len(files) == 3  # one for the one-day batch, two for the batch over midnight
    assert [r[0] for r in rows] == list(range(9))
    by_file: dict[str, set] = {}
    for _, instant, filename in rows:
        by_file.setdefault(filename, set()).add(instant.astimezone(UTC).date())
    assert sorted(len(days) for days in by_file.values()) == [1, 1, 1]
    assert all(f"exchange_date={next(iter(days))}" in name for name, days in by_file.items())


def test_a_concurrent_expiry_does_not_cost_the_append_a_retry_nor_leave_a_stray_metadata_file(
        iceberg_tables, catalog_config) -> None:
    """fast_commit swaps the catalog's metadata location on the metadata the table holds. When
    maintenance committed in between (an expiry: `main` unchanged), that swap changes no row; the
    metadata file it wrote is deleted and pyiceberg's own commit puts the append on top of the
    expiry at the first attempt, as it did before the shortcut."""
    from pathlib import Path

    table = iceberg_tables["trades"]
    writer = IcebergWriter(table, table_name="trades", policy=FAST)
    for i in range(3):
        writer.append(_batch(2, start=2 * i), properties=offsets_properties("g", {("t", 0): 2 * i + 2}))
    first = table.metadata.snapshots[0].snapshot_id
    maintenance = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    fast_commit.expire_snapshots(maintenance, [first])

    result = writer.append(_batch(2, start=6), properties=offsets_properties("g", {("t", 0): 8}))
    assert result.attempts == 1 and not result.already_committed
    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert fresh.metadata_location == table.metadata_location
    assert first not in {s.snapshot_id for s in fresh.metadata.snapshots}  # the expiry was kept
    assert len(fresh.metadata.snapshots) == 3
    assert sorted(fresh.scan().to_arrow().column("source_offset").to_pylist()) == list(range(8))
    assert _duckdb_count(fresh.metadata_location) == 8
    metadata_dir = Path(fresh.metadata_location.removeprefix("file://")).parent
    known = {fresh.metadata_location} | {entry.metadata_file for entry in fresh.metadata.metadata_log}
    on_disk = {f"file://{p}" for p in metadata_dir.glob("*.metadata.json")}
    assert on_disk <= {k if k.startswith("file://") else f"file://{k}" for k in known}, on_disk - known


def test_writer_retries_on_top_of_a_concurrent_commit(iceberg_tables, catalog_config, caplog) -> None:
    """A stale Table (another writer committed since it was loaded): the fast path does not let
    pyiceberg rebuild the append on its own (it cannot tell whether the rows are already there);
    the writer reloads, sees that the other commit does not cover its batch, and appends on top."""
    stale = iceberg_tables["trades"]
    other = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    other.append(_batch(3, start=0), snapshot_properties=offsets_properties("other", {("t", 1): 3}))
    with pytest.raises(CommitFailedException):
        fast_commit.append(stale, _batch(3, start=3), snapshot_properties=offsets_properties("g", {("t", 0): 6}))
    assert not any("concurrent update" in r.getMessage() for r in caplog.records)  # pyiceberg's retry is off
    result = IcebergWriter(stale, table_name="trades", policy=FAST).append(
        _batch(3, start=3), properties=offsets_properties("g", {("t", 0): 6}))
    assert result.attempts == 2 and not result.already_committed
    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    first, second = fresh.metadata.snapshots
    assert second.parent_snapshot_id == first.snapshot_id and second.sequence_number == 2
    assert fresh.scan().to_arrow().num_rows == 6 and _duckdb_count(fresh.metadata_location) == 6
    assert recorded_offsets(fresh, "g") == {("t", 0): 6} and recorded_offsets(fresh, "other") == {("t", 1): 3}
    assert recorded_offsets(fresh) == {("t", 0): 6, ("t", 1): 3}


@pytest.mark.parametrize("change", ["version", "source"])
def test_fast_commit_refuses_an_unaudited_pyiceberg(iceberg_tables, change, monkeypatch) -> None:
    import pyiceberg

    monkeypatch.setattr(fast_commit, "_verified", False)
    if change == "version":
        monkeypatch.setattr(pyiceberg, "__version__", "0.12.1")
    else:
        monkeypatch.setitem(fast_commit._SOURCE_HASHES, "pyiceberg.table.update:update_table_metadata", "0" * 16)  # noqa: SLF001
    table = iceberg_tables["trades"]
    with pytest.raises(fast_commit.FastCommitUnsupported):
        IcebergWriter(table, table_name="trades", policy=FAST).append(_batch())
    assert table.current_snapshot() is None  # nothing written, not retried


def test_fast_commit_does_not_parse_again_the_metadata_file_the_table_holds(iceberg_tables, catalog_config,
                                                                           monkeypatch) -> None:
    """The catalog's compare-and-swap base is the metadata file the table already holds
    (immutable by the Iceberg spec): it is not read again; any other location still is."""
    from pyiceberg.serializers import FromInputFile

    table = iceberg_tables["trades"]
    fast_commit.append(table, _batch(3, start=0))  # installs the hook
    reads: list[str] = []
    original = fast_commit._ORIGINAL_READ_METADATA  # noqa: SLF001

    def counting(input_file, encoding="utf-8"):  # noqa: ANN001, ANN202
        reads.append(input_file.location)
        return original(input_file, encoding)

    monkeypatch.setattr(fast_commit, "_ORIGINAL_READ_METADATA", counting)
    held = table.metadata_location
    fast_commit.append(table, _batch(3, start=3))
    assert held not in reads  # the commit's base came from memory
    # outside `append` the same file is read as usual
    FromInputFile.table_metadata(table.io.new_input(held))
    assert reads == [held]
    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert fresh.metadata == table.metadata and fresh.scan().to_arrow().num_rows == 6


def test_manifests_stay_few_over_many_commits_and_every_reader_sees_every_row(iceberg_tables, catalog_config) -> None:
    """One fast append per batch would add a manifest per commit (every later commit rewrites the
    manifest list, every DuckDB query opens every manifest); the tables merge them."""
    table = iceberg_tables["trades"]
    assert table.properties["commit.manifest-merge.enabled"] == "true"
    writer = IcebergWriter(table, table_name="trades", policy=FAST)
    appends, rows = 60, 2
    for i in range(appends):
        writer.append(_batch(rows, start=i * rows), properties=offsets_properties("g", {("t", 0): (i + 1) * rows}))
    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    manifests = fresh.current_snapshot().manifests(fresh.io)
    assert len(manifests) <= 20, len(manifests)  # not one per commit (60)
    assert len(fresh.metadata.snapshots) == appends
    assert sorted(fresh.scan().to_arrow().column("source_offset").to_pylist()) == list(range(appends * rows))
    assert _duckdb_count(fresh.metadata_location) == appends * rows
    assert recorded_offsets(fresh, "g") == {("t", 0): appends * rows}


def test_manifests_are_merged_in_tiers_so_each_entry_is_rewritten_at_most_twice(iceberg_tables, catalog_config) -> None:
    """pyiceberg's merge rewrites the part-filled merged manifest at nearly every commit once the
    small ones spill over it (8,675 entries written for 300 one-file appends); merged in tiers of
    min-count-to-merge (16), each entry is written once when added and at most twice more, the
    small manifests stay under 2 × 15, and every reader still sees every row exactly once."""
    table = iceberg_tables["trades"]
    fanout = int(table.properties["commit.manifest.min-count-to-merge"])
    target = int(table.properties["commit.manifest.target-size-bytes"])
    writer = IcebergWriter(table, table_name="trades", policy=FAST)
    appends = 300
    for i in range(appends):
        writer.append(_batch(1, start=i), properties=offsets_properties("g", {("t", 0): i + 1}))

    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    written = 0
    for snapshot in fresh.metadata.snapshots:  # entries in the manifests each commit wrote
        written += sum((m.added_files_count or 0) + (m.existing_files_count or 0)
                       for m in snapshot.manifests(fresh.io) if m.added_snapshot_id == snapshot.snapshot_id)
    assert written <= 3 * appends, written
    manifests = fresh.current_snapshot().manifests(fresh.io)
    assert sum(m.manifest_length < target for m in manifests) <= 2 * (fanout - 1), [m.manifest_length for m in manifests]
    assert sum((m.added_files_count or 0) + (m.existing_files_count or 0) for m in manifests) == appends
    assert sorted(fresh.scan().to_arrow().column("source_offset").to_pylist()) == list(range(appends))
    assert _duckdb_count(fresh.metadata_location) == appends
    assert _duckdb_count(fresh.metadata_location, fresh.metadata.snapshots[199].snapshot_id) == 200  # time travel


def test_existing_table_without_the_manifest_properties_gets_them(catalog_config) -> None:
    from catalog.engine.iceberg import MANIFEST_PROPERTIES, ensure_tables, partition_spec, table_schema

    catalog = load_catalog(catalog_config)
    catalog.create_namespace(catalog_config.namespace)
    old = catalog.create_table(f"{catalog_config.namespace}.trades", schema=table_schema("trades"),
                               partition_spec=partition_spec("trades"))
    try:
        assert "commit.manifest-merge.enabled" not in old.properties
        tables = ensure_tables(catalog, catalog_config.namespace)
        reloaded = catalog.load_table(f"{catalog_config.namespace}.trades")
        assert {k: reloaded.properties.get(k) for k in MANIFEST_PROPERTIES} == MANIFEST_PROPERTIES
        assert tables["trades"].properties["commit.manifest-merge.enabled"] == "true"
    finally:
        for name in ("trades", "quotes", "reference_data"):
            try:
                catalog.drop_table(f"{catalog_config.namespace}.{name}")
            except Exception:  # noqa: BLE001
                pass
        catalog.drop_namespace(catalog_config.namespace)


def test_fast_snapshot_removal_matches_pyiceberg(iceberg_tables) -> None:
    """`fast_commit._remove_snapshots` (sets instead of list scans) gives exactly the metadata
    pyiceberg's own RemoveSnapshotsUpdate handler gives, parents of survivors reset included."""
    from pyiceberg.table.update import RemoveSnapshotsUpdate, _TableMetadataUpdateContext

    table = iceberg_tables["trades"]
    for i in range(12):
        fast_commit.append(table, _batch(2, start=2 * i))
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    update = RemoveSnapshotsUpdate(snapshot_ids=[ids[0], ids[3], ids[4], ids[7]])  # 5 and 8 lose their parent
    ours = fast_commit._remove_snapshots(update, table.metadata, _TableMetadataUpdateContext())  # noqa: SLF001
    theirs = fast_commit._ORIGINAL_REMOVE_SNAPSHOTS(update, table.metadata, _TableMetadataUpdateContext())  # noqa: SLF001
    assert ours == theirs
    assert [s.snapshot_id for s in ours.snapshots] == [i for k, i in enumerate(ids) if k not in (0, 3, 4, 7)]
    assert ours.snapshot_by_id(ids[5]).parent_snapshot_id is None
    with pytest.raises(ValueError, match="does not exist"):
        fast_commit._remove_snapshots(RemoveSnapshotsUpdate(snapshot_ids=[12345]), table.metadata,  # noqa: SLF001
                                      _TableMetadataUpdateContext())


def test_metadata_files_hold_exactly_what_pyiceberg_would_write(iceberg_tables, catalog_config) -> None:
    """Appends and an expiry write the metadata JSON with the snapshot lists' JSON kept from the
    commit before and extended; each file must be byte for byte pydantic's JSON of the whole
    metadata (what pyiceberg itself writes)."""
    from catalog.engine.maintenance import expire_snapshots

    table = iceberg_tables["trades"]
    for i in range(8):
        fast_commit.append(table, _batch(2, start=2 * i),
                           snapshot_properties=offsets_properties("g", {("t", 0): 2 * i + 2}))
        with table.io.new_input(table.metadata_location).open() as f:
            written = f.read().decode()
        assert written == table.metadata.model_dump_json(exclude_none=True)
    cached = fast_commit._list_json[(str(table.metadata.table_uuid), "snapshots", True)]  # noqa: SLF001
    assert len(cached[0]) == 8 and all(a is b for a, b in zip(cached[0], table.metadata.snapshots, strict=True))
    expire_snapshots(table, retention=timedelta(0), retain_last=3)
    with table.io.new_input(table.metadata_location).open() as f:
        written = f.read().decode()
    reloaded = load_catalog(catalog_config).load_table(table.name())
    assert len(reloaded.metadata.snapshots) == 3 and reloaded.metadata.snapshots[0].parent_snapshot_id is None
    assert written == reloaded.metadata.model_dump_json(exclude_none=True)
    assert fast_commit._json_state["enabled"]  # noqa: SLF001


def test_manifest_lists_kept_as_written_are_what_their_files_read_back_and_no_parent_list_is_read(
        iceberg_tables, catalog_config, monkeypatch) -> None:
    """Inside a fast append the manifest list's records are kept as written, and the next append
    takes its parent's list from them instead of reading the file. Over 40 appends (two tier-1
    merges) each kept list must be exactly what pyiceberg reads from the file; no fast append after
    the first reads its parent's list from disk; a list another writer wrote (pyiceberg's own
    append) is read from its file; and every reader sees every row once."""
    from pyiceberg.manifest import read_manifest_list

    read_from_files: list[str] = []
    original = fast_commit._ORIGINAL_MANIFESTS  # noqa: SLF001

    def counting(io, manifest_list):  # noqa: ANN001, ANN202
        read_from_files.append(manifest_list)
        return original(io, manifest_list)

    monkeypatch.setattr(fast_commit, "_ORIGINAL_MANIFESTS", counting)
    table = iceberg_tables["trades"]
    writer = IcebergWriter(table, table_name="trades", policy=FAST)
    for i in range(40):
        writer.append(_batch(2, start=2 * i), properties=offsets_properties("g", {("t", 0): 2 * i + 2}))
        listed = table.current_snapshot().manifest_list
        kept = fast_commit._written_lists[listed]  # noqa: SLF001
        assert list(kept) == list(read_manifest_list(table.io.new_input(listed)))
    assert read_from_files == []  # the first append had no parent; every later one took the kept list
    assert any((m.existing_files_count or 0) > 0 for m in table.current_snapshot().manifests(table.io))  # merged

    table.append(_batch(2, start=80))  # another writer: pyiceberg's own append, its list not kept
    foreign = table.current_snapshot().manifest_list
    assert foreign not in fast_commit._written_lists  # noqa: SLF001
    writer.append(_batch(2, start=82), properties=offsets_properties("g", {("t", 0): 84}))
    assert read_from_files == [foreign]

    fresh = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert sorted(fresh.scan().to_arrow().column("source_offset").to_pylist()) == list(range(84))
    assert _duckdb_count(fresh.metadata_location) == 84
    assert _duckdb_count(fresh.metadata_location, fresh.metadata.snapshots[19].snapshot_id) == 40  # time travel


def _quote_batch(n: int = 3) -> pa.Table:
    now = datetime(2026, 3, 10, 1, tzinfo=UTC)
    rows = [{"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
             "bid_price": Decimal("1.000001"), "bid_volume": 1, "ask_price": Decimal("1.000002"), "ask_volume": 1,
             "ingestion_timestamp": now, "sequence_number": i, "source_partition": 0, "source_offset": i}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=arrow_schema("quotes"))


def _manifest_file(path) -> tuple[str, dict, list]:  # noqa: ANN001
    """(the header's Avro schema text, its other metadata, the records) of an Avro file."""
    import fastavro

    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        records = list(reader)
        meta = dict(reader.metadata)
    return meta.pop("avro.schema"), meta, records


def test_avro_writers_kept_per_schema_write_what_pyiceberg_writes(iceberg_tables, tmp_path) -> None:
    """A manifest's entry schema, writer tree and header JSON are kept per schema objects. Manifests
    and manifest lists written for two tables in turn (trades, quotes, trades again: the kept work
    must follow the schema) hold exactly the header and records pyiceberg's own writer gives the
    same entries, and a table whose schema and partition spec changed gets its new manifest entry
    schema (the new partition field) and its new table schema in its manifests."""
    from pyiceberg.io.pyarrow import PyArrowFileIO
    from pyiceberg.manifest import write_manifest, write_manifest_list
    from pyiceberg.types import LongType

    fast_commit.verify_pyiceberg()  # the hooks are in place
    io = PyArrowFileIO()
    for name, table in (("trades", iceberg_tables["trades"]), ("quotes", iceberg_tables["quotes"])):
        fast_commit.append(table, _batch(3) if name == "trades" else _quote_batch())
    hooks = [(owner, attr, ours, theirs) for owner, attr, ours, theirs in fast_commit._hooks()  # noqa: SLF001
             if attr in ("_with_partition", "__init__", "_write_header")]
    assert len(hooks) == 3

    def write(table, path) -> None:  # noqa: ANN001
        snapshot = table.current_snapshot()
        manifest = next(m for m in snapshot.manifests(table.io) if m.partition_spec_id == table.spec().spec_id)
        entries = manifest.fetch_manifest_entry(table.io)
        with write_manifest(format_version=2, spec=table.spec(), schema=table.schema(),
                            output_file=io.new_output(f"{path}.avro"), snapshot_id=snapshot.snapshot_id,
                            avro_compression="deflate") as w:
            for entry in entries:
                w.add_entry(entry)
        with write_manifest_list(format_version=2, output_file=io.new_output(f"{path}.list.avro"),
                                 snapshot_id=snapshot.snapshot_id, parent_snapshot_id=None,
                                 sequence_number=snapshot.sequence_number, avro_compression="deflate") as w:
            w.add_manifests([manifest])

    def swap(use_ours: bool) -> None:
        for owner, attr, ours, theirs in hooks:
            setattr(owner, attr, ours if use_ours else theirs)

    order = [("trades", iceberg_tables["trades"]), ("quotes", iceberg_tables["quotes"]),
             ("trades", iceberg_tables["trades"])]
    try:
        for i, (name, table) in enumerate(order):
            swap(False)
            write(table, tmp_path / f"{i}-{name}-pyiceberg")
            swap(True)
            write(table, tmp_path / f"{i}-{name}-kept")
            write(table, tmp_path / f"{i}-{name}-kept-again")
            for suffix in (".avro", ".list.avro"):
                theirs = _manifest_file(tmp_path / f"{i}-{name}-pyiceberg{suffix}")
                assert _manifest_file(tmp_path / f"{i}-{name}-kept{suffix}") == theirs
                assert _manifest_file(tmp_path / f"{i}-{name}-kept-again{suffix}") == theirs
        trades, quotes = (_manifest_file(tmp_path / f"{i}-{n}-kept.avro")[1]["schema"]
                          for i, n in ((0, "trades"), (1, "quotes")))
        assert "ask_price" in quotes and "ask_price" not in trades  # each table's manifests carry its schema

        table = iceberg_tables["trades"]  # a new partition field: a new manifest entry schema
        with table.update_schema() as update:
            update.add_column("k2_test_extra", LongType())
        with table.update_spec() as update:
            update.add_identity("symbol")
        fast_commit.append(table, _batch(3, start=3).append_column("k2_test_extra", pa.array([7] * 3, pa.int64())))
        write(table, tmp_path / "evolved-kept")
        swap(False)
        write(table, tmp_path / "evolved-pyiceberg")
        evolved = _manifest_file(tmp_path / "evolved-kept.avro")
        assert evolved == _manifest_file(tmp_path / "evolved-pyiceberg.avro")
        assert "k2_test_extra" in evolved[1]["schema"]
        partition = next(f for f in json.loads(evolved[0])["fields"][-1]["type"]["fields"] if f["name"] == "partition")
        assert [f["name"] for f in partition["type"]["fields"]] == ["exchange_date", "symbol"]
        assert all(r["data_file"]["partition"]["symbol"] == "BHP" for r in evolved[2])
    finally:
        swap(True)


def test_metadata_written_in_pieces_is_pydantics_json_through_consolidation_expiry_and_gzip(
        iceberg_tables, catalog_config) -> None:
    """The snapshot lists' JSON is kept as chunks (one per commit, joined into one past
    `_CHUNKS_KEPT`) and written piece by piece. Through more commits than that, an expiry (the list
    no longer extends the kept one) and more commits, every metadata file must be byte for byte
    pydantic's JSON of the table's metadata, read back by pyiceberg and plain DuckDB; a metadata
    file named for gzip is written compressed, with the same JSON inside."""
    import gzip

    from catalog.engine.maintenance import expire_snapshots

    def file_text(table) -> bytes:  # noqa: ANN001
        with table.io.new_input(table.metadata_location).open() as f:
            return f.read()

    table = iceberg_tables["trades"]
    key = (str(table.metadata.table_uuid), "snapshots", True)
    commits = fast_commit._CHUNKS_KEPT + 8  # noqa: SLF001
    for i in range(commits):
        fast_commit.append(table, _batch(1, start=i), snapshot_properties=offsets_properties("g", {("t", 0): i + 1}))
        assert file_text(table) == table.metadata.model_dump_json(exclude_none=True).encode()
        assert len(fast_commit._list_json[key][2]) <= fast_commit._CHUNKS_KEPT  # noqa: SLF001 - consolidated
    expire_snapshots(table, retention=timedelta(0), retain_last=5)
    assert file_text(table) == table.metadata.model_dump_json(exclude_none=True).encode()
    for i in range(commits, commits + 3):
        fast_commit.append(table, _batch(1, start=i), snapshot_properties=offsets_properties("g", {("t", 0): i + 1}))
        assert file_text(table) == table.metadata.model_dump_json(exclude_none=True).encode()
    reloaded = load_catalog(catalog_config).load_table(table.name())
    assert reloaded.metadata == table.metadata and len(reloaded.metadata.snapshots) == 8
    assert _duckdb_count(reloaded.metadata_location) == commits + 3

    # pyiceberg 0.12's catalogs name no metadata file .gz.metadata.json, another writer's may:
    # such a file is written compressed, with the same JSON inside
    target = table.io.new_output(f"{table.location()}/metadata/k2-test.gz.metadata.json")
    token = fast_commit._ACTIVE.set(True)  # noqa: SLF001 - as inside fast_commit.append
    try:
        fast_commit._write_table_metadata(table.metadata, target)  # noqa: SLF001
    finally:
        fast_commit._ACTIVE.reset(token)  # noqa: SLF001
    with table.io.new_input(target.location).open() as f:
        assert gzip.decompress(f.read()) == table.metadata.model_dump_json(exclude_none=True).encode()
    assert fast_commit._json_state["enabled"]  # noqa: SLF001
