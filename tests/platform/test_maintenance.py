"""The periodic maintenance task compacts small files and expires snapshots, but never expires the
snapshot that records a consumer group's Kafka offsets (exactly-once across restarts depends on it)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from catalog.engine.iceberg import arrow_schema
from catalog.engine.maintenance import files_per_day
from catalog.engine.writer import offsets_properties, recorded_offsets
from catalog.tasks import maintain_tables
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
    report = maintain_tables(namespace=catalog_config.namespace, retention=dt.timedelta(0), min_files=8,
                             data_types=("trades",))

    table.refresh()
    assert report["trades"]["days_compacted"] == 2
    assert all(n == 1 for n in files_per_day(table).values())
    assert table.scan().to_arrow().num_rows == rows_before  # nothing lost or doubled
    assert report["trades"]["snapshots_expired"] > 0
    # The offsets survive expiry even though their snapshot is older than the retention window.
    assert recorded_offsets(table, "k2-iceberg-writer-trades") == {(topic, 0): 50}
