"""Produce → visible to a query, with and without a fresh read (issue 15 item 1).

At `--rate` trades/s (the paced producer of `bench_consumer.py`, in its own process, each trade
stamped just before it is produced), the consumer engine at its defaults in a process of its own
(as under Celery), and in this process a reader asking over and over for the newest trades
(`MarketQueries.trades(order="desc", limit=--limit)`), one query after the other:

- `fresh`: with `fresh=True` (the current snapshot plus the Kafka tail beyond it);
- `snapshot`: without (what the table's committed snapshots hold);
- `tail`: no query, only what a fresh query does before its SQL (resolve the current snapshot,
  read the stream beyond it): the visibility a fresh read gives, as `bench_consumer.py latency`
  measures a commit's (produce → in a committed snapshot) without a query's own cost.

`--modes` (default `tail/fresh,snapshot`): runs separated by `/`; within a run the modes'
queries alternate, over the same table and stream. `tail` runs alone: a row committed between two
of its reads is never in a tail and is counted as missed, so its reads must come often.

A trade's latency is the end of the first query whose answer holds it minus the instant it was
stamped: what a user polling for the newest trades waits, query time included. Each mode runs on
a fresh broker and a fresh namespace, `--runs` times, interleaved, with the broker floor
(produce → fetched by a plain consumer, `bench_consumer.broker_floor`) measured before each pair.
A plain consumer in a process of its own also measures the broker floor during every run (the
same minutes as the reads; the separate floor run before each pair has the machine to itself).
Also reported: each query's own time, the fresh reads' tail (messages, read time), how each
`tail` read was answered (standing or direct reader), the reader's CPU per query, and the load.

    .venv/bin/python bench/bench_fresh.py --rate 5000 --seconds 15 --runs 3

`--read-every-ms N` paces the reader (a query started every N ms, as a client polling at a fixed
rate) instead of asking again the moment an answer comes: back to back, the reader keeps a core
busy on a two-core machine that also runs the broker, the producer and the consumer. Paced, a
trade's latency includes up to N ms of waiting for the next query.

A trade the reader never saw (it fell out of the newest `--limit` between two queries) is
counted as missed, not given a latency; the summary says how many.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402

from bench.bench_consumer import CATALOG_URI, WARMUP, Env, Registry, broker_floor, paced_produce  # noqa: E402
from bench.common import Meter, fmt_spread, load_range, machine_line, percentile  # noqa: E402
from catalog.engine.iceberg import CatalogConfig, load_catalog  # noqa: E402
from ingestion.engine.consumer import ConsumerConfig, IcebergConsumer, MemoryGapSink  # noqa: E402
from ingestion.engine.tail import KafkaTail  # noqa: E402
from queries.engine.connection import EngineConfig  # noqa: E402
from queries.engine.market import MarketQueries, QueryResult  # noqa: E402
from queries.engine.source import IcebergSource  # noqa: E402
from queries.engine.timeutil import TimeRange  # noqa: E402

BASE = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)  # paced_produce's exchange_timestamp base
WHOLE = TimeRange(BASE - dt.timedelta(hours=1), BASE + dt.timedelta(hours=1))


def consume(bootstrap: str, topic: str, group: str, catalog: CatalogConfig, total: int) -> None:
    """The consumer engine at its defaults, in its own process, until `total` messages."""
    config = ConsumerConfig(bootstrap_servers=bootstrap, data_type="trades", topics=(topic,), group_id=group,
                            session_timeout_ms=6000, namespace=catalog.namespace, max_messages=total,
                            progress_interval_s=3600)
    IcebergConsumer(config, catalog=load_catalog(catalog), registry=Registry(), gap_sink=MemoryGapSink()).run()


def floor_in_run(bootstrap: str, topic: str, total: int, seconds: float, out) -> None:  # type: ignore[no-untyped-def]
    """The broker floor in the same minutes as the reads: a plain consumer of its own (no decode,
    no Iceberg) in its own process, produce → fetched for every message; quantiles to `out`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "fetch.wait.max.ms": 10, "fetch.queue.backoff.ms": 10})
    consumer.subscribe([topic])
    ages: list[float] = []
    deadline = time.time() + seconds
    while len(ages) < total and time.time() < deadline:
        for msg in consumer.consume(1000, 0.002):
            if msg.error() is None and msg.key() != WARMUP.encode():
                ages.append((time.time() - msg.timestamp()[1] / 1000) * 1000)
    consumer.close()
    out.put(_q(ages))


