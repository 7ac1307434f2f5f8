"""The API's own cost for one symbol-day OHLCV (issue 15 item 3), measured inside each request:
the request's wall and CPU time minus those of the engine call it makes (wrapped here), so the
engine's own variance under a busy machine does not blur the figure. Run against a table
`bench/bench_query.py` built (same catalog database, warehouse and namespace):

    .venv/bin/python bench/bench_api_overhead.py --requests 60 --runs 3 \\
        --catalog-db k2_bench_iceberg --warehouse var/bench-warehouse

Django test client, real API key (Postgres), rate limit (Redis), JSON encoding. Prints per run the
p50 overhead (wall and CPU, this process), the engine call's p50 and the load; then the median of
the runs with their range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "k2portal.settings")
os.environ.setdefault("K2_LOG_LEVEL", "WARNING")

from bench.bench_query import NAMESPACE, START, django_client  # noqa: E402
from bench.common import LoadSampler, fmt_spread, load_range, machine_line, own_cpu_seconds  # noqa: E402
from catalog.engine.iceberg import CatalogConfig  # noqa: E402
from queries.engine.generate import trading_days  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="timed requests per run (after 3 warm-up)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--catalog-db", default="k2_bench_iceberg")
    parser.add_argument("--warehouse", default=str(ROOT / "var" / "bench-warehouse"))
    args = parser.parse_args()
    config = CatalogConfig(uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.catalog_db}",
                           warehouse=Path(args.warehouse).resolve().as_uri(), namespace=NAMESPACE)
    client, key = django_client(config, f"{args.catalog_db}_django")
    url = f"/api/v1/ohlcv?symbol=BHP&date={trading_days(START, 100)[1]}&interval=1m"
    from queries import selectors

    engine = selectors.get_engine()
    inner: dict[str, float] = {}
    ohlcv = engine.ohlcv

    def timed(**kwargs):  # type: ignore[no-untyped-def]
        c, t = own_cpu_seconds(), time.perf_counter()
        try:
            return ohlcv(**kwargs)
        finally:
            inner["wall"], inner["cpu"] = time.perf_counter() - t, own_cpu_seconds() - c

    engine.ohlcv = timed  # type: ignore[method-assign]
    print(machine_line(), flush=True)
    runs = []
    for run in range(args.runs):
        for _ in range(3):
            client.get(url, HTTP_X_API_KEY=key)
        wall, cpu, eng = [], [], []
        load = LoadSampler().start()
        for _ in range(args.requests):
            c, t = own_cpu_seconds(), time.perf_counter()
            response = client.get(url, HTTP_X_API_KEY=key)
            w, cc = time.perf_counter() - t, own_cpu_seconds() - c
            assert response.status_code == 200, response.content[:300]
            wall.append((w - inner["wall"]) * 1000)
            cpu.append((cc - inner["cpu"]) * 1000)
            eng.append(inner["wall"] * 1000)
        r = {"overhead_wall_ms": statistics.median(wall), "overhead_cpu_ms": statistics.median(cpu),
             "engine_wall_ms": statistics.median(eng), **load.stop()}
        r["overhead_share"] = r["overhead_wall_ms"] / r["engine_wall_ms"]
        runs.append(r)
        print(f"run {run + 1}: API overhead p50 {r['overhead_wall_ms']:.2f} ms wall, {r['overhead_cpu_ms']:.2f} ms CPU; "
              f"engine call p50 {r['engine_wall_ms']:.1f} ms; overhead/engine {r['overhead_share']:.3f}; "
              f"load {r['load_min']:.1f}–{r['load_max']:.1f}", flush=True)
    print(f"API overhead {fmt_spread((r['overhead_wall_ms'] for r in runs), '{:.2f}', 'ms')} wall, "
          f"{fmt_spread((r['overhead_cpu_ms'] for r in runs), '{:.2f}', 'ms')} CPU; engine call "
          f"{fmt_spread((r['engine_wall_ms'] for r in runs), unit='ms')}; overhead/engine "
          f"{fmt_spread((r['overhead_share'] for r in runs), '{:.3f}')}; {load_range(runs)}", flush=True)


if __name__ == "__main__":
    main()
