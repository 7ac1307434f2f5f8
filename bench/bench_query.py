"""Query benchmarks (issue #5): p50/p99 of three queries through the engine, through the API
(Django test client, real API key auth + Redis rate limit) and, as the floor, DuckDB's
read_parquet over the same data files; before and after compaction.

    .venv/bin/python bench/bench_query.py                 # build 10M rows (20 days x 10 symbols), measure
    .venv/bin/python bench/bench_query.py --skip-build    # measure an existing bench table again
    .venv/bin/python bench/bench_query.py --skip-build --compacted-only   # only the compacted layout

Each figure is measured `--repeats` times (default 3; each repeat = 3 warm-up rounds, then `--runs`
interleaved rounds) and reported as the median of the repeats' p50 (or p99) with their range,
beside the CPU time per query (this process, user + system, DuckDB's threads included) and the
machine's load average during the measurement.

The table is written straight into Iceberg (no Kafka): each trading day is sorted by time and
cut into 5,000-row files, the layout a consumer committing every few thousand rows leaves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "k2portal.settings")
os.environ.setdefault("K2_LOG_LEVEL", "WARNING")

from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import append_as_small_files, ensure_db, machine_line, measure_repeated  # noqa: E402
from catalog.engine.exchanges import ASX  # noqa: E402
from catalog.engine.iceberg import CatalogConfig, arrow_schema, ensure_tables, load_catalog  # noqa: E402
from catalog.engine.maintenance import compact_table, expire_snapshots, files_per_day  # noqa: E402
from k2core.duckdb_conn import connect  # noqa: E402
from queries.engine.connection import EngineConfig  # noqa: E402
from queries.engine.generate import DEFAULT_SYMBOLS, trades_for_day, trading_days  # noqa: E402
from queries.engine.market import MarketQueries, exchange_clause, range_clause  # noqa: E402
from queries.engine.source import IcebergSource  # noqa: E402
from queries.engine.timeutil import make_range  # noqa: E402

NAMESPACE = "bench_query"
START = dt.date(2024, 3, 4)


def build(config: CatalogConfig, *, days: int, symbols: list[str], rows_per_symbol: int, file_rows: int) -> None:
    catalog = load_catalog(config)
    try:
        catalog.drop_table(f"{config.namespace}.trades")
    except Exception:  # noqa: BLE001 - first run
        pass
    table = ensure_tables(catalog, config.namespace)["trades"]
    schema = arrow_schema("trades")
    per_day = len(symbols) * rows_per_symbol
    for i, day in enumerate(tqdm(trading_days(START, days), desc="writing days")):
        data = trades_for_day(day, symbols=symbols, rows_per_symbol=rows_per_symbol, seed=42, schema=schema,
                              offset_base=i * per_day).sort_by("exchange_timestamp")
        append_as_small_files(table, data, file_rows)
        table = catalog.load_table(f"{config.namespace}.trades")


def django_client(config: CatalogConfig, django_db: str = "k2_bench_django"):  # type: ignore[no-untyped-def]
    import dataclasses

    import django
    from django.conf import settings

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    settings.DATABASES["default"]["TEST"].update({"NAME": django_db})
    setup_test_environment()
    connection.creation.create_test_db(verbosity=0, keepdb=True)
    settings.K2 = dataclasses.replace(settings.K2, iceberg_catalog_uri=config.uri, warehouse=config.warehouse)
    settings.K2 = dataclasses.replace(settings.K2, iceberg_namespace=config.namespace)
    settings.ALLOWED_HOSTS = ["testserver"]
    from catalog import selectors as catalog_selectors
    from queries import services

    catalog_selectors.get_catalog.cache_clear()
    _, raw = services.api_key_create(name="bench", scopes=["market_data:read"], rate_limit_per_minute=10**9)
    from django.test import Client

    return Client(), raw


def run_suite(config: CatalogConfig, client, key: str, runs: int, label: str, repeats: int = 3) -> list[dict]:  # type: ignore[no-untyped-def]
    catalog = load_catalog(config)
    engine = MarketQueries(IcebergSource(catalog, config.namespace), EngineConfig())
    days = trading_days(START, 10_000)
    table = catalog.load_table(f"{config.namespace}.trades")
    all_days = sorted(files_per_day(table))
    last = max(d for d in days[:len(all_days)] if d <= all_days[-1])
    mid = days[len(all_days) // 4]
    files = [t.file.file_path for t in table.scan().plan_files()]
    floor_db = connect(EngineConfig())
    r_mid = make_range(date=mid)
    r_last = make_range(date=last)

    def parquet_of(rng):  # type: ignore[no-untyped-def]
        """read_parquet over exactly the data files a perfect planner would pick for the range."""
        planned = table.scan(row_filter=And(GreaterThanOrEqual("exchange_timestamp", rng.start.isoformat()),
                                            LessThan("exchange_timestamp", rng.end.isoformat()))).plan_files()
        return "read_parquet([" + ", ".join(f"'{t.file.file_path}'" for t in planned) + "])"

    def floor(sql_fn):  # type: ignore[no-untyped-def]
        sql = sql_fn()
        return lambda: floor_db.cursor().execute(sql).to_arrow_table()

    cases = []
    resolved = engine.source.resolve("trades")

    def floor_ohlcv(symbols):  # type: ignore[no-untyped-def]
        sql = engine.ohlcv_sql(interval="1m", rng=r_mid, symbols=symbols, resolved=resolved, exchange=ASX)
        return sql.replace(sql[sql.index("iceberg_scan("):sql.index(")", sql.index("iceberg_scan(")) + 1], parquet_of(r_mid))

    def floor_last100():  # type: ignore[no-untyped-def]
        return (f"SELECT * FROM {parquet_of(r_last)} WHERE {range_clause(r_last)} AND symbol IN ('BHP'){exchange_clause(ASX)} "
                "ORDER BY exchange_timestamp DESC, symbol DESC, source_partition DESC, source_offset DESC LIMIT 101")

    # The engine runs exactly the query the API runs (the API always names the exchange: ASX by default).
    specs = [
        ("OHLCV 1m, one symbol-day", lambda: engine.ohlcv(interval="1m", rng=r_mid, symbols=["BHP"], exchange=ASX),
         f"/api/v1/ohlcv?symbol=BHP&date={mid}&interval=1m", lambda: floor_ohlcv(["BHP"])),
        ("last 100 trades of a symbol (last day)", lambda: engine.trades(rng=r_last, symbols=["BHP"], limit=100, order="desc",
                                                                         exchange=ASX),
         f"/api/v1/trades?symbol=BHP&date={last}&limit=100&order=desc", floor_last100),
        ("OHLCV 1m, full day, all symbols", lambda: engine.ohlcv(interval="1m", rng=r_mid, exchange=ASX),
         f"/api/v1/ohlcv?date={mid}&interval=1m", lambda: floor_ohlcv(None)),
    ]
    for name, engine_fn, url, floor_sql in specs:
        def api_fn(url=url):  # type: ignore[no-untyped-def]
            response = client.get(url, HTTP_X_API_KEY=key)
            assert response.status_code == 200, response.content[:300]

        row = {"layout": label, "query": name, "files": len(files),
               "manifests": len(table.current_snapshot().manifests(table.io))}
        row.update(measure_repeated({"floor": floor(floor_sql), "engine": engine_fn, "api": api_fn}, runs, repeats,
                                    ratios=[("engine", "floor"), ("api", "engine")]))
        cases.append(row)
        print(json.dumps(row), flush=True)
    return cases


def markdown(rows: list[dict]) -> str:
    """Medians of the repeats (range in brackets for the p50s and ratios)."""
    def rng(s: dict, fmt: str = "{:.1f}") -> str:
        return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"

    out = ["| layout | query | files / manifests | floor p50 (range) / p99 ms | engine p50 (range) / p99 ms | "
           "API p50 (range) / p99 ms | engine/floor | API/engine | CPU ms per query floor / engine / API | load |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        f, e, a = r["floor"], r["engine"], r["api"]
        out.append(f"| {r['layout']} | {r['query']} | {r['files']} / {r['manifests']} | "
                   f"{rng(f['p50'])} / {f['p99']['median']:.1f} | {rng(e['p50'])} / {e['p99']['median']:.1f} | "
                   f"{rng(a['p50'])} / {a['p99']['median']:.1f} | {rng(r['engine/floor'], '{:.2f}')} | "
                   f"{rng(r['api/engine'], '{:.2f}')} | {f['cpu_ms']['median']:.1f} / {e['cpu_ms']['median']:.1f} / "
                   f"{a['cpu_ms']['median']:.1f} | {r['load_min']:.1f}–{r['load_max']:.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rows-per-symbol-day", type=int, default=50_000)
    parser.add_argument("--file-rows", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=50, help="timed rounds per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (median and range)")
    parser.add_argument("--compacted-only", action="store_true", help="skip the small-file layout")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--catalog-db", default="k2_bench_iceberg")
    parser.add_argument("--warehouse", default=str(ROOT / "var" / "bench-warehouse"))
    args = parser.parse_args()
    ensure_db(args.catalog_db)
    config = CatalogConfig(uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.catalog_db}",
                           warehouse=Path(args.warehouse).resolve().as_uri(), namespace=NAMESPACE)
    Path(args.warehouse).mkdir(parents=True, exist_ok=True)
    if not args.skip_build:
        t = time.perf_counter()
        build(config, days=args.days, symbols=list(DEFAULT_SYMBOLS[:args.symbols]),
              rows_per_symbol=args.rows_per_symbol_day, file_rows=args.file_rows)
        print(f"built in {time.perf_counter() - t:.0f} s", flush=True)
    print(machine_line(), flush=True)
    client, key = django_client(config, f"{args.catalog_db}_django")
    rows = [] if args.compacted_only else run_suite(config, client, key, args.runs,
                                                    "small files (5,000 rows each, time-sorted)", args.repeats)
    catalog = load_catalog(config)
    load = lambda: catalog.load_table(f"{NAMESPACE}.trades")  # noqa: E731
    t = time.perf_counter()
    results = compact_table(load)
    compact_s = time.perf_counter() - t
    expire_snapshots(load(), retention=dt.timedelta(days=7))
    print(f"compacted {len(results)} day partitions in {compact_s:.0f} s", flush=True)
    # A live table's next consumer commit (a fast append) drops the compaction's delete-only
    # manifest; until then every iceberg_scan parses its 2,000 DELETED entries (~70 ms here).
    # Simulate that next commit: one trade on a day no query below reads.
    load().append(trades_for_day(dt.date(2024, 1, 2), symbols=["ZZZ"], rows_per_symbol=1, seed=1,
                                 schema=arrow_schema("trades"), offset_base=10**12))
    rows += run_suite(config, client, key, args.runs, "compacted (1 file per day, symbol-sorted) + next append", args.repeats)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
    print(f"\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs ({cpu}) · Python {platform.python_version()}"
          f" · load average now {os.getloadavg()[0]:.2f}"
          f" · rows={args.days * args.symbols * args.rows_per_symbol_day:,}"
          f" · compaction {compact_s:.0f} s\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