def _first_seen(table: pa.Table, seen: dict[int, int], done: float) -> list[float]:
    """Produce → `done` (ms) of the trades in `table` not in an earlier answer. `seen`: per
    partition, the highest offset an earlier answer held. Offsets within a partition are produced
    in order, and every answer holds a partition's offsets up to its newest (a tail from its start,
    the newest trades by time), so a trade at or below that offset was in an earlier answer or
    fell out of all of them (missed). Vectorised: an answer holds thousands of trades, and a
    loop over them in Python would hold the interpreter the standing reader needs."""
    if not table.num_rows:
        return []
    table = table.filter(pc.not_equal(table["symbol"], WARMUP))
    partitions = table["source_partition"].to_numpy()
    offsets = table["source_offset"].to_numpy()
    floor = np.full(int(partitions.max(initial=0)) + 1, -1, dtype=np.int64)
    for p, o in seen.items():
        if p < len(floor):
            floor[p] = o
    new = offsets > floor[partitions]
    if not new.any():
        return []
    stamps = pc.cast(table["ingestion_timestamp"], pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    for p in np.unique(partitions[new]).tolist():
        seen[p] = max(seen.get(p, -1), int(offsets[new & (partitions == p)].max()))
    return ((done * 1e6 - stamps[new]) / 1000).tolist()


def _q(samples_ms: list[float]) -> dict[str, float | None]:
    if not samples_ms:
        return {"p50_ms": None, "p99_ms": None}
    ms = sorted(samples_ms)
    return {"p50_ms": round(percentile(ms, 0.50), 1), "p99_ms": round(percentile(ms, 0.99), 1)}


def run_pair(env: Env, args: argparse.Namespace, modes: list[str], run: int) -> list[dict]:
    """One run: the modes' queries alternate, one after the other, over the same table and stream
    (so each mode asks half as often as it would alone, and both meet the same table)."""
    env.fresh_broker()
    topic = env.topic(args.partitions)
    catalog = env.namespace()
    group = f"bench-{uuid.uuid4().hex[:6]}"
    total = args.rate * args.seconds
    ctx = multiprocessing.get_context("spawn")
    consumer = ctx.Process(target=consume, args=(env.bootstrap, topic, group, catalog, total + 1))
    consumer.start()
    tail = KafkaTail(bootstrap_servers=env.bootstrap, registry=Registry(), topics_of={"trades": (topic,)},
                     group_of={"trades": group}, timeout_s=5, standing=not args.direct)
    engine = MarketQueries(IcebergSource(load_catalog(catalog), catalog.namespace), EngineConfig(threads=1), tail=tail)
    start_at = time.time() + 8  # after the consumer's group join
    producer = ctx.Process(target=paced_produce, args=(env.bootstrap, topic, args.rate, total, start_at))
    producer.start()
    floor_out = ctx.Queue()
    floor = ctx.Process(target=floor_in_run, args=(env.bootstrap, topic, total, args.seconds + 60, floor_out))
    floor.start()
    state = {m: {"seen": {}, "lat": [], "query_ms": [], "read_ms": [], "tail": [], "incomplete": 0, "cpu": 0.0, "paths": {}}
             for m in modes}
    time.sleep(max(0.0, start_at - time.time() - 0.5))
    end_at = start_at + args.seconds + 1.0
    turn = 0
    every = args.read_every_ms / 1000
    next_at = time.time()
    with Meter(scope="self") as meter:
        while time.time() < end_at:
            if every:  # paced: one query every `every` s on a fixed schedule (a late one is not made up for)
                time.sleep(max(0.0, next_at - time.time()))
                next_at = max(next_at + every, time.time())
            mode = modes[turn % len(modes)]
            turn += 1
            st = state[mode]
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                if mode == "tail":  # what a fresh query reads before its SQL: the snapshot, then the stream beyond it
                    resolved = engine.resolve("trades", fresh=True)
                    read = tail.read("trades", resolved.table)
                    result = QueryResult(read.table, "trades", resolved.snapshot_id, fresh=read.describe())
                else:
                    result = engine.trades(rng=WHOLE, limit=args.limit, order="desc", fresh=mode == "fresh")
            except Exception as exc:  # noqa: BLE001 - the table may not exist for a moment: say so, go on
                print(json.dumps({"query_error": str(exc)[:200]}), flush=True)
                time.sleep(0.05)
                continue
            done = time.time()
            st["query_ms"].append((time.perf_counter() - t0) * 1000)
            if mode == "tail":
                st["paths"][read.path] = st["paths"].get(read.path, 0) + 1
            if result.fresh is not None:
                st["tail"].append(result.fresh["messages"])
                st["read_ms"].append(result.fresh["read_ms"])
                st["incomplete"] += not result.fresh["complete"]
            st["lat"].extend(_first_seen(result.table, st["seen"], done))
            st["cpu"] += time.process_time() - c0
            if args.verbose:
                print(mode, round(st["query_ms"][-1], 1), result.fresh and result.fresh["read_ms"],
                      result.fresh and result.fresh["messages"], result.snapshot_id, flush=True)
    producer.join(60)
    consumer.join(120)
    if consumer.is_alive():
        consumer.terminate()
    tail.close()
    try:
        same_minutes_floor = floor_out.get(timeout=90)
    except Exception:  # noqa: BLE001 - say it is missing rather than stop the bench
        same_minutes_floor = {"p50_ms": None, "p99_ms": None}
    floor.join(10)
    if floor.is_alive():
        floor.terminate()
    report = meter.report(units=max(1, turn), unit="query")
    out = []
    for mode, st in state.items():
        queries = len(st["query_ms"])
        out.append({"bench": "fresh_read_latency", "mode": mode, "run": run, "offered_per_s": args.rate,
                    "seconds": args.seconds, "partitions": args.partitions, "limit": args.limit,
                    "read_every_ms": args.read_every_ms,
                    "standing": not args.direct, "floor_same_run": same_minutes_floor, "trades": total, "seen": len(st["lat"]),
                    "missed": total - len(st["lat"]), "queries": queries, **_q(st["lat"]), "query": _q(st["query_ms"]),
                    "read": _q(st["read_ms"]), "tail_messages_p50": statistics.median(st["tail"]) if st["tail"] else None,
                    "tail_reads_incomplete": st["incomplete"] if mode == "fresh" else None,
                    "tail_reads_by_path": st["paths"] if mode == "tail" else None,
                    "query_cpu_ms": round(st["cpu"] * 1000 / max(1, queries), 1),
                    "reader_process_cpu_s": report["cpu_s"],
                    **{k: v for k, v in report.items() if k.startswith("load")}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--partitions", type=int, default=30)
    parser.add_argument("--limit", type=int, default=5000, help="newest trades per query")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--floor-fetch-wait-ms", type=int, default=10)
    parser.add_argument("--modes", default="tail/fresh,snapshot",
                        help="runs (/) of modes whose queries alternate (,)")
    parser.add_argument("--read-every-ms", type=float, default=0.0,
                        help="paced: start a query every this many ms (0: each query as soon as the last is answered)")
    parser.add_argument("--verbose", action="store_true", help="print each query")
    parser.add_argument("--direct", action="store_true", help="fresh reads without the standing reader")
    args = parser.parse_args()
    if args.read_every_ms < 0:
        parser.error(f"--read-every-ms must be 0 (back to back) or more, not {args.read_every_ms}")
    print(machine_line(), f"catalog {CATALOG_URI.split('@')[-1]}", flush=True)
    env = Env()
    groups = [g.split(",") for g in args.modes.split("/")]
    rows: dict[str, list[dict]] = {m: [] for g in groups for m in g}
    floors: list[dict] = []
    try:
        for run in range(args.runs):
            env.fresh_broker()
            with Meter(scope="self") as floor_meter:
                floor = broker_floor(env, args)
            floor.update(floor_meter.report(units=max(1, floor["rows"])), run=run)
            floors.append(floor)
            print(json.dumps(floor), flush=True)
            for group in groups:
                for result in run_pair(env, args, group, run):
                    rows[result["mode"]].append(result)
                    print(json.dumps(result), flush=True)
    finally:
        env.close()
    print(f"broker floor p50 {fmt_spread((f['p50_ms'] for f in floors), unit='ms')}, "
          f"p99 {fmt_spread((f['p99_ms'] for f in floors), unit='ms')}", flush=True)
    for mode, results in rows.items():
        print(f"{mode}: produce → in a query's answer p50 {fmt_spread((r['p50_ms'] for r in results), unit='ms')}, "
              f"p99 {fmt_spread((r['p99_ms'] for r in results), unit='ms')} "
              f"(broker floor in the same run p50 {fmt_spread((r['floor_same_run']['p50_ms'] for r in results), unit='ms')}, "
              f"p99 {fmt_spread((r['floor_same_run']['p99_ms'] for r in results), unit='ms')}); "
              f"query p50 {fmt_spread((r['query']['p50_ms'] for r in results), unit='ms')}, "
              f"of which the tail read p50 {fmt_spread((r['read']['p50_ms'] for r in results), unit='ms')}, "
              f"p99 {fmt_spread((r['query']['p99_ms'] for r in results), unit='ms')}; "
              f"queries {fmt_spread(r['queries'] for r in results)}; missed {fmt_spread(r['missed'] for r in results)}; "
              f"tail p50 {fmt_spread((r['tail_messages_p50'] for r in results), unit='messages')}; "
              f"this thread's CPU per query {fmt_spread((r['query_cpu_ms'] for r in results), unit='ms')}; "
              f"{load_range(results)}", flush=True)


if __name__ == "__main__":
    main()
