"""Reads for the dashboard's market charts: OHLCV bars of one symbol and day in exchange time,
and where sequence gaps fall on that day's timeline.

A gap row (Postgres) knows the Kafka position of the message that arrived after the hole; that
message is in the table with its `source_partition`/`source_offset`, so its exchange time places
the gap on the timeline (not the wall-clock time it was detected, which for a replay is years later).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from catalog.engine.exchanges import Exchange
from queries.engine.market import MarketQueries, range_clause, scan_expr
from queries.engine.timeutil import exchange_zone, local_date_range


def _registered(exchange: Exchange | str) -> Exchange:
    """The registry's exchange for a code (BadQuery naming the known ones otherwise)."""
    if isinstance(exchange, Exchange):
        return exchange
    from queries.selectors import exchange as registered

    return registered(exchange)


def local_ms(instant: dt.datetime, zone: dt.tzinfo) -> int:
    """Epoch milliseconds of the exchange-local wall time, for a chart drawn in UTC mode: the
    axis then reads exchange time whatever the browser's time zone."""
    wall = instant.astimezone(zone).replace(tzinfo=dt.UTC)
    return int(wall.timestamp() * 1000)


def candles(*, engine: MarketQueries, symbol: str, day: dt.date, interval: str = "5m",
            exchange: Exchange | str = "ASX") -> dict[str, Any]:
    """Bars as [t_local_ms, open, close, low, high, volume] (prices as decimal strings)."""
    exchange = _registered(exchange)
    zone = exchange_zone(exchange)
    result = engine.ohlcv(interval=interval, rng=local_date_range(day, exchange), symbols=[symbol], exchange=exchange)
    bars = [[local_ms(r["bar_start"], zone), str(r["open"]), str(r["close"]), str(r["low"]), str(r["high"]),
             int(r["volume"])] for r in result.table.to_pylist()]
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=zone)
    return {"symbol": symbol, "day": day.isoformat(), "interval": interval, "zone": zone.key,
            "zone_abbr": noon.tzname(), "bars": bars, "snapshot_id": result.snapshot_id}


def gap_times(*, engine: MarketQueries, data_type: str, day: dt.date, gaps: Sequence[dict[str, Any]],
              exchange: Exchange | str = "ASX") -> list[dict[str, Any]]:
    """The gaps whose next message is in `data_type`'s table on the exchange-local `day`, each
    with `t` (local ms) and `at` (UTC ISO) of that message. Gaps need symbol, partition, offset."""
    exchange = _registered(exchange)
    wanted = [(str(g["symbol"]), int(g["partition"]), int(g["offset"])) for g in gaps]
    if not wanted:
        return []
    resolved = engine.source.resolve(data_type, None)
    if resolved.snapshot_id is None:
        return []
    zone = exchange_zone(exchange)
    values = ", ".join(f"({p}, {o})" for _, p, o in wanted)  # integers only: nothing to quote
    sql = (f"SELECT t.symbol, t.source_partition, t.source_offset, t.exchange_timestamp "
           f"FROM (SELECT * FROM {scan_expr(resolved)} WHERE {range_clause(local_date_range(day, exchange))}) t "
           f"JOIN (VALUES {values}) AS w(p, o) ON t.source_partition = w.p AND t.source_offset = w.o")
    found = {(r["symbol"], r["source_partition"], r["source_offset"]): r["exchange_timestamp"]
             for r in engine._arrow(sql).to_pylist()}
    placed = []
    for gap, key in zip(gaps, wanted, strict=True):
        at = found.get(key)
        if at is not None:
            placed.append({**gap, "t": local_ms(at, zone), "at": at.astimezone(dt.UTC).isoformat()})
    return placed
