"""The periodic maintenance task compacts small files and expires snapshots, but never expires the
snapshot that records a consumer group's Kafka offsets (exactly-once across restarts depends on it)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from catalog.engine.iceberg import arrow_schema
from catalog.engine.maintenance import files_per_day
from catalog.engine.writer import offsets_properties, recorded_offsets
from catalog.services import tables_maintain
from queries.engine.generate import trades_for_day


@pytest.mark.django_db
def test_maintenance_compacts_expires_and_keeps_the_offset_snapshot(k2_settings, catalog_config, iceberg_tables) -> None:  # type: ignore[no-untyped-def]
    table = iceberg_tables["trades"]
    day = dt.date(2014, 3, 10)
    schema = arrow_schema("trades")
    topic = "market.equities.trades.asx"
    # Eight small appends of the same day, the first one recording the group's offsets (so it is
    # older than the newest snapshots expiry keeps anyway).
    for i in range(8):
        batch = trades_for_day(day, symbols=["BHP", "RIO"], rows_per_symbol=25, seed=i, schema=schema,
                               offset_base=i * 50)
        props = offsets_properties("k2-iceberg-writer-trades", {(topic, 0): (i + 1) * 50}) if i == 0 else {}
        table.append(batch, snapshot_properties=props)
    # ...then a plain append without offsets (another writer, say).
    table.append(trades_for_day(day, symbols=["CBA"], rows_per_symbol=10, seed=99, schema=schema, offset_base=1000))
    table.refresh()
    before = files_per_day(table)  # a Sydney session spans two UTC days: both partitions get 9 files
    assert len(before) == 2 and all(n == 9 for n in before.values())
    rows_before = table.scan().to_arrow().num_rows

    k2_settings.K2 = dataclasses.replace(k2_settings.K2, snapshot_retention_hours=1)
    report = tables_maintain(namespace=catalog_config.namespace, retention=dt.timedelta(0), min_files=8,
                             data_types=("trades",))

    table.refresh()
    assert report["trades"]["days_compacted"] == 2
    assert all(n == 1 for n in files_per_day(table).values())
    assert table.scan().to_arrow().num_rows == rows_before  # nothing lost or doubled
    assert report["trades"]["snapshots_expired"] > 0
    # The offsets survive expiry even though their snapshot is older than the retention window.
    assert recorded_offsets(table, "k2-iceberg-writer-trades") == {(topic, 0): 50}


def _snapshot_ids_by_age(table) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    return [(s.snapshot_id, s.timestamp_ms) for s in sorted(table.snapshots(), key=lambda s: s.timestamp_ms)]


def test_thinning_keeps_recent_snapshots_and_one_per_interval_before_them(iceberg_tables) -> None:  # type: ignore[no-untyped-def]
    """Twelve commits spread over 12 simulated minutes: the last 3 minutes keep every snapshot,
    the older ones keep the newest per 5-minute bucket, the offset snapshot survives, and no row
    goes (expiry removes snapshots, not data)."""
    from catalog.engine.maintenance import expire_snapshots

    table = iceberg_tables["trades"]
    day = dt.date(2014, 3, 10)
    schema = arrow_schema("trades")
    for i in range(12):
        batch = trades_for_day(day, symbols=["BHP"], rows_per_symbol=5, seed=i, schema=schema, offset_base=i * 5)
        props = offsets_properties("g", {("t", 0): (i + 1) * 5}) if i == 0 else {}
        table.append(batch, snapshot_properties=props)
    rows_before = table.scan().to_arrow().num_rows
    snaps = _snapshot_ids_by_age(table)
    first_ms = snaps[0][1]
    # Pretend commit i happened at minute i; `now` is half a minute after the last one.
    minute = 60_000
    fake_ms = {sid: first_ms + i * minute for i, (sid, _) in enumerate(snaps)}
    bucket = {sid: ms // (5 * minute) for sid, ms in fake_ms.items()}

    class Shifted:  # the real table, with commit times spread over minutes (real commits are ms apart)
        def __init__(self, t) -> None:  # type: ignore[no-untyped-def]
            self._t = t

        def snapshots(self):  # type: ignore[no-untyped-def]
            return [s.model_copy(update={"timestamp_ms": fake_ms[s.snapshot_id]}) for s in self._t.snapshots()]

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self._t, name)

    now = dt.datetime.fromtimestamp((first_ms + 11 * minute + 30_000) / 1000, dt.UTC)
    result = expire_snapshots(Shifted(table), retention=dt.timedelta(hours=1), retain_last=1, now=now,
                              full_detail=dt.timedelta(minutes=3), thin_interval=dt.timedelta(minutes=5))
    table.refresh()
    left = {s.snapshot_id for s in table.snapshots()}
    ids = [sid for sid, _ in snaps]
    recent = {sid for sid in ids if fake_ms[sid] >= first_ms + 11 * minute + 30_000 - 3 * minute}
    older = [sid for sid in ids if sid not in recent]
    newest_per_bucket = {max((s for s in older if bucket[s] == b), key=lambda s: fake_ms[s])
                         for b in {bucket[s] for s in older}}
    assert recent <= left  # full detail
    assert left - recent == newest_per_bucket | {ids[0]}  # thinned, plus the offset snapshot
    assert set(result.expired) == set(ids) - left and len(result.expired) > 0
    assert recorded_offsets(table, "g") == {("t", 0): 5}
    assert table.scan().to_arrow().num_rows == rows_before


def test_expiry_of_hundreds_of_snapshots_is_one_commit(iceberg_tables) -> None:  # type: ignore[no-untyped-def]
    """pyiceberg's own ExpireSnapshots deep-copies the metadata twice per id (O(N²)); the fast path
    must still remove exactly the requested snapshots and leave a readable table."""
    from catalog.engine.maintenance import expire_snapshots
    from catalog.engine.writer import IcebergWriter

    table = iceberg_tables["trades"]
    writer = IcebergWriter(table, table_name="trades")
    day = dt.date(2014, 3, 10)
    schema = arrow_schema("trades")
    batch = trades_for_day(day, symbols=["BHP"], rows_per_symbol=1, seed=1, schema=schema, offset_base=0)
    for i in range(150):
        writer.append(batch, properties=offsets_properties("g", {("t", 0): i + 1}) if i == 149 else None)
    result = expire_snapshots(table, retention=dt.timedelta(0), retain_last=3)
    table.refresh()
    assert len(result.expired) == 147 and len(table.snapshots()) == 3
    assert table.scan().to_arrow().num_rows == 150 * batch.num_rows
    assert recorded_offsets(table, "g") == {("t", 0): 150}


def test_orphan_files_are_removed_once_old_and_the_table_still_reads_everything(iceberg_tables, catalog_config) -> None:  # type: ignore[no-untyped-def]
    """Compaction replaces files and expiry forgets the snapshots that listed them; nothing deletes
    those files (pyiceberg has no orphan cleanup). They, the debris of a failed commit and old
    metadata files go; files of a commit possibly in progress (too young) and every file the table
    refers to stay."""
    import os
    import time
    from pathlib import Path
    from urllib.parse import urlparse

    from catalog.engine.maintenance import (
        compact_table,
        expire_snapshots,
        referenced_files,
        remove_orphan_files,
    )
    from k2core.duckdb_conn import connect

    table = iceberg_tables["trades"]
    day = dt.date(2014, 3, 10)
    schema = arrow_schema("trades")
    for i in range(6):
        table.append(trades_for_day(day, symbols=["BHP", "RIO"], rows_per_symbol=10, seed=i, schema=schema,
                                    offset_base=i * 20))
    load = lambda: table.catalog.load_table(f"{catalog_config.namespace}.trades")  # noqa: E731
    before = {urlparse(p).path for p in referenced_files(load())}
    compact_table(load, min_files=2)
    table = load()
    expire_snapshots(table, retention=dt.timedelta(0), retain_last=1)
    table = load()
    rows = table.scan().to_arrow().num_rows
    live = {urlparse(p).path for p in referenced_files(table)}
    replaced = {p for p in before - live if "/data/" in p}
    assert replaced and all(Path(p).exists() for p in replaced)  # still on disk after expiry

    data_dir = Path(urlparse(table.location()).path) / "data"
    failed = data_dir / "failed-commit-leftover.parquet"
    failed.write_bytes(b"PAR1 debris")
    in_progress = data_dir / "commit-in-progress.parquet"
    in_progress.write_bytes(b"PAR1 being written")
    hour_ago = time.time() - 3600
    for path in [*replaced, failed]:
        os.utime(path, (hour_ago, hour_ago))

    dry = remove_orphan_files(table, older_than=dt.timedelta(minutes=30), dry_run=True)
    assert {urlparse(p).path for p in dry.orphans} >= {*replaced, str(failed)} and failed.exists()
    result = remove_orphan_files(table, older_than=dt.timedelta(minutes=30))
    removed = {urlparse(p).path for p in result.orphans}
    assert removed >= {*replaced, str(failed)} and not removed & live
    assert not failed.exists() and not any(Path(p).exists() for p in replaced)
    assert in_progress.exists() and result.too_young >= 1
    assert all(Path(p).exists() for p in live)
    fresh = load()
    assert fresh.scan().to_arrow().num_rows == rows
    con = connect()
    try:
        assert con.execute(f"SELECT count(*) FROM iceberg_scan('{fresh.metadata_location}')").fetchone()[0] == rows
    finally:
        con.close()


def test_files_an_unexpired_snapshot_reads_are_kept_and_time_travel_still_works(iceberg_tables, catalog_config) -> None:  # type: ignore[no-untyped-def]
    import os
    import time
    from pathlib import Path
    from urllib.parse import urlparse

    from catalog.engine.maintenance import compact_table, remove_orphan_files

    table = iceberg_tables["trades"]
    day = dt.date(2014, 3, 10)
    schema = arrow_schema("trades")
    for i in range(4):
        table.append(trades_for_day(day, symbols=["BHP"], rows_per_symbol=10, seed=i, schema=schema, offset_base=i * 10))
    load = lambda: table.catalog.load_table(f"{catalog_config.namespace}.trades")  # noqa: E731
    before_compaction = load().current_snapshot().snapshot_id
    rows = load().scan().to_arrow().num_rows
    compact_table(load, min_files=2)  # no expiry: the old snapshots still list the small files
    data_dir = Path(urlparse(load().location()).path) / "data"
    hour_ago = time.time() - 3600
    for path in data_dir.rglob("*"):
        if path.is_file():
            os.utime(path, (hour_ago, hour_ago))
    result = remove_orphan_files(load(), older_than=dt.timedelta(minutes=30))
    assert not [p for p in result.orphans if "/data/" in p]
    assert load().scan(snapshot_id=before_compaction).to_arrow().num_rows == rows


def test_expiry_keeps_the_newest_offset_snapshot_of_every_partition(iceberg_tables) -> None:  # type: ignore[no-untyped-def]
    """A batch records only the partitions it read: the snapshot holding partition 1's last offset
    must survive although newer snapshots record partition 0 (and a restart needs both)."""
    from catalog.engine.maintenance import expire_snapshots
    from catalog.engine.writer import IcebergWriter

    table = iceberg_tables["trades"]
    writer = IcebergWriter(table, table_name="trades")
    batch = trades_for_day(dt.date(2014, 3, 11), symbols=["BHP"], rows_per_symbol=1, seed=2,
                           schema=arrow_schema("trades"), offset_base=0)
    writer.append(batch, properties=offsets_properties("g", {("t", 0): 5, ("t", 1): 7}))
    for offset in range(6, 10):
        writer.append(batch, properties=offsets_properties("g", {("t", 0): offset}))
    writer.append(batch)  # no offsets (as a compaction)
    result = expire_snapshots(table, retention=dt.timedelta(0), retain_last=1)
    table.refresh()
    assert len(result.expired) == 3 and len(table.snapshots()) == 3
    assert recorded_offsets(table, "g") == {("t", 0): 9, ("t", 1): 7}
