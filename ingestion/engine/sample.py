"""Realistic synthetic ASX market data (no public ASX tick file exists on these machines).

Plain Python, deterministic for a seed (`random.Random(seed)`, no global state). What makes it
look real rather than uniform:
- each stock trades at its own March-2014 price level, on the ASX tick grid (1 cent from
  $2.00, half a cent from 10 cents to $2.00);
- prices are a per-symbol random walk of the quote in whole ticks, carried from one
  trading day to the next;
- arrivals are bursty: trades come in clusters (a self-exciting burst after a parent
  event) laid over the U-shaped intraday profile (busy open and close, quiet lunch);
- every trade executes at the prevailing bid or ask, so the quotes' spread brackets the trades;
- trading days are the ASX weekdays of March 2014, 10:00–16:00 Sydney time (AEDT, +11:00).

It can inject sequence gaps, duplicates and out-of-order events and lists them in a
manifest, so gap-detection tests have a known truth.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SYDNEY = ZoneInfo("Australia/Sydney")
OPEN, CLOSE = time(10, 0), time(16, 0)


@dataclass(frozen=True)
class Stock:
    symbol: str
    company_id: int
    name: str
    sector: str
    price: Decimal  # level at the start of March 2014 (A$)
    shares_m: int  # shares on issue, millions (for market cap)
    weight: float  # share of the trade count


STOCKS: tuple[Stock, ...] = (
    Stock("BHP", 1001, "BHP Billiton Limited", "Materials", Decimal("37.80"), 3212, 0.16),
    Stock("RIO", 1002, "Rio Tinto Limited", "Materials", Decimal("64.10"), 435, 0.09),
    Stock("CBA", 1003, "Commonwealth Bank of Australia", "Financials", Decimal("75.20"), 1612, 0.12),
    Stock("NAB", 1004, "National Australia Bank Limited", "Financials", Decimal("34.90"), 2364, 0.10),
    Stock("WBC", 1005, "Westpac Banking Corporation", "Financials", Decimal("33.60"), 3109, 0.10),
    Stock("ANZ", 1006, "Australia and New Zealand Banking Group Limited", "Financials", Decimal("32.40"), 2758, 0.10),
    Stock("CSL", 1007, "CSL Limited", "Health Care", Decimal("70.30"), 486, 0.06),
    Stock("WES", 1008, "Wesfarmers Limited", "Consumer Staples", Decimal("42.50"), 1143, 0.06),
    Stock("TLS", 1009, "Telstra Corporation Limited", "Telecommunication Services", Decimal("5.07"), 12443, 0.10),
    Stock("WOW", 1010, "Woolworths Limited", "Consumer Staples", Decimal("36.70"), 1266, 0.06),
    Stock("QAN", 1011, "Qantas Airways Limited", "Industrials", Decimal("1.185"), 2196, 0.05),
)
VENUES = (("ASX", 0.88), ("CXA", 0.12))  # ASX and Chi-X Australia, about their 2014 shares
TRADE_HEADER = ["symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue",
                "buyer_id", "sequence_number", "exchange"]
QUOTE_HEADER = ["symbol", "company_id", "exchange_timestamp", "bid_price", "bid_volume", "ask_price", "ask_volume",
                "sequence_number", "exchange"]
REFERENCE_HEADER = ["company_id", "symbol", "company_name", "sector", "market_cap", "last_updated"]


def tick_size(price: Decimal) -> Decimal:
    """ASX price steps: 1 cent from $2.00, 0.5 cent from 10 cents, 0.1 cent below."""
    if price >= 2:
        return Decimal("0.01")
    if price >= Decimal("0.10"):
        return Decimal("0.005")
    return Decimal("0.001")


def trading_days(start: date, count: int) -> list[date]:
    """`count` weekdays from `start` (March 2014 had no ASX holiday)."""
    days, day = [], start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _intraday_weight(minute: float) -> float:
    """U-shaped activity over the 360-minute session."""
    x = minute / 360.0
    return 0.3 + 2.8 * (x - 0.5) ** 2  # 1.0 at the open and the close, 0.3 at midday


def _bursty_times(rng: random.Random, n: int, session_us: int) -> list[int]:
    """n offsets (µs into the session), strictly increasing: parents from the U-shaped profile, children in bursts."""
    out: list[int] = []
    last_start = session_us - 60_000_000  # parents start before 15:59 so their bursts fit in the session
    while len(out) < n:
        # Parent by rejection sampling from the U shape.
        while True:
            minute = rng.uniform(0, 360)
            if rng.random() < _intraday_weight(minute):
                break
        t = min(int(minute * 60_000_000), last_start)
        burst = min(n - len(out), 1 + int(rng.expovariate(1 / 3.0)))  # mean ~4 events per burst
        for _ in range(burst):
            out.append(t)
            t += int(rng.expovariate(1 / 40_000.0)) + 1  # ~40 ms apart inside a burst
    out.sort()
    # At least 3 µs apart and 3 µs after the open, so quote updates fit strictly between trades.
    previous = 0
    for i, t in enumerate(out):
        previous = out[i] = max(t, previous + 3)
    return out


@dataclass
class _Book:
    bid_ticks: int
    spread: int
    tick: Decimal


def _fmt(moment_utc_us: int) -> str:
    moment = datetime.fromtimestamp(moment_utc_us // 1_000_000, SYDNEY).replace(microsecond=moment_utc_us % 1_000_000)
    return moment.isoformat(timespec="microseconds")


def generate(*, seed: int, trades: int, days: int = 5, start: date = date(2014, 3, 3), quotes_per_trade: float = 2.0,
             symbols: tuple[str, ...] | None = None) -> dict[str, list[list[str]]]:
    """Rows (without headers) of trades, quotes and reference data, each file in time order."""
    rng = random.Random(seed)
    stocks = [s for s in STOCKS if symbols is None or s.symbol in symbols]
    if not stocks:
        raise ValueError(f"none of {symbols} is a known sample symbol ({', '.join(s.symbol for s in STOCKS)})")
    day_list = trading_days(start, days)
    total_weight = sum(s.weight for s in stocks)
    counts = [int(trades * s.weight / total_weight) for s in stocks]
    for i in range(trades - sum(counts)):
        counts[i % len(counts)] += 1
    trade_events: list[tuple[int, int, list[str]]] = []
    quote_events: list[tuple[int, int, list[str]]] = []
    for stock, n in zip(stocks, counts, strict=True):
        tick = tick_size(stock.price)
        book = _Book(bid_ticks=int(stock.price / tick), spread=1, tick=tick)
        trade_seq = rng.randint(1_000, 90_000)
        quote_seq = rng.randint(1_000, 90_000)
        per_day = [n // len(day_list) + (1 if i < n % len(day_list) else 0) for i in range(len(day_list))]
        for day, n_day in zip(day_list, per_day, strict=True):
            open_us = int(datetime.combine(day, OPEN, SYDNEY).timestamp()) * 1_000_000
            session_us = 6 * 3600 * 1_000_000
            times = _bursty_times(rng, n_day, session_us)
            prev = 0
            for offset in times:
                # Quote updates between the previous trade and this one: the book walks in ticks.
                # With quotes_per_trade 0 the book still moves; its quotes are just not written.
                k = max(1, int(rng.expovariate(1 / quotes_per_trade) + 0.5)) if quotes_per_trade > 0 else 1
                for j in range(k):
                    step = rng.choices((-1, 0, 1), (0.3, 0.4, 0.3))[0]
                    book.bid_ticks = max(2, book.bid_ticks + step)
                    book.spread = rng.choices((1, 2, 3), (0.7, 0.22, 0.08))[0]
                    q_offset = prev + 1 + (offset - prev - 2) * (j + 1) // (k + 1)  # strictly between the trades
                    bid = book.tick * book.bid_ticks
                    ask = book.tick * (book.bid_ticks + book.spread)
                    if quotes_per_trade <= 0:
                        continue
                    quote_events.append((open_us + q_offset, quote_seq, [
                        stock.symbol, str(stock.company_id), "", f"{bid:.3f}" if tick < Decimal("0.01") else f"{bid:.2f}",
                        str(_volume(rng, stock.price)), f"{ask:.3f}" if tick < Decimal("0.01") else f"{ask:.2f}",
                        str(_volume(rng, stock.price)), str(quote_seq), "ASX"]))
                    quote_seq += 1
                buy = rng.random() < 0.5
                price = book.tick * (book.bid_ticks + (book.spread if buy else 0))
                venue = rng.choices([v for v, _ in VENUES], [w for _, w in VENUES])[0]
                qualifiers = rng.choices((0, 1, 2, 4), (0.9, 0.05, 0.03, 0.02))[0]
                buyer = f"B{rng.randint(1, 120):03d}" if rng.random() < 0.8 else ""
                trade_events.append((open_us + offset, trade_seq, [
                    stock.symbol, str(stock.company_id), "", f"{price:.3f}" if tick < Decimal("0.01") else f"{price:.2f}",
                    str(_volume(rng, stock.price)), str(qualifiers), venue, buyer, str(trade_seq), "ASX"]))
                trade_seq += 1
                prev = offset
    trade_events.sort(key=lambda e: (e[0], e[2][0], e[1]))
    quote_events.sort(key=lambda e: (e[0], e[2][0], e[1]))
    for at, _, row in (*trade_events, *quote_events):
        row[2] = _fmt(at)
    last_updated = datetime.combine(day_list[0] - timedelta(days=1), time(18, 0), SYDNEY).isoformat()
    reference = [[str(s.company_id), s.symbol, s.name, s.sector, str(int(s.price * s.shares_m * 1_000_000)), last_updated]
                 for s in stocks]
    return {"trades": [r for _, _, r in trade_events], "quotes": [r for _, _, r in quote_events],
            "reference_data": reference}


def _volume(rng: random.Random, price: Decimal) -> int:
    """Heavy-tailed sizes; cheaper stocks trade in bigger parcels."""
    scale = 8000 / max(float(price), 0.5)  # about A$8,000 a trade
    return max(1, int(rng.lognormvariate(math.log(scale), 1.1)))


def inject_anomalies(rows: list[list[str]], *, rng: random.Random, data_type: str, gaps: int, duplicates: int,
                     out_of_order: int) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Drop runs (gaps), repeat rows (duplicates) and swap a symbol's consecutive events (out of order).

    Each anomaly is placed on its own stretch of a stream so they never overlap, and the
    manifest says what a sequence tracker must report for it (ADR #014): a gap from
    `expected_sequence` to `received_sequence`; a duplicate as a repeated number; a swap as a
    gap of one that the late event then fills."""
    sym_col, seq_col = 0, (8 if data_type == "trades" else 7)
    by_symbol: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_symbol.setdefault(row[sym_col], []).append(i)
    # Candidate positions: the k-th event of a symbol, k well inside its stream, spaced apart.
    candidates = [(sym, idx) for sym, idx in by_symbol.items() if len(idx) > 20]
    plan = ["gap"] * gaps + ["duplicate"] * duplicates + ["out_of_order"] * out_of_order
    rng.shuffle(plan)
    slots: list[tuple[str, int]] = []
    for sym, idx in candidates:
        for k in range(5, len(idx) - 6, 8):
            slots.append((sym, k))
    if len(slots) < len(plan):
        raise ValueError(f"too few rows to place {len(plan)} anomalies apart; generate more trades")
    chosen = rng.sample(slots, len(plan))
    drop: set[int] = set()
    repeat_after: dict[int, int] = {}
    swap: dict[int, int] = {}
    manifest = []
    for kind, (sym, k) in zip(plan, chosen, strict=True):
        idx = by_symbol[sym]
        here = rows[idx[k]]
        seq = int(here[seq_col])
        if kind == "gap":
            size = rng.randint(1, 3)
            for j in range(size):
                drop.add(idx[k + j])
            manifest.append({"kind": "gap", "data_type": data_type, "symbol": sym, "expected_sequence": seq,
                             "received_sequence": seq + size, "gap_size": size,
                             "missing": list(range(seq, seq + size))})
        elif kind == "duplicate":
            repeat_after[idx[k + 1]] = idx[k]  # the row appears again right after the next event of its symbol
            manifest.append({"kind": "duplicate", "data_type": data_type, "symbol": sym, "sequence_number": seq})
        else:
            swap[idx[k]] = idx[k + 1]
            swap[idx[k + 1]] = idx[k]
            manifest.append({"kind": "out_of_order", "data_type": data_type, "symbol": sym,
                             "sequence_numbers_as_written": [seq + 1, seq],
                             "expected_sequence": seq, "received_sequence": seq + 1, "gap_size": 1, "filled_by_late": seq})
    out = []
    for i, row in enumerate(rows):
        if i in drop:
            continue
        if i in swap:
            # The whole event moves, timestamp included: it was delivered late, not re-timed.
            out.append(rows[swap[i]])
        else:
            out.append(row)
        if i in repeat_after:
            out.append(list(rows[repeat_after[i]]))
    manifest.sort(key=lambda m: (m["kind"], m["symbol"], m.get("expected_sequence", m.get("sequence_number", 0))))
    return out, manifest


