"""Append time vs. the table's snapshot count (issue: per-append cost grew with the snapshot list).

Appends `--rows`-row batches to a fresh trades table (unique namespace of the SQL catalog,
temporary warehouse) and prints the mean append time per window of `--window` appends, for
the plain pyiceberg `Table.append` and/or K2's `IcebergWriter` commit path.

    .venv/bin/python bench/bench_append.py --appends 400 --window 50 --mode both
    .venv/bin/python bench/bench_append.py --appends 300 --profile profile.out   # cProfile of the last window

Each window also reports the CPU time per append (this process, user + system) and the machine's
load average; `--runs` (default 3) repeats the whole sequence on fresh tables and a summary gives,
per window, the median of the runs' median append time with its range.

Never asserted in tests.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LoadSampler, fmt_spread, load_range, machine_line, own_cpu_seconds  # noqa: E402
from k2portal.logging import configure  # noqa: E402

configure(json_output=True, level="WARNING")  # before the writer binds its module logger

from catalog.engine.iceberg import CatalogConfig, arrow_schema, ensure_tables, load_catalog  # noqa: E402
from catalog.engine.writer import IcebergWriter, offsets_properties  # noqa: E402

URI = os.environ.get("K2_BENCH_ICEBERG_URI", "postgresql+psycopg://postgres@127.0.0.1:5432/k2_bench_iceberg")


def batch(rows: int, start: int) -> pa.Table:
    t0 = datetime(2026, 3, 10, 1, tzinfo=UTC)
    n = range(start, start + rows)
    return pa.table({
        "symbol": ["BHP"] * rows, "company_id": [1] * rows, "exchange": ["ASX"] * rows,
        "exchange_timestamp": [t0 + timedelta(microseconds=i) for i in n],
        "price": [Decimal("1.000001")] * rows, "volume": [1] * rows, "qualifiers": [0] * rows,
        "venue": ["X"] * rows, "buyer_id": [None] * rows, "ingestion_timestamp": [t0] * rows,
        "sequence_number": list(n), "source_partition": [0] * rows, "source_offset": list(n),
    }, schema=arrow_schema("trades"))


def run(mode: str, appends: int, rows: int, window: int, profile: str | None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="k2-bench-append-") as warehouse:
        config = CatalogConfig(uri=URI, warehouse=f"file://{warehouse}", namespace=f"bench_append_{uuid.uuid4().hex[:8]}")
        catalog = load_catalog(config)
        table = ensure_tables(catalog, config.namespace)["trades"]
        writer = IcebergWriter(table, table_name="trades")
        data = [batch(rows, i * rows) for i in range(min(appends, 20))]
        results = []
        times: list[float] = []
        profiler = cProfile.Profile() if profile else None
        load, cpu_start = LoadSampler().start(), own_cpu_seconds()
        try:
            for i in range(appends):
                props = offsets_properties("bench", {("bench-topic", 0): (i + 1) * rows}, {"bench-topic": "id"})
                if profiler and i >= appends - window:
                    profiler.enable()
                start = time.perf_counter()
                if mode == "pyiceberg":
                    table.append(data[i % len(data)], snapshot_properties=props)
                else:
                    writer.append(data[i % len(data)], properties=props)
                times.append(time.perf_counter() - start)
                if profiler:
                    profiler.disable()
                if len(times) == window:
                    snaps = len((table if mode == "pyiceberg" else writer.table).metadata.snapshots)
                    cpu_ms = (own_cpu_seconds() - cpu_start) / window * 1000
                    results.append({"snapshots": snaps, "mean_ms": statistics.mean(times) * 1000,
                                    "median_ms": statistics.median(times) * 1000, "cpu_ms": cpu_ms, **load.stop()})
                    r = results[-1]
                    print(f"{mode:10s} snapshots={snaps:5d}  mean={r['mean_ms']:7.1f} ms  median={r['median_ms']:7.1f} ms  "
                          f"CPU={cpu_ms:7.1f} ms/append  load {r['load_min']:.1f}–{r['load_max']:.1f}", flush=True)
                    times = []
                    load, cpu_start = LoadSampler().start(), own_cpu_seconds()
        finally:
            load.stop()
            if profiler:
                profiler.dump_stats(profile)
            for name in ("trades", "quotes", "reference_data"):
                catalog.drop_table(f"{config.namespace}.{name}")
            catalog.drop_namespace(config.namespace)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=400)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--mode", choices=("pyiceberg", "writer", "both"), default="both")
    parser.add_argument("--profile", help="write a cProfile of the last window to this file")
    parser.add_argument("--runs", type=int, default=3, help="repeats of the whole sequence (median and range)")
    args = parser.parse_args()
    modes = ("pyiceberg", "writer") if args.mode == "both" else (args.mode,)
    print(machine_line(), flush=True)
    for mode in modes:
        runs = [run(mode, args.appends, args.rows, args.window, args.profile) for _ in range(args.runs)]
        for i, windows in enumerate(zip(*runs, strict=False)):
            print(f"{mode} window {i + 1} (snapshots {windows[0]['snapshots']:,}): median append "
                  f"{fmt_spread((w['median_ms'] for w in windows), unit='ms')}; "
                  f"CPU {fmt_spread((w['cpu_ms'] for w in windows), unit='ms/append')}; {load_range(windows)}", flush=True)


if __name__ == "__main__":
    main()
