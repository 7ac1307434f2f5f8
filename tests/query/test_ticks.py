"""Trades and quotes: ranges, keyset cursor pagination, limit caps, order."""

from __future__ import annotations

import datetime as dt

import pytest

from queries.engine.errors import BadQuery
from queries.engine.market import TICK_ORDER
from queries.engine.timeutil import make_range


def test_cursor_pages_cover_every_row_once_in_order(engine, generated):
    rng = make_range(date=dt.date(2024, 3, 12))
    want = sorted((r for r in generated.to_pylist() if rng.start <= r["exchange_timestamp"] < rng.end),
                  key=lambda r: tuple(r[c] for c in TICK_ORDER))
    got, cursor, pages = [], None, 0
    while True:
        page = engine.trades(rng=rng, limit=250, cursor=cursor)
        got.extend(page.table.to_pylist())
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == -(-len(want) // 250)
    assert [(r["source_partition"], r["source_offset"]) for r in got] == \
           [(r["source_partition"], r["source_offset"]) for r in want]


def test_last_100_trades_of_a_symbol_newest_first(engine, generated):
    rng = make_range(date=dt.date(2024, 3, 11), end_date=dt.date(2024, 3, 13))
    page = engine.trades(rng=rng, symbols=["NAB"], limit=100, order="desc")
    stamps = page.table.column("exchange_timestamp").to_pylist()
    nab = sorted(r["exchange_timestamp"] for r in generated.to_pylist() if r["symbol"] == "NAB")
    assert stamps == nab[::-1][:100]
    assert set(page.table.column("symbol").to_pylist()) == {"NAB"}


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": 0}, "limit=0 is out of range"),
    ({"limit": 10**7}, "out of range"),
    ({"cursor": "not-a-cursor"}, "cursor is not valid"),
    ({"symbols": ["BHP'; DROP TABLE x; --"]}, "is not valid"),
    ({"order": "sideways"}, "order must be asc"),
])
def test_bad_parameters_are_refused_with_the_reason(engine, generated, kwargs, message):
    with pytest.raises(BadQuery, match=message):
        engine.trades(rng=make_range(date=dt.date(2024, 3, 12)), **kwargs)


def test_quotes_of_an_empty_table_are_an_empty_page(engine, generated):
    page = engine.quotes(rng=make_range(date=dt.date(2024, 3, 12)), symbols=["BHP"])
    assert page.table.num_rows == 0 and page.next_cursor is None and "bid_price" in page.table.column_names
