"""Append time vs. the table's snapshot count (issue: per-append cost grew with the snapshot list).

Appends `--rows`-row batches to a fresh trades table (unique namespace of the SQL catalog,
temporary warehouse) and prints the mean append time per window of `--window` appends, for
the plain pyiceberg `Table.append` and/or K2's `IcebergWriter` commit path.

    .venv/bin/python bench/bench_append.py --appends 400 --window 50 --mode both
    .venv/bin/python bench/bench_append.py --appends 300 --profile profile.out   # cProfile of the last window

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

from k2core.logging import configure  # noqa: E402

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


def run(mode: str, appends: int, rows: int, window: int, profile: str | None) -> list[tuple[int, float, float]]:
    with tempfile.TemporaryDirectory(prefix="k2-bench-append-") as warehouse:
        config = CatalogConfig(uri=URI, warehouse=f"file://{warehouse}", namespace=f"bench_append_{uuid.uuid4().hex[:8]}")
        catalog = load_catalog(config)
        table = ensure_tables(catalog, config.namespace)["trades"]
        writer = IcebergWriter(table, table_name="trades")
        data = [batch(rows, i * rows) for i in range(min(appends, 20))]
        results = []
        times: list[float] = []
        profiler = cProfile.Profile() if profile else None
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
                    results.append((snaps, statistics.mean(times) * 1000, statistics.median(times) * 1000))
                    print(f"{mode:10s} snapshots={snaps:5d}  mean={results[-1][1]:7.1f} ms  "
                          f"median={results[-1][2]:7.1f} ms", flush=True)
                    times = []
        finally:
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
    args = parser.parse_args()
    modes = ("pyiceberg", "writer") if args.mode == "both" else (args.mode,)
    for mode in modes:
        run(mode, args.appends, args.rows, args.window, args.profile)


if __name__ == "__main__":
    main()