def write_sample(*, out_dir: Path, seed: int, trades: int, days: int = 5, start: date = date(2014, 3, 3),
                 quotes_per_trade: float = 2.0, gaps: int = 0, duplicates: int = 0, out_of_order: int = 0) -> dict[str, Any]:
    """Write trades.csv, quotes.csv, reference_data.csv and manifest.json to `out_dir`; the manifest."""
    data = generate(seed=seed, trades=trades, days=days, start=start, quotes_per_trade=quotes_per_trade)
    rng = random.Random(seed + 1)
    anomalies: list[dict[str, Any]] = []
    if gaps or duplicates or out_of_order:
        data["trades"], anomalies = inject_anomalies(data["trades"], rng=rng, data_type="trades", gaps=gaps,
                                                     duplicates=duplicates, out_of_order=out_of_order)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"trades": TRADE_HEADER, "quotes": QUOTE_HEADER, "reference_data": REFERENCE_HEADER}
    for data_type, header in files.items():
        with open(out_dir / f"{data_type}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(data[data_type])
    manifest = {
        "generator": "ingestion.engine.sample", "seed": seed, "trades_requested": trades, "days": days,
        "start": start.isoformat(), "quotes_per_trade": quotes_per_trade,
        "rows": {k: len(v) for k, v in data.items()},
        "symbols": sorted({r[0] for r in data["trades"]}),
        "anomalies": anomalies,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
