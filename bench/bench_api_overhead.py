"""The API's own cost for one symbol-day OHLCV (issue 15 item 3), measured inside each request:
the request's wall and CPU time minus those of the engine call it makes (wrapped here), so the
engine's own variance under a busy machine does not blur the figure. Run against a table
`bench/bench_query.py` built (same catalog database, warehouse and namespace):

    .venv/bin/python bench/bench_api_overhead.py --requests 60 --runs 3 \\
        --catalog-db k2_bench_iceberg --warehouse var/bench-warehouse

Django test client, real API key (Postgres), rate limit (Redis), JSON encoding. Prints per run the
p50 overhead (wall and CPU, this process), the engine call's p50 and the load; then the median of
the runs with their range.

`--compare-general-json` alternates, request by request in the same process, the column-wise JSON
writer (`formats.encode_json`) and the general one it replaced (`rows()` then `dumps`) and prints
both; then times the two encoders alone on the same 360-bar result (CPU per call, median of
`--encoder-blocks` blocks of 200 calls each, the two interleaved).
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
    parser.add_argument("--compare-general-json", action="store_true",
                        help="alternate the column-wise JSON writer and the general one, request by request")
    parser.add_argument("--encoder-blocks", type=int, default=15, help="with --compare-general-json: timed blocks per encoder")
    args = parser.parse_args()
    config = CatalogConfig(uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.catalog_db}",
                           warehouse=Path(args.warehouse).resolve().as_uri(), namespace=NAMESPACE)
    client, key = django_client(config, f"{args.catalog_db}_django")
    url = f"/api/v1/ohlcv?symbol=BHP&date={trading_days(START, 100)[1]}&interval=1m"
    from queries import selectors

    engine = selectors.get_engine()
    inner: dict[str, float] = {}
    ohlcv = engine.ohlcv
    last_call: dict = {}

    def timed(**kwargs):  # type: ignore[no-untyped-def]
        last_call.update(kwargs)
        c, t = own_cpu_seconds(), time.perf_counter()
        try:
            return ohlcv(**kwargs)
        finally:
            inner["wall"], inner["cpu"] = time.perf_counter() - t, own_cpu_seconds() - c

    engine.ohlcv = timed  # type: ignore[method-assign]
    print(machine_line(), flush=True)
    from queries.engine import formats

    fast_json = formats.encode_json
    modes = {"column-wise JSON": fast_json, "general JSON": general_json} if args.compare_general_json else {"": fast_json}
    if args.compare_general_json:  # the same bytes either way, or the comparison means nothing
        bodies = set()
        for encoder in modes.values():
            formats.encode_json = encoder
            bodies.add(client.get(url, HTTP_X_API_KEY=key).content)
        assert len(bodies) == 1, "the two encoders answered differently"
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for run in range(args.runs):
        for encoder in modes.values():
            formats.encode_json = encoder
            for _ in range(3):
                client.get(url, HTTP_X_API_KEY=key)
        wall: dict[str, list[float]] = {mode: [] for mode in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        eng: dict[str, list[float]] = {mode: [] for mode in modes}
        load = LoadSampler().start()
        for i in range(args.requests):
            order = list(modes.items()) if i % 2 == 0 else list(reversed(modes.items()))
            for mode, encoder in order:
                formats.encode_json = encoder
                c, t = own_cpu_seconds(), time.perf_counter()
                response = client.get(url, HTTP_X_API_KEY=key)
                w, cc = time.perf_counter() - t, own_cpu_seconds() - c
                assert response.status_code == 200, response.content[:300]
                wall[mode].append((w - inner["wall"]) * 1000)
                cpu[mode].append((cc - inner["cpu"]) * 1000)
                eng[mode].append(inner["wall"] * 1000)
        sampled = load.stop()
        for mode in modes:
            r = {"overhead_wall_ms": statistics.median(wall[mode]), "overhead_cpu_ms": statistics.median(cpu[mode]),
                 "engine_wall_ms": statistics.median(eng[mode]), **sampled}
            r["overhead_share"] = r["overhead_wall_ms"] / r["engine_wall_ms"]
            runs[mode].append(r)
            print(f"run {run + 1}{label(mode)}: API overhead p50 {r['overhead_wall_ms']:.2f} ms wall, "
                  f"{r['overhead_cpu_ms']:.2f} ms CPU; engine call p50 {r['engine_wall_ms']:.1f} ms; "
                  f"overhead/engine {r['overhead_share']:.3f}; load {r['load_min']:.1f}–{r['load_max']:.1f}", flush=True)
    formats.encode_json = fast_json
    for mode, rows in runs.items():
        print(f"API overhead{label(mode)} {fmt_spread((r['overhead_wall_ms'] for r in rows), '{:.2f}', 'ms')} wall, "
              f"{fmt_spread((r['overhead_cpu_ms'] for r in rows), '{:.2f}', 'ms')} CPU; engine call "
              f"{fmt_spread((r['engine_wall_ms'] for r in rows), unit='ms')}; overhead/engine "
              f"{fmt_spread((r['overhead_share'] for r in rows), '{:.3f}')}; {load_range(rows)}", flush=True)
    if args.compare_general_json:
        result = ohlcv(**last_call)
        time_encoders(result.table, {"column-wise JSON": fast_json, "general JSON": general_json}, args.encoder_blocks)


def label(mode: str) -> str:
    return f" ({mode})" if mode else ""


def general_json(table, meta):  # type: ignore[no-untyped-def]
    """The JSON encoding before the column-wise writer: a Python dict per row, then orjson."""
    from queries.engine import formats

    return formats.dumps({"data": formats.rows(table), "meta": formats.json_value(meta)})


def time_encoders(table, encoders: dict, blocks: int, calls: int = 200) -> None:  # type: ignore[no-untyped-def]
    """CPU per call of each encoder on `table`, blocks of `calls` calls, the encoders interleaved."""
    meta = {"table": "trades", "snapshot_id": 1234567890123456789, "rows": table.num_rows, "next_cursor": None,
            "truncated": False}  # the API's meta (queries.api._result)
    per_call: dict[str, list[float]] = {name: [] for name in encoders}
    load = LoadSampler().start()
    for block in range(blocks):
        order = list(encoders.items()) if block % 2 == 0 else list(reversed(encoders.items()))
        for name, encoder in order:
            c = own_cpu_seconds()
            for _ in range(calls):
                encoder(table, meta)
            per_call[name].append((own_cpu_seconds() - c) / calls * 1e6)
    sampled = load.stop()
    for name, values in per_call.items():
        print(f"encoder {name} on {table.num_rows} rows × {table.num_columns} columns: CPU per call "
              f"{fmt_spread(values, '{:.0f}', 'µs')}; load {sampled['load_min']:.1f}–{sampled['load_max']:.1f}", flush=True)

if __name__ == "__main__":
    main()
