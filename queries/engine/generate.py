"""A small deterministic trade generator for tests and benchmarks (vectorised numpy/pyarrow).

It writes the shape of real ASX data (10:00–16:00 Sydney sessions, so each trading day
spans two UTC dates) without depending on the producer's sample generator. Prices are
exact decimals built from integer micro-units, never floats.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

SYDNEY = ZoneInfo("Australia/Sydney")
SESSION_SECONDS = 6 * 3600
DEFAULT_SYMBOLS = ("BHP", "CBA", "CSL", "NAB", "WBC", "ANZ", "WES", "MQG", "TLS", "RIO", "FMG", "WOW")


def decimal_array(micros: np.ndarray, precision: int = 18, scale: int = 6) -> pa.Array:
    """A decimal128 array from unscaled int64 values (16-byte little-endian two's complement)."""
    lo = micros.astype(np.int64)
    words = np.empty((len(lo), 2), dtype=np.int64)
    words[:, 0] = lo
    words[:, 1] = np.where(lo < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(lo), [None, pa.py_buffer(words.tobytes())])


def trading_days(start: dt.date, count: int) -> list[dt.date]:
    days, cur = [], start
    while len(days) < count:
        if cur.weekday() < 5:
            days.append(cur)
        cur += dt.timedelta(days=1)
    return days


def trades_for_day(day: dt.date, *, symbols: Sequence[str], rows_per_symbol: int, seed: int,
                   schema: pa.Schema, offset_base: int = 0) -> pa.Table:
    """One trading day of trades for every symbol, sorted by symbol then time."""
    rng = np.random.default_rng([seed, day.toordinal()])
    session_open = dt.datetime.combine(day, dt.time(10), tzinfo=SYDNEY)
    open_us = int(session_open.timestamp() * 1_000_000)
    n_sym = len(symbols)
    n = n_sym * rows_per_symbol
    offsets_us = np.sort(rng.integers(0, SESSION_SECONDS * 1_000_000, size=(n_sym, rows_per_symbol)), axis=1)
    ts = (open_us + offsets_us).reshape(-1)
    base_price = (np.arange(n_sym, dtype=np.int64) * 7 + 10) * 1_000_000
    steps = rng.integers(-5000, 5001, size=(n_sym, rows_per_symbol))
    price = np.maximum(base_price[:, None] + np.cumsum(steps, axis=1), 10_000).reshape(-1)
    volume = rng.integers(1, 5000, size=n)
    sym_idx = np.repeat(np.arange(n_sym), rows_per_symbol)
    seq = (np.tile(np.arange(rows_per_symbol, dtype=np.int64), n_sym) + day.toordinal() * 1_000_000)
    sym_arr = pa.DictionaryArray.from_arrays(pa.array(sym_idx, pa.int32()), pa.array(list(symbols))).cast(pa.string())
    ingestion = pa.array(ts + 1000, pa.timestamp("us", tz="UTC"))
    cols = {
        "symbol": sym_arr,
        "company_id": pa.array(sym_idx + 1, pa.int32()),
        "exchange": pa.array(np.full(n, "ASX", dtype=object), pa.string()),
        "exchange_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "price": decimal_array(price),
        "volume": pa.array(volume, pa.int64()),
        "qualifiers": pa.array(np.zeros(n, dtype=np.int32), pa.int32()),
        "venue": pa.array(np.full(n, "X", dtype=object), pa.string()),
        "buyer_id": pa.nulls(n, pa.string()),
        "ingestion_timestamp": ingestion,
        "sequence_number": pa.array(seq, pa.int64()),
        "source_partition": pa.array(sym_idx.astype(np.int32), pa.int32()),
        "source_offset": pa.array(np.arange(n, dtype=np.int64) + offset_base, pa.int64()),
    }
    for f in schema:  # optional columns generated rows have no value for (source_topic: not from Kafka)
        if f.name not in cols and f.nullable:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.Table.from_pydict(cols, schema=schema)


def generate_trades(*, start: dt.date, days: int, symbols: Sequence[str] = DEFAULT_SYMBOLS[:10],
                    rows_per_symbol_day: int = 1000, seed: int = 7, schema: pa.Schema) -> Iterator[pa.Table]:
    """One Arrow table per trading day; `source_offset` is unique across the whole run."""
    per_day = len(symbols) * rows_per_symbol_day
    for i, day in enumerate(trading_days(start, days)):
        yield trades_for_day(day, symbols=symbols, rows_per_symbol=rows_per_symbol_day, seed=seed,
                             schema=schema, offset_base=i * per_day)
