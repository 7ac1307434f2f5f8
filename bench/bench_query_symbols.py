"""Query cost vs number of other symbols (issue #5: "a symbol's query cost does not grow with
the number of other symbols in the table").

    .venv/bin/python bench/bench_query_symbols.py --symbols 10,100,1000 --runs 50

For each N it builds one Iceberg table (own namespace in the catalog DB, warehouse
`var/bench-symbols/`) holding the SAME rows for the target symbol (BHP, 50,000 trades per
trading day) plus N-1 other symbols (`--other-rows` trades per day each, so the total grows
with N). Half of the other symbols sort before BHP and half after, so BHP sits in the middle
of each symbol-sorted file. Each day is written time-sorted in `--file-rows` files (the
consumer's layout), then `compact_table` rewrites the table into symbol-sorted files (the
maintained layout), old snapshots are expired and one row is appended on an unrelated day
(the consumer's next commit, which drops the compaction's delete-only manifest; see
docs/benchmarks.md "Manifests").

Then, interleaved across the tables in each round, it times through `MarketQueries`:
(a) OHLCV 1m for BHP over one exchange day, (b) the last 100 BHP trades of the last day;
and reports the rows and files of each table and, from DuckDB's EXPLAIN ANALYZE of (a),
the rows the scan produced and the files it read. Everything it created is dropped at the
end unless `--keep`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("K2_LOG_LEVEL", "WARNING")

import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from bench.common import append_as_small_files, ensure_db, measure_repeated  # noqa: E402
from catalog.engine.iceberg import CatalogConfig, arrow_schema, ensure_tables, load_catalog  # noqa: E402
from catalog.engine.maintenance import compact_table, expire_snapshots  # noqa: E402
from queries.engine.connection import EngineConfig  # noqa: E402
from queries.engine.generate import trades_for_day, trading_days  # noqa: E402
from queries.engine.market import MarketQueries, files_read  # noqa: E402
from queries.engine.source import IcebergSource  # noqa: E402
from queries.engine.timeutil import make_range  # noqa: E402

TARGET = "BHP"
ABSENT = "BHQ"
START = dt.date(2024, 3, 4)
PG = "postgresql://postgres@127.0.0.1:5432"


def other_symbols(n: int) -> list[str]:
    """n symbols, alternately sorting before ('A...') and after ('C...') the target 'BHP'."""
    return [f"{'A' if i % 2 == 0 else 'C'}{i:04d}" for i in range(n)]


def day_data(day: dt.date, i: int, n_symbols: int, *, target_rows: int, other_rows: int, schema: pa.Schema) -> pa.Table:
    """One trading day: the target's rows are identical for every N (same seed, same offsets)."""
    target = trades_for_day(day, symbols=[TARGET], rows_per_symbol=target_rows, seed=42, schema=schema,
                            offset_base=i * 10**9)
    parts = [target]
    if n_symbols > 1:
        others = trades_for_day(day, symbols=other_symbols(n_symbols - 1), rows_per_symbol=other_rows, seed=43,
                                schema=schema, offset_base=i * 10**9 + target_rows)
        # company_id / source_partition distinct from the target's (index 0 in both generators)
        others = others.set_column(1, schema.field("company_id"), pc.add(others["company_id"], pa.scalar(1, pa.int32())))
        parts.append(others)
    return pa.concat_tables(parts).sort_by("exchange_timestamp")


def build(config: CatalogConfig, n_symbols: int, *, days: int, target_rows: int, other_rows: int,
          file_rows: int) -> dict:

    catalog = load_catalog(config)
    ident = f"{config.namespace}.trades"
    table = ensure_tables(catalog, config.namespace)["trades"]
    schema = arrow_schema("trades")
    rows = 0
    t0 = time.perf_counter()
    for i, day in enumerate(trading_days(START, days)):
        data = day_data(day, i, n_symbols, target_rows=target_rows, other_rows=other_rows, schema=schema)
        rows += data.num_rows
        append_as_small_files(table, data, file_rows)
        table = catalog.load_table(ident)
    small_files = sum(1 for _ in table.scan().plan_files())
    write_s = time.perf_counter() - t0

    def load():  # type: ignore[no-untyped-def]
        return catalog.load_table(ident)

    t0 = time.perf_counter()
    compact_table(load)
    compact_s = time.perf_counter() - t0
    expire_snapshots(load(), retention=dt.timedelta(0))
    load().append(trades_for_day(dt.date(2024, 1, 2), symbols=["ZZZ"], rows_per_symbol=1, seed=1,
                                 schema=schema, offset_base=10**15))
    table = load()
    tasks = list(table.scan().plan_files())
    return {"N": n_symbols, "rows": rows + 1, "small_files": small_files, "files": len(tasks),
            "manifests": len(table.current_snapshot().manifests(table.io)),
            "write_s": round(write_s, 1), "compact_s": round(compact_s, 1),
            "paths": [t.file.file_path for t in tasks]}


