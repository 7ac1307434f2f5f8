"""Compaction: a day partition's small files become few symbol-sorted files in one commit,
safe while consumers append (a conflicting commit retries; no row lost or doubled), and
snapshot expiry keeps the retention window."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from catalog.engine.iceberg import arrow_schema, load_catalog
from catalog.engine.maintenance import compact_partition, expire_snapshots, files_per_day
from queries.engine.generate import trades_for_day

DAY = dt.date(2024, 3, 12)  # UTC partition; trading day 2024-03-12 puts rows in 03-11 and 03-12


@pytest.fixture
def small_files(trades_table):  # type: ignore[no-untyped-def]
    rows = trades_for_day(DAY, symbols=("BHP", "CBA", "CSL"), rows_per_symbol=200, seed=3, schema=arrow_schema("trades"))
    rows = rows.sort_by("exchange_timestamp")  # consumer-like: time order, many small commits
    for start in range(0, rows.num_rows, 60):
        trades_table.append(rows.slice(start, 60))
    return rows


def _load(catalog_config):  # type: ignore[no-untyped-def]
    return lambda: load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")


def _keys(table):  # type: ignore[no-untyped-def]
    data = table.scan().to_arrow()
    return sorted(zip(data.column("source_partition").to_pylist(), data.column("source_offset").to_pylist(), strict=True))


def test_compaction_rewrites_a_day_into_one_symbol_sorted_file(small_files, catalog_config):
    load = _load(catalog_config)
    before = files_per_day(load())
    keys_before = _keys(load())
    result = compact_partition(load, DAY)
    after = files_per_day(load())
    assert before[DAY] > 5 and after[DAY] == result.files_after == 1
    assert after[dt.date(2024, 3, 11)] == before[dt.date(2024, 3, 11)]  # other days untouched
    assert _keys(load()) == keys_before
    task = next(t for t in load().scan().plan_files() if t.file.file_path.find("exchange_date=2024-03-12") > 0)
    data = pq.read_table(task.file.file_path.removeprefix("file://"))
    order = list(zip(data.column("symbol").to_pylist(), data.column("exchange_timestamp").to_pylist(), strict=True))
    assert order == sorted(order)
    assert load().current_snapshot().summary["k2.operation"] == "compaction"
    assert load().current_snapshot().summary["k2.compacted-days"] == "2024-03-12"


def test_concurrent_append_during_compaction_is_kept_and_not_doubled(small_files, catalog_config):
    load = _load(catalog_config)
    late = trades_for_day(DAY, symbols=("WBC",), rows_per_symbol=25, seed=9, schema=arrow_schema("trades"),
                          offset_base=10_000_000)
    appended = []

    def consumer_commits_first(attempt: int) -> None:
        if attempt == 1:  # another writer (a separate catalog client) commits while we rewrite
            load().append(late)
            appended.append(load().current_snapshot().snapshot_id)

    keys_before = _keys(load())
    result = compact_partition(load, DAY, before_commit=consumer_commits_first)
    table = load()
    assert _keys(table) == sorted(keys_before + list(zip(late.column("source_partition").to_pylist(),
                                                          late.column("source_offset").to_pylist(), strict=True)))
    assert len(_keys(table)) == len(set(_keys(table)))  # no row doubled
    assert table.current_snapshot().parent_snapshot_id == appended[0]  # committed on top of the append: retried
    assert result.snapshot_id == table.current_snapshot().snapshot_id


def test_compaction_whose_input_files_vanish_replans(small_files, catalog_config):
    load = _load(catalog_config)
    keys_before = _keys(load())

    def rival_compacts_first(attempt: int) -> None:
        if attempt == 1:
            compact_partition(load, DAY)  # removes the files our first attempt read

    result = compact_partition(load, DAY, before_commit=rival_compacts_first, min_files=1)
    assert result.attempts == 2
    assert _keys(load()) == keys_before
    assert files_per_day(load())[DAY] == 1


def test_expiry_keeps_the_retention_window(small_files, catalog_config):
    table = _load(catalog_config)()
    snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    middle = snaps[len(snaps) // 2]
    now = dt.datetime.fromtimestamp(middle.timestamp_ms / 1000, dt.UTC)
    result = expire_snapshots(table, retention=dt.timedelta(0), now=now)
    remaining = {s.snapshot_id for s in _load(catalog_config)().snapshots()}
    assert set(result.expired) == {s.snapshot_id for s in snaps if s.timestamp_ms < middle.timestamp_ms}
    assert middle.snapshot_id in remaining and snaps[-1].snapshot_id in remaining


@pytest.mark.django_db
def test_compact_tables_command(query_settings, small_files, catalog_config):
    out = io.StringIO()
    call_command("compact_tables", "--table", "trades", "--expire", "--retention-days", "0", stdout=out)
    text = out.getvalue()
    assert "2024-03-12:" in text and "→ 1 files" in text and "expired" in text
    assert files_per_day(_load(catalog_config)())[DAY] == 1


def test_compactions_do_not_pile_up_delete_only_manifests(small_files, catalog_config):
    load = _load(catalog_config)
    compact_partition(load, DAY)
    compact_partition(load, dt.date(2024, 3, 11))
    table = load()
    manifests = table.current_snapshot().manifests(table.io)
    delete_only = [m for m in manifests if not (m.has_added_files() or m.has_existing_files())]
    assert len(delete_only) <= 1  # only the latest commit's own record of what it removed
    assert all(m.added_snapshot_id == table.current_snapshot().snapshot_id for m in delete_only)
    assert sum(files_per_day(table).values()) == 2


def test_compact_table_rewrites_every_day_in_one_commit(small_files, catalog_config):
    from catalog.engine.maintenance import compact_table

    load = _load(catalog_config)
    keys_before = _keys(load())
    snapshots_before = len(load().snapshots())
    results = compact_table(load)
    table = load()
    assert sorted(r.day for r in results) == [dt.date(2024, 3, 11), DAY]
    assert len(table.snapshots()) == snapshots_before + 1
    assert set(files_per_day(table).values()) == {1}
    assert len(table.current_snapshot().manifests(table.io)) <= 2  # the new files' manifest + the deletions
    assert _keys(table) == keys_before


def _orphans_after_expiry() -> tuple[str, list[str]]:
    """Expire every snapshot but the current one, then list the orphan files with a dry run: (its output, the paths)."""
    call_command("compact_tables", "--table", "trades", "--expire", "--retention-days", "0", stdout=io.StringIO())
    dry = io.StringIO()
    call_command("compact_tables", "--table", "trades", "--remove-orphans", "--orphan-min-age-minutes", "0",
                 "--dry-run", stdout=dry)
    return dry.getvalue(), [line.strip() for line in dry.getvalue().splitlines() if line.startswith("  ")]


@pytest.mark.django_db
def test_compact_tables_command_removes_orphans_with_a_dry_run_first(query_settings, small_files, catalog_config):
    said, listed = _orphans_after_expiry()
    assert "would delete" in said and listed  # the replaced small files
    assert all(Path(urlparse(p).path).exists() for p in listed)
    out = io.StringIO()
    call_command("compact_tables", "--table", "trades", "--remove-orphans", "--orphan-min-age-minutes", "0", stdout=out)
    assert f"deleted {len(listed)} orphan file(s)" in out.getvalue()
    assert not any(Path(urlparse(p).path).exists() for p in listed)
    assert _load(catalog_config)().scan().to_arrow().num_rows == small_files.num_rows


@pytest.mark.django_db
def test_compact_tables_command_refuses_a_negative_orphan_age(query_settings, small_files):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="must not be negative"):
        call_command("compact_tables", "--table", "trades", "--remove-orphans", "--orphan-min-age-minutes", "-5",
                     stdout=io.StringIO())


def test_a_second_compaction_rewrites_only_the_small_files_that_arrived_since(small_files, trades_table, catalog_config):
    """Compacting today's partition every interval must not rewrite the whole day each time: the
    file an earlier compaction wrote stays, only the small files committed since are rewritten."""
    load = _load(catalog_config)
    compact_partition(load, DAY)
    (big,) = [t.file for t in load().scan().plan_files() if "exchange_date=2024-03-12" in t.file.file_path]
    late = trades_for_day(DAY, symbols=("WBC",), rows_per_symbol=90, seed=11, schema=arrow_schema("trades"),
                          offset_base=10_000)
    late = late.filter(pc.equal(pc.strftime(late.column("exchange_timestamp"), "%Y-%m-%d"), DAY.isoformat()))
    for start in range(0, late.num_rows, 30):
        trades_table.append(late.slice(start, 30))
    keys_before = _keys(load())
    result = compact_partition(load, DAY, small_file_bytes=big.file_size_in_bytes)
    files = {t.file.file_path: t.file for t in load().scan().plan_files() if "exchange_date=2024-03-12" in t.file.file_path}
    assert result.files_before == -(-late.num_rows // 30) and result.files_after == 1 and result.rows == late.num_rows
    assert big.file_path in files and len(files) == 2  # the earlier compaction's file is untouched
    assert _keys(load()) == keys_before
    assert compact_partition(load, DAY, small_file_bytes=big.file_size_in_bytes).skipped  # nothing small left


@pytest.mark.django_db
def test_compact_tables_takes_the_orphan_age_from_k2_orphan_min_age_minutes(query_settings, small_files, catalog_config):
    """Without --orphan-min-age-minutes the command uses the setting the beat task uses (not a fixed 60)."""
    import dataclasses
    import os
    import time

    _, listed = _orphans_after_expiry()
    assert listed
    ninety_minutes_ago = time.time() - 90 * 60
    for path in listed:
        os.utime(urlparse(path).path, (ninety_minutes_ago, ninety_minutes_ago))

    query_settings.K2 = dataclasses.replace(query_settings.K2, orphan_min_age_minutes=120)
    kept = io.StringIO()
    call_command("compact_tables", "--table", "trades", "--remove-orphans", stdout=kept)
    assert "deleted 0 orphan file(s)" in kept.getvalue()
    assert all(Path(urlparse(p).path).exists() for p in listed)

    query_settings.K2 = dataclasses.replace(query_settings.K2, orphan_min_age_minutes=60)
    out = io.StringIO()
    call_command("compact_tables", "--table", "trades", "--remove-orphans", stdout=out)
    assert f"deleted {len(listed)} orphan file(s)" in out.getvalue()
    assert not any(Path(urlparse(p).path).exists() for p in listed)


@pytest.mark.django_db
def test_compact_tables_refuses_a_negative_retention(query_settings, small_files):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--retention-days must not be negative"):
        call_command("compact_tables", "--table", "trades", "--expire", "--retention-days", "-1", stdout=io.StringIO())
