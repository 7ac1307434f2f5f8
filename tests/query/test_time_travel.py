"""Time travel on every query: `as_of` a snapshot id or an instant (ADR #001 Step 9)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from catalog.engine.maintenance import expire_snapshots
from queries.engine.errors import NotFound
from queries.engine.timeutil import make_range
from tests.query.conftest import UTC, trade_rows

T0 = dt.datetime(2024, 3, 12, 1, tzinfo=UTC)
RANGE = make_range(start=dt.datetime(2024, 3, 12, tzinfo=UTC), end=dt.datetime(2024, 3, 13, tzinfo=UTC))


def _append(table, n, offset):  # type: ignore[no-untyped-def]
    table.append(trade_rows([{"symbol": "BHP", "ts": T0 + dt.timedelta(seconds=offset + i), "price": "10",
                              "volume": 1, "seq": offset + i} for i in range(n)], offset_base=offset))


def test_as_of_snapshot_id_returns_the_earlier_row_count(engine, trades_table):
    _append(trades_table, 3, 0)
    first = trades_table.current_snapshot().snapshot_id
    _append(trades_table, 4, 100)
    assert engine.trades(rng=RANGE, symbols=["BHP"]).table.num_rows == 7
    earlier = engine.trades(rng=RANGE, symbols=["BHP"], as_of=first)
    assert earlier.table.num_rows == 3
    assert earlier.snapshot_id == first
    bars = engine.ohlcv(interval="1d", rng=RANGE, symbols=["BHP"], as_of=first).table.to_pylist()
    assert sum(b["trade_count"] for b in bars) == 3


def test_as_of_instant_reads_the_snapshot_current_then(engine, trades_table):
    _append(trades_table, 2, 0)
    time.sleep(0.05)
    between = dt.datetime.now(UTC)
    time.sleep(0.05)
    _append(trades_table, 5, 100)
    assert engine.trades(rng=RANGE, as_of=between).table.num_rows == 2
    with pytest.raises(NotFound, match="no snapshot of trades existed"):
        engine.trades(rng=RANGE, as_of=dt.datetime(2000, 1, 1, tzinfo=UTC))


def test_snapshots_list_their_summaries(engine, trades_table):
    _append(trades_table, 2, 0)
    _append(trades_table, 3, 100)
    snaps = engine.snapshots("trades")
    assert len(snaps) == 2
    assert snaps[0].parent_id is None and snaps[1].parent_id == snaps[0].snapshot_id
    assert snaps[1].operation == "append"
    assert snaps[1].summary["total-records"] == "5" and snaps[0].summary["added-records"] == "2"


def test_expired_snapshot_is_a_clear_not_found(engine, trades_table, catalog, catalog_config):
    _append(trades_table, 2, 0)
    old = trades_table.current_snapshot().snapshot_id
    _append(trades_table, 2, 100)
    expire_snapshots(catalog.load_table(f"{catalog_config.namespace}.trades"), retention=dt.timedelta(0))
    with pytest.raises(NotFound, match="not in the table's history"):
        engine.trades(rng=RANGE, as_of=old)
    assert engine.trades(rng=RANGE).table.num_rows == 4


def test_cursor_pages_keep_reading_the_first_pages_snapshot(engine, trades_table):
    _append(trades_table, 5, 0)
    page = engine.trades(rng=RANGE, limit=3)
    _append(trades_table, 10, 100)  # lands between pages
    rest = engine.trades(rng=RANGE, limit=100, cursor=page.next_cursor)
    assert rest.table.num_rows == 2 and rest.snapshot_id == page.snapshot_id


def test_queries_load_the_table_again_only_when_its_metadata_changed(catalog, catalog_config, trades_table):
    """Metadata files are immutable: a query asks the catalog for the current metadata location and
    parses the metadata (megabytes for a long-running table) only when a commit has changed it."""
    from queries.engine.connection import EngineConfig
    from queries.engine.market import MarketQueries
    from queries.engine.source import IcebergSource

    loads: list[str] = []
    real = catalog.load_table
    catalog.load_table = lambda identifier: (loads.append(identifier), real(identifier))[1]
    engine = MarketQueries(IcebergSource(catalog, catalog_config.namespace), EngineConfig(threads=2))
    _append(trades_table, 3, 0)
    assert engine.trades(rng=RANGE, symbols=["BHP"]).table.num_rows == 3
    assert engine.trades(rng=RANGE, symbols=["BHP"]).table.num_rows == 3
    assert len(loads) == 1
    _append(trades_table, 4, 100)  # another writer commits: a new metadata file
    assert engine.trades(rng=RANGE, symbols=["BHP"]).table.num_rows == 7
    assert len(loads) == 2