def row_groups(paths: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p.removeprefix("file://")).metadata.num_row_groups for p in paths)


def target_row_groups(config: CatalogConfig, rng) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Row groups (and their rows) whose `symbol` min/max admit the target, in the files a
    perfect planner picks for the range: what a reader using row-group statistics must decode."""
    import pyarrow.parquet as pq
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    table = load_catalog(config).load_table(f"{config.namespace}.trades")
    planned = table.scan(row_filter=And(GreaterThanOrEqual("exchange_timestamp", rng.start.isoformat()),
                                        LessThan("exchange_timestamp", rng.end.isoformat()))).plan_files()
    groups = rows = 0
    for task in planned:
        meta = pq.ParquetFile(task.file.file_path.removeprefix("file://")).metadata
        col = meta.schema.names.index("symbol")
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(col).statistics
            if stats is None or not stats.has_min_max or stats.min <= TARGET <= stats.max:
                groups += 1
                rows += meta.row_group(g).num_rows
    return groups, rows


def scan_rows(profile: str) -> int:
    """Rows out of the scan operator(s) in an EXPLAIN ANALYZE text (the box under the scan name)."""
    total, in_scan = 0, False
    for line in profile.splitlines():
        if re.search(r"(ICEBERG|PARQUET|TABLE)_SCAN|READ_PARQUET", line):
            in_scan = True
        elif in_scan:
            m = re.search(r"│\s*([\d,]+)\s+[Rr]ows?\s*│", line)
            if m:
                total += int(m.group(1).replace(",", ""))
                in_scan = False
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", default="10,100,1000", help="comma-separated symbol counts N (incl. the target)")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--target-rows", type=int, default=50_000, help="target-symbol trades per trading day")
    parser.add_argument("--other-rows", type=int, default=2_000, help="trades per trading day of each other symbol")
    parser.add_argument("--file-rows", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=50, help="timed rounds per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the measurement (median and range)")
    parser.add_argument("--catalog-db", default="k2_bench_iceberg")
    parser.add_argument("--warehouse", default=str(ROOT / "var" / "bench-symbols"))
    parser.add_argument("--keep", action="store_true", help="keep the tables, namespaces and warehouse")
    args = parser.parse_args()
    ns_values = [int(x) for x in args.symbols.split(",")]
    run_id = uuid.uuid4().hex[:8]
    created_db = ensure_db(args.catalog_db)
    warehouse = Path(args.warehouse).resolve()
    warehouse.mkdir(parents=True, exist_ok=True)
    uri = f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.catalog_db}"
    configs = {n: CatalogConfig(uri=uri, warehouse=warehouse.as_uri(), namespace=f"bench_symbols_{run_id}_n{n}")
               for n in ns_values}
    try:
        info = {}
        for n, config in configs.items():
            info[n] = build(config, n, days=args.days, target_rows=args.target_rows, other_rows=args.other_rows,
                            file_rows=args.file_rows)
            info[n]["row_groups"] = row_groups(info[n].pop("paths"))
            print(json.dumps(info[n]), flush=True)

        days = trading_days(START, args.days)
        r_mid, r_last = make_range(date=days[len(days) // 2]), make_range(date=days[-1])
        engines = {n: MarketQueries(IcebergSource(load_catalog(c), c.namespace), EngineConfig()) for n, c in configs.items()}
        fns = {}
        for n, engine in engines.items():
            ohlcv = engine.ohlcv(interval="1m", rng=r_mid, symbols=[TARGET])
            last = engine.trades(rng=r_last, symbols=[TARGET], limit=100, order="desc")
            info[n]["ohlcv_bars"], info[n]["last100_rows"] = ohlcv.table.num_rows, last.table.num_rows
            info[n]["ohlcv_volume"] = pc.sum(ohlcv.table["volume"]).as_py()  # identical across N = same BHP rows
            sql = engine.ohlcv_sql(interval="1m", rng=r_mid, symbols=[TARGET], resolved=engine.source.resolve("trades"))
            profile = engine.explain_analyze(sql)
            info[n]["scan_rows"], info[n]["scan_files"] = scan_rows(profile), files_read(profile)
            info[n]["target_row_groups"], info[n]["target_rg_rows"] = target_row_groups(configs[n], r_mid)
            fns[(n, "ohlcv")] = lambda e=engine: e.ohlcv(interval="1m", rng=r_mid, symbols=[TARGET])
            fns[(n, "last100")] = lambda e=engine: e.trades(rng=r_last, symbols=[TARGET], limit=100, order="desc")
            # (c) the fixed cost: the same OHLCV for a symbol that is in no row (ABSENT sorts right
            # after BHP, so it costs manifests + footers + row-group statistics + <= 1 row group per file)
            fns[(n, "absent")] = lambda e=engine: e.ohlcv(interval="1m", rng=r_mid, symbols=[ABSENT])

        measured = measure_repeated(fns, args.runs, args.repeats)  # interleaved: every N and query in each round
        for (n, q) in fns:
            m = measured[(n, q)]
            info[n][q] = {"p50": round(m["p50"]["median"], 1), "p99": round(m["p99"]["median"], 1),
                          "p50_min": round(m["p50"]["min"], 1), "p50_max": round(m["p50"]["max"], 1),
                          "cpu_ms": round(m["cpu_ms"]["median"], 1)}

        cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True,
                             text=True).stdout.strip()
        print(f"\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · nproc {os.cpu_count()} ({cpu}) · Python "
              f"{platform.python_version()} · load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} · "
              f"{args.repeats} repeats of {args.runs} runs (3 warm-up each): p50 = median of the repeats' p50 "
              f"(range), p99 = median of their p99; CPU ms per query (median); load during the measurement "
              f"{measured['load_min']:.1f}–{measured['load_max']:.1f}\n")
        print("| N symbols | rows | small files → compacted files (row groups) / manifests | (a) scan rows / files | "
              "(a) row groups admitting BHP (rows) | "
              "(a) OHLCV 1m p50 (range) / p99 ms | (b) last 100 p50 (range) / p99 ms | (c) absent symbol p50 (range) / p99 ms | "
              "CPU ms per query (a) / (b) / (c) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in ns_values:
            r = info[n]
            print(f"| {n:,} | {r['rows']:,} | {r['small_files']:,} → {r['files']} ({r['row_groups']}) / {r['manifests']} | "
                  f"{r['scan_rows']:,} / {r['scan_files']} | {r['target_row_groups']} ({r['target_rg_rows']:,}) | "
                  + " | ".join(f"{r[q]['p50']} ({r[q]['p50_min']}–{r[q]['p50_max']}) / {r[q]['p99']}"
                               for q in ("ohlcv", "last100", "absent"))
                  + f" | {r['ohlcv']['cpu_ms']} / {r['last100']['cpu_ms']} / {r['absent']['cpu_ms']} |")
        lo, hi = info[ns_values[0]], info[ns_values[-1]]
        print(f"\nratio N={ns_values[-1]} / N={ns_values[0]}: OHLCV p50 {hi['ohlcv']['p50'] / lo['ohlcv']['p50']:.2f}, "
              f"p99 {hi['ohlcv']['p99'] / lo['ohlcv']['p99']:.2f}; last 100 p50 "
              f"{hi['last100']['p50'] / lo['last100']['p50']:.2f}, p99 {hi['last100']['p99'] / lo['last100']['p99']:.2f}; "
              f"absent p50 {hi['absent']['p50'] / lo['absent']['p50']:.2f}")
        print(json.dumps({str(k): {kk: vv for kk, vv in v.items()} for k, v in info.items()}))
    finally:
        if not args.keep:
            cleanup(configs, warehouse, args.catalog_db, created_db)


def cleanup(configs: dict, warehouse: Path, db: str, created_db: bool) -> None:
    for config in configs.values():
        catalog = load_catalog(config)
        try:
            for ident in catalog.list_tables(config.namespace):
                catalog.drop_table(ident)
            catalog.drop_namespace(config.namespace)
        except Exception as exc:  # noqa: BLE001 - best effort, report and go on
            print(f"cleanup of {config.namespace}: {exc}", file=sys.stderr)
        catalog.engine.dispose()
    shutil.rmtree(warehouse, ignore_errors=True)
    if created_db:  # drop the catalog DB only if this run created it and nothing else lives there
        with psycopg.connect(f"{PG}/{db}") as conn:
            left = conn.execute("SELECT count(*) FROM iceberg_namespace_properties").fetchone()[0] + \
                conn.execute("SELECT count(*) FROM iceberg_tables").fetchone()[0]
        if left == 0:
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
