"""OHLCV bars, VWAP and counts equal an independent pure-Python computation (ADR #001:
"Aggregation queries (OHLCV) produce correct results")."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest

from queries.engine.errors import BadQuery
from queries.engine.timeutil import make_range
from tests.query.conftest import UTC, trade_rows

SYDNEY = ZoneInfo("Australia/Sydney")
WIDTH = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}


def expected_bars(rows: list[dict], interval: str) -> list[dict]:
    """Plain Python: bucket, sort by (timestamp, sequence), aggregate with Decimal."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        ts = r["exchange_timestamp"]
        if interval == "1d":
            local = ts.astimezone(SYDNEY)
            start = dt.datetime(local.year, local.month, local.day, tzinfo=SYDNEY).astimezone(UTC)
        else:
            epoch = int(ts.timestamp())
            start = dt.datetime.fromtimestamp(epoch - epoch % WIDTH[interval], tz=UTC)
        groups[(r["symbol"], start)].append(r)
    bars = []
    for (symbol, start), members in sorted(groups.items()):
        members.sort(key=lambda r: (r["exchange_timestamp"], r["sequence_number"]))
        volume = sum(r["volume"] for r in members)
        notional = sum(r["price"] * r["volume"] for r in members)
        bars.append({"symbol": symbol, "bar_start": start, "open": members[0]["price"],
                     "high": max(r["price"] for r in members), "low": min(r["price"] for r in members),
                     "close": members[-1]["price"], "volume": volume,
                     "vwap": (notional / Decimal(volume)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP),
                     "trade_count": len(members)})
    return bars


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h", "1d"])
def test_ohlcv_equals_independent_computation(engine, generated, interval):
    rng = make_range(date=dt.date(2024, 3, 12))
    rows = [r for r in generated.to_pylist() if rng.start <= r["exchange_timestamp"] < rng.end
            and r["symbol"] in ("BHP", "CSL")]
    result = engine.ohlcv(interval=interval, rng=rng, symbols=["BHP", "CSL"])
    got = result.table.to_pylist()
    want = expected_bars(rows, interval)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in w} == w


def test_known_bar_values_tie_broken_by_sequence_number(engine, trades_table):
    t0 = dt.datetime(2024, 3, 12, 0, 0, 10, tzinfo=UTC)
    trades_table.append(trade_rows([
        # same instant: open is the lower sequence number, although it arrives second
        {"symbol": "BHP", "ts": t0, "price": "10.000001", "volume": 3, "seq": 6},
        {"symbol": "BHP", "ts": t0, "price": "10.000000", "volume": 1, "seq": 5},
        {"symbol": "BHP", "ts": t0 + dt.timedelta(seconds=20), "price": "12.500000", "volume": 2, "seq": 7},
        {"symbol": "BHP", "ts": t0 + dt.timedelta(seconds=40), "price": "9.999999", "volume": 1, "seq": 8},
        # the next minute has no trade; the one after has one
        {"symbol": "BHP", "ts": t0 + dt.timedelta(minutes=2), "price": "11.000000", "volume": 5, "seq": 9},
    ]))
    rng = make_range(start=dt.datetime(2024, 3, 12, tzinfo=UTC), end=dt.datetime(2024, 3, 12, 1, tzinfo=UTC))
    bars = engine.ohlcv(interval="1m", rng=rng, symbols=["BHP"]).table.to_pylist()
    assert [b["bar_start"] for b in bars] == [dt.datetime(2024, 3, 12, 0, 0, tzinfo=UTC),
                                              dt.datetime(2024, 3, 12, 0, 2, tzinfo=UTC)]  # empty minute absent
    first = bars[0]
    assert first["open"] == Decimal("10.000000")
    assert first["close"] == Decimal("9.999999")
    assert first["high"] == Decimal("12.500000") and first["low"] == Decimal("9.999999")
    assert first["volume"] == 7 and first["trade_count"] == 4
    # (10*1 + 10.000001*3 + 12.5*2 + 9.999999*1) / 7 = 75.000002 / 7 = 10.714286 (half up)
    assert first["vwap"] == Decimal("10.714286")
    assert all(isinstance(first[k], Decimal) for k in ("open", "high", "low", "close", "vwap"))


def test_unknown_interval_is_refused(engine, generated):
    with pytest.raises(BadQuery, match="interval '2m' is not supported"):
        engine.ohlcv(interval="2m", rng=make_range(date=dt.date(2024, 3, 12)), symbols=["BHP"])


def test_exchange_date_is_the_sydney_day_as_a_utc_range():
    rng = make_range(date=dt.date(2024, 3, 12))  # AEDT, UTC+11
    assert rng.start == dt.datetime(2024, 3, 11, 13, tzinfo=UTC)
    assert rng.end == dt.datetime(2024, 3, 12, 13, tzinfo=UTC)
    winter = make_range(date=dt.date(2024, 7, 1))  # AEST, UTC+10
    assert winter.start == dt.datetime(2024, 6, 30, 14, tzinfo=UTC)


def test_naive_instant_is_refused_with_advice():
    with pytest.raises(BadQuery, match="has no UTC offset"):
        make_range(start=dt.datetime(2024, 3, 12), end=dt.datetime(2024, 3, 13))
