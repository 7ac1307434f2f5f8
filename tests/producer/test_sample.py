"""The sample generator: deterministic, realistic, and its injected anomalies match an independent scan."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from datetime import datetime, time
from decimal import Decimal
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from ingestion.management.commands.generate_sample import COMMITTED_SAMPLE_ARGS, SAMPLE_DIR

SYDNEY = ZoneInfo("Australia/Sydney")
FILES = ("trades.csv", "quotes.csv", "reference_data.csv", "manifest.json")


def generate(out: Path, **options: object) -> None:
    call_command("generate_sample", out=out, stdout=StringIO(), **options)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(out, seed=7, trades=3000, days=4, gaps=4, duplicates=3, out_of_order=3)
    return out


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=11, trades=500, days=2)
    generate(tmp_path / "b", seed=11, trades=500, days=2)
    generate(tmp_path / "c", seed=12, trades=500, days=2)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "trades.csv").read_bytes() != (tmp_path / "c" / "trades.csv").read_bytes()


def test_committed_sample_is_what_the_generator_makes_with_its_recorded_arguments(tmp_path: Path) -> None:
    generate(tmp_path, **COMMITTED_SAMPLE_ARGS)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name
    trades = rows(SAMPLE_DIR / "trades.csv")
    assert 1000 <= len(trades) and len(trades) + len(rows(SAMPLE_DIR / "quotes.csv")) < 10_000  # "a few thousand rows"


def test_trades_fall_on_march_2014_weekdays_between_10_and_16_sydney_time(sample: Path) -> None:
    for row in rows(sample / "trades.csv") + rows(sample / "quotes.csv"):
        local = datetime.fromisoformat(row["exchange_timestamp"]).astimezone(SYDNEY)
        assert (local.year, local.month) == (2014, 3) and local.weekday() < 5
        assert time(10, 0) <= local.time() < time(16, 0), row


def test_prices_sit_on_the_asx_tick_grid_at_each_stocks_own_level(sample: Path) -> None:
    by_symbol: dict[str, list[Decimal]] = defaultdict(list)
    for row in rows(sample / "trades.csv"):
        price = Decimal(row["price"])
        tick = Decimal("0.01") if price >= 2 else Decimal("0.005")
        assert price % tick == 0, row
        by_symbol[row["symbol"]].append(price)
    assert {"BHP", "RIO", "CBA", "NAB", "WBC", "ANZ", "CSL", "WES", "TLS", "WOW"} <= set(by_symbol)
    medians = {s: statistics.median(p) for s, p in by_symbol.items()}
    # Levels of early March 2014, within a band a random walk stays in over a few days.
    for symbol, level in {"BHP": 37.8, "CBA": 75.2, "TLS": 5.07, "QAN": 1.185}.items():
        assert abs(float(medians[symbol]) - level) / level < 0.1, (symbol, medians[symbol])
    # Random walk: prices move, in small steps.
    bhp = by_symbol["BHP"]
    assert len(set(bhp)) > 5
    assert max(abs(a - b) for a, b in zip(bhp, bhp[1:], strict=False)) <= Decimal("0.10")


def test_every_trade_is_inside_the_prevailing_quote_of_its_symbol(sample: Path) -> None:
    quotes: dict[str, list[tuple[datetime, Decimal, Decimal]]] = defaultdict(list)
    for q in rows(sample / "quotes.csv"):
        quotes[q["symbol"]].append((datetime.fromisoformat(q["exchange_timestamp"]), Decimal(q["bid_price"]), Decimal(q["ask_price"])))
    checked = 0
    for t in rows(sample / "trades.csv"):
        at = datetime.fromisoformat(t["exchange_timestamp"])
        before = [q for q in quotes[t["symbol"]] if q[0] <= at]
        if not before:
            continue
        _, bid, ask = max(before, key=lambda q: q[0])
        assert bid < ask
        assert bid <= Decimal(t["price"]) <= ask, t
        checked += 1
    assert checked > 2500


def test_arrivals_are_bursty_not_uniform(sample: Path) -> None:
    """Inter-arrival times of a Poisson (uniform-rate) process have a coefficient of variation near 1;
    clustered arrivals have a much larger one."""
    times = defaultdict(list)
    for t in rows(sample / "trades.csv"):
        moment = datetime.fromisoformat(t["exchange_timestamp"])
        times[(t["symbol"], moment.date())].append(moment.timestamp())
    gaps = [b - a for ts in times.values() for a, b in zip(ts, ts[1:], strict=False)]
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    assert cv > 1.5, cv
    assert sum(1 for g in gaps if g < 1.0) / len(gaps) > 0.3  # many trades within a second of the previous one


def test_injected_anomalies_match_an_independent_scan_of_the_sequence_numbers(sample: Path) -> None:
    manifest = json.loads((sample / "manifest.json").read_text())
    kinds = [a["kind"] for a in manifest["anomalies"]]
    assert (kinds.count("gap"), kinds.count("duplicate"), kinds.count("out_of_order")) == (4, 3, 3)
    # Scan per symbol, in file order: a jump is a gap, a repeat is a duplicate, a step back is out of order.
    last: dict[str, int] = {}
    seen: dict[str, set[int]] = defaultdict(set)
    gaps, repeats, late = [], [], []
    for t in rows(sample / "trades.csv"):
        symbol, seq = t["symbol"], int(t["sequence_number"])
        if seq in seen[symbol]:
            repeats.append((symbol, seq))
        elif symbol in last and seq > last[symbol] + 1:
            gaps.append((symbol, last[symbol] + 1, seq))
        elif symbol in last and seq < last[symbol]:
            late.append((symbol, seq))
        seen[symbol].add(seq)
        last[symbol] = max(last.get(symbol, seq), seq)
    expected_gaps = sorted((a["symbol"], a["expected_sequence"], a["received_sequence"])
                           for a in manifest["anomalies"] if a["kind"] in ("gap", "out_of_order"))
    assert sorted(gaps) == expected_gaps
    assert sorted(repeats) == sorted((a["symbol"], a["sequence_number"]) for a in manifest["anomalies"] if a["kind"] == "duplicate")
    assert sorted(late) == sorted((a["symbol"], a["filled_by_late"]) for a in manifest["anomalies"] if a["kind"] == "out_of_order")
    never_seen = {(a["symbol"], n) for a in manifest["anomalies"] if a["kind"] == "gap" for n in a["missing"]}
    assert all(n not in seen[s] for s, n in never_seen)


def test_sample_without_anomalies_has_consecutive_sequence_numbers_per_symbol(tmp_path: Path) -> None:
    generate(tmp_path, seed=3, trades=800, days=2)
    by_symbol = defaultdict(list)
    for t in rows(tmp_path / "trades.csv"):
        by_symbol[t["symbol"]].append(int(t["sequence_number"]))
    for seqs in by_symbol.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert json.loads((tmp_path / "manifest.json").read_text())["anomalies"] == []


def test_reference_data_has_one_row_per_company(sample: Path) -> None:
    ref = rows(sample / "reference_data.csv")
    assert len({r["company_id"] for r in ref}) == len(ref) == 11
    bhp = next(r for r in ref if r["symbol"] == "BHP")
    assert bhp["company_name"] == "BHP Billiton Limited" and int(bhp["market_cap"]) > 10**11
