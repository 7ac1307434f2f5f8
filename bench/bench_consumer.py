"""Benchmarks of the Kafka → Iceberg consumer engine (issue #4). Figures go to docs/benchmarks.md.

Runs the engine in-process against a real embedded broker (Tansu, started here on a free
port) and a real Iceberg SQL catalog in Postgres with a local warehouse (a fresh namespace
per run, dropped at the end). Gap sink: in memory (no Django).

    .venv/bin/python bench/bench_consumer.py throughput --messages 500000 --batch-sizes 1000,10000,50000
    .venv/bin/python bench/bench_consumer.py latency --rate 5000 --seconds 20 --max-batch-ms 50,100
    .venv/bin/python bench/bench_consumer.py rss --messages 2000000

Every run also reports the consumer's CPU time per record (this process: the engine and its
commit thread, user + system), the CPU of the whole process tree (embedded broker and, for latency,
the paced producer included) and the machine's load average meanwhile; `--repeats` (throughput,
progress) and `--runs` (latency) repeat each measurement (default 3) and a summary line gives the
median and range of each headline figure.

`latency` also times each Iceberg append inside the consumer (wall and the commit thread's CPU):
the part of "in hand → visible" that is the commit itself. `--kafka KEY=VALUE` (repeatable) sets a
librdkafka property of K2's consumer and `--floor-fetch-wait-ms` the floor consumer's
`fetch.wait.max.ms`, to see what the fetch settings are worth.

`--pyiceberg-append` (before the subcommand) makes the writer call pyiceberg's own
`Table.append` instead of `catalog.engine.fast_commit.append`: the "before" of the
deep-copy fix, for a same-machine, same-hour comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.common import Meter, ensure_db, fmt_spread, free_port, load_range, machine_line, percentile  # noqa: E402
from catalog.engine import schemas, wire  # noqa: E402
from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog  # noqa: E402
from ingestion.engine import broker  # noqa: E402
from ingestion.engine.consumer import ConsumerConfig, IcebergConsumer, MemoryGapSink  # noqa: E402

CATALOG_DB = "k2_bench_iceberg"
CATALOG_URI = os.environ.get("K2_BENCH_CATALOG_URI", f"postgresql+psycopg://postgres@127.0.0.1:5432/{CATALOG_DB}")
SYMBOLS = [f"SYM{i:03d}" for i in range(200)]
WARMUP = "WARMUP"


class Registry:
    def get_schema(self, schema_id: int) -> str:
        return schemas.schema_text("trades")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoded_values(n: int, start_seq: int = 0) -> list[tuple[bytes, bytes]]:
    """n trades over SYMBOLS, per-symbol contiguous sequence numbers (no gaps)."""
    parsed = schemas.parsed_schema("trades")
    base = datetime(2026, 3, 10, tzinfo=UTC)
    out = []
    for i in range(start_seq, start_seq + n):
        sym = SYMBOLS[i % len(SYMBOLS)]
        rec = {"symbol": sym, "company_id": i % len(SYMBOLS), "exchange": "ASX",
               "exchange_timestamp": base + timedelta(microseconds=i), "price": Decimal("45.120000"),
               "volume": 100, "qualifiers": 0, "venue": "X", "buyer_id": None,
               "ingestion_timestamp": base, "sequence_number": i // len(SYMBOLS) + 1}
        out.append((sym.encode(), wire.encode(1, parsed, rec)))
    return out


class Env:
    def __init__(self) -> None:
        if "K2_BENCH_CATALOG_URI" not in os.environ:
            ensure_db(CATALOG_DB)
        self.var = Path(tempfile.mkdtemp(prefix="k2-bench-"))
        self.port = free_port()
        self.bootstrap = broker.start(port=self.port, var_dir=self.var).address
        self.catalogs: list[CatalogConfig] = []

    def topic(self, partitions: int = 30) -> str:
        name = f"market.equities.trades.b{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(timeout=15)
        return name

    def fresh_broker(self) -> None:
        """Restart the embedded broker on the same port: an empty in-memory log."""
        broker.stop(port=self.port, var_dir=self.var)
        self.bootstrap = broker.start(port=self.port, var_dir=self.var).address

    def namespace(self) -> CatalogConfig:
        config = CatalogConfig(uri=CATALOG_URI, warehouse=(self.var / "warehouse").as_uri(),
                               namespace=f"bench_{uuid.uuid4().hex[:8]}")
        ensure_tables(load_catalog(config), config.namespace)
        self.catalogs.append(config)
        return config

    def close(self) -> None:
        for config in self.catalogs:
            catalog = load_catalog(config)
            for t in ("trades", "quotes", "reference_data"):
                try:
                    catalog.drop_table(f"{config.namespace}.{t}")
                except Exception:  # noqa: BLE001
                    pass
            try:
                catalog.drop_namespace(config.namespace)
            except Exception:  # noqa: BLE001
                pass
        broker.stop(port=self.port, var_dir=self.var)
        shutil.rmtree(self.var, ignore_errors=True)


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})
    for i, (key, value) in enumerate(values):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def _opt(value: str) -> int | None:
    """An int option, or None for `default` (the engine's own default)."""
    return None if value == "default" else int(value)


def engine_for(env: Env, topic: str, catalog: CatalogConfig, on_batch_committed=None, **kw: object) -> IcebergConsumer:  # noqa: ANN001
    kw.setdefault("progress_interval_s", 3600)
    kw = {k: v for k, v in kw.items() if v is not None}  # None: the engine's default
    config = ConsumerConfig(bootstrap_servers=env.bootstrap, data_type="trades", topics=(topic,),
                            group_id=f"bench-{uuid.uuid4().hex[:6]}", session_timeout_ms=6000,
                            namespace=catalog.namespace, **kw)  # type: ignore[arg-type]
    return IcebergConsumer(config, catalog=load_catalog(catalog), registry=Registry(), gap_sink=MemoryGapSink(),
                           on_batch_committed=on_batch_committed)


def throughput(env: Env, args: argparse.Namespace) -> list[dict]:
    values = encoded_values(args.messages)
    results = []
    topic = env.topic()
    produce(env.bootstrap, topic, values)
    for size in [_opt(x) for x in args.batch_sizes.split(",")]:
        for repeat in range(args.repeats):
            catalog = env.namespace()
            first: list[float] = []
            sizes: list[int] = []

            def committed(t, at, first=first, sizes=sizes) -> None:  # noqa: ANN001
                first.append(at)
                sizes.append(t.num_rows)

            engine = engine_for(env, topic, catalog, batch_size=size, max_batch_ms=_opt(args.max_batch_ms),
                                max_messages=args.messages, on_batch_committed=committed)
            t0 = time.time()
            with Meter(scope="self") as meter, Meter(scope="tree", load_interval=3600) as tree:
                engine.run()
            # time from the first committed batch's start is dominated by the group join; measure steady state
            # as messages / (end - start of consumption), where start = first batch commit minus its own duration
            elapsed = time.time() - t0
            rows = load_catalog(catalog).load_table(f"{catalog.namespace}.trades").scan(
                selected_fields=("source_offset",)).to_arrow().num_rows
            # steady state: from the first batch's commit to the last one (the group join and close excluded)
            steady = (engine.stats.messages - sizes[0]) / (first[-1] - first[0]) if len(first) > 1 else 0
            results.append({"bench": "throughput", "batch_size_option": size, "batch_size": engine.config.batch_size,
                            "batch_floor": engine.config.batch_floor, "max_batch_ms": engine.config.max_batch_ms,
                            "messages": engine.stats.messages, "rows_in_table": rows, "batches": engine.stats.batches,
                            "batch_rows_median": sorted(sizes)[len(sizes) // 2] if sizes else None,
                            "wall_s": round(elapsed, 2), "records_per_s_wall": round(engine.stats.messages / elapsed),
                            "records_per_s_steady": round(steady), "repeat": repeat,
                            **meter.report(units=engine.stats.messages),
                            **tree.report(units=engine.stats.messages, prefix="tree_")})
            print(json.dumps(results[-1]), flush=True)
        runs = [r for r in results if r["batch_size_option"] == size]
        label = "default" if size is None else f"{size:,}"
        print(f"throughput at batch {label}: steady {fmt_spread((r['records_per_s_steady'] for r in runs), '{:,.0f}', 'records/s')}; "
              f"wall {fmt_spread((r['records_per_s_wall'] for r in runs), '{:,.0f}', 'records/s')}; "
              f"consumer CPU {fmt_spread((r['cpu_us_per_record'] for r in runs), unit='µs/record')}; "
              f"all processes {fmt_spread((r['tree_cpu_us_per_record'] for r in runs), unit='µs/record')}; "
              f"{load_range(runs)}", flush=True)
    return results


def progress(env: Env, args: argparse.Namespace) -> list[dict]:
    """Issue 11 item 4: the cost of progress reports (lag per partition) on consumption. The same
    messages on a 30-partition topic are consumed with a report every hour (none) and every
    `--interval` seconds; wall time from start to the last commit, and the time spent per report."""
    values = encoded_values(args.messages)
    topic = env.topic(partitions=30)
    produce(env.bootstrap, topic, values)
    results = []
    for repeat in range(args.repeats):
        for interval in (3600.0, args.interval):
            catalog = env.namespace()
            engine = engine_for(env, topic, catalog, batch_size=args.batch_size, max_batch_ms=args.max_batch_ms,
                                max_messages=args.messages, progress_interval_s=interval)
            spent: list[float] = []
            report = engine._report_progress

            def timed(report=report, spent=spent) -> None:  # noqa: ANN001
                started = time.perf_counter()
                report()
                spent.append(time.perf_counter() - started)

            engine._report_progress = timed  # type: ignore[method-assign]
            t0 = time.time()
            with Meter(scope="self") as meter:
                engine.run()
            elapsed = time.time() - t0
            results.append({"bench": "progress", "interval_s": interval, "messages": engine.stats.messages,
                            "wall_s": round(elapsed, 2), "reports": len(spent),
                            "report_ms_mean": round(1000 * sum(spent) / len(spent), 2) if spent else None,
                            "report_ms_max": round(1000 * max(spent), 2) if spent else None,
                            "final_lag": engine.stats.lag, "repeat": repeat, **meter.report(units=engine.stats.messages)})
            print(json.dumps(results[-1]), flush=True)
    for interval in (3600.0, args.interval):
        runs = [r for r in results if r["interval_s"] == interval]
        print(f"progress every {interval:g} s: wall {fmt_spread((r['wall_s'] for r in runs), '{:.2f}', 's')}; "
              f"consumer CPU {fmt_spread((r['cpu_us_per_record'] for r in runs), unit='µs/record')}; {load_range(runs)}",
              flush=True)
    return results


def paced_produce(bootstrap: str, topic: str, rate: int, total: int, start_at: float) -> None:
    """Produce `total` trades at `rate`/s from `start_at` (wall clock), each stamped with
    ingestion_timestamp = just before it is produced. Runs in its own process, as a feed would."""
    parsed = schemas.parsed_schema("trades")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    base = datetime(2026, 3, 10, tzinfo=UTC)
    # A new idempotent producer waits ~0.5 s for metadata and its producer id: that is the
    # producer starting, not the pipeline's latency. One warm-up message, left out of the figures.
    warm = {"symbol": WARMUP, "company_id": 0, "exchange": "ASX", "exchange_timestamp": base, "price": Decimal("1"),
            "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None, "ingestion_timestamp": base,
            "sequence_number": None}
    producer.produce(topic, key=WARMUP.encode(), value=wire.encode(1, parsed, warm))
    producer.flush(30)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(total):
        delay = start_at + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        sym = SYMBOLS[i % len(SYMBOLS)]
        rec = {"symbol": sym, "company_id": 1, "exchange": "ASX", "exchange_timestamp": base + timedelta(microseconds=i),
               "price": Decimal("1.5"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
               "ingestion_timestamp": datetime.now(UTC), "sequence_number": i // len(SYMBOLS) + 1}
        producer.produce(topic, key=sym.encode(), value=wire.encode(1, parsed, rec))
        producer.poll(0)
    producer.flush(30)


def _quantiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples_s)
    return {"p50_ms": round(percentile(ms, 0.50), 1), "p99_ms": round(percentile(ms, 0.99), 1), "max_ms": round(ms[-1], 1)}


def broker_floor(env: Env, args: argparse.Namespace) -> dict:
    """The broker's own share: produce → fetched by a plain confluent-kafka consumer (no decode, no
    Iceberg), same producer, rate and duration, on a fresh broker."""

    topic = env.topic(args.partitions)
    consumer = Consumer({"bootstrap.servers": env.bootstrap, "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "fetch.wait.max.ms": args.floor_fetch_wait_ms, "fetch.queue.backoff.ms": 10})
    consumer.subscribe([topic])
    total = args.rate * args.seconds
    ages: list[float] = []
    proc = multiprocessing.get_context("spawn").Process(
        target=paced_produce, args=(env.bootstrap, topic, args.rate, total, time.time() + 8))
    proc.start()
    seen = 0
    deadline = time.time() + args.seconds + 60
    while seen < total + 1 and time.time() < deadline:
        for msg in consumer.consume(1000, 0.002):
            if msg.error() is None:
                seen += 1
                if msg.key() != WARMUP.encode():
                    ages.append(time.time() - msg.timestamp()[1] / 1000)
    proc.join(60)
    consumer.close()
    return {"bench": "latency_broker_floor", "offered_per_s": args.rate, "seconds": args.seconds,
            "partitions": args.partitions,
            "rows": len(ages), **_quantiles(ages)}


def stamp_key(partition: int, offset: int) -> int:
    return partition << 48 | offset


class StampingConsumer(Consumer):
    """confluent-kafka's Consumer, noting when each message reached the engine's hands (bench only):
    the time `consume()` returned it, i.e. the end of the batch window (`poll()` for a batch's first
    message). "in hand → visible" is then K2's decode, checks and Iceberg commit, queueing behind
    the batch in flight included, and the batch window excluded.

    Stamps are keyed by one int per message (`stamp_key`), not a (partition, offset) tuple: tens of
    thousands of tuples kept alive would be the bench's own garbage-collector load in the measured
    process (ints and floats are not tracked by the collector; tuples are)."""

    fetched: dict[int, float] = {}

    def poll(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        msg = super().poll(*args, **kwargs)
        if msg is not None and msg.error() is None:
            self.fetched[stamp_key(msg.partition(), msg.offset())] = time.time()
        return msg

    def consume(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        msgs = super().consume(*args, **kwargs)
        now = time.time()
        for msg in msgs:
            if msg.error() is None:
                self.fetched[stamp_key(msg.partition(), msg.offset())] = now
        return msgs


def seed_snapshots(catalog: CatalogConfig, count: int) -> None:
    """Age the trades table to `count` snapshots (one-row appends) before a measurement: a
    long-running table holds the snapshots its retention policy keeps (~2,000 for a week thinned to
    one per 5 minutes, plus the full-detail minute: 1,200 at a commit every 50 ms), and each
    commit writes them all."""
    from bench.bench_append import batch
    from catalog.engine.writer import IcebergWriter

    table = load_catalog(catalog).load_table(f"{catalog.namespace}.trades")
    writer = IcebergWriter(table, table_name="trades")
    one = batch(1, 0)
    started = time.perf_counter()
    for _ in range(count):
        writer.append(one)
    print(json.dumps({"seeded_snapshots": len(table.metadata.snapshots),
                      "seconds": round(time.perf_counter() - started, 1)}), flush=True)


def latency(env: Env, args: argparse.Namespace) -> list[dict]:
    from ingestion.engine.consumer import loop as consumer_module  # where the engine creates its Kafka consumer

    consumer_module.Consumer = StampingConsumer  # type: ignore[misc]
    results = []
    for max_ms in [_opt(x) for x in args.max_batch_ms_list.split(",")]:
        runs = [latency_run(env, args, max_ms, i) for i in range(args.runs)]
        results.extend(r for pair in runs for r in pair)
        floors, lats = [f for f, _ in runs], [r for _, r in runs]
        hands = [r["in_hand_to_visible"] or {} for r in lats]
        appends = [r["append"] or {} for r in lats]
        print(f"latency at {args.rate:,}/s, max batch age {max_ms} ms, min commit interval {args.min_commit_interval_ms}: "
              f"broker floor p50 {fmt_spread((f['p50_ms'] for f in floors), unit='ms')}, "
              f"p99 {fmt_spread((f['p99_ms'] for f in floors), unit='ms')}; "
              f"end to end p50 {fmt_spread((r['p50_ms'] for r in lats), unit='ms')}, "
              f"p99 {fmt_spread((r['p99_ms'] for r in lats), unit='ms')}; "
              f"consumer's own share (in hand → visible) p50 {fmt_spread((h.get('p50_ms') for h in hands), unit='ms')}, "
              f"p99 {fmt_spread((h.get('p99_ms') for h in hands), unit='ms')}; "
              f"of which each Iceberg append's own wall time p50 {fmt_spread((a.get('wall_p50_ms') for a in appends), unit='ms')}, "
              f"p99 {fmt_spread((a.get('wall_p99_ms') for a in appends), unit='ms')}; "
              f"consumer CPU {fmt_spread((r['cpu_us_per_record'] for r in lats), unit='µs/record')}; "
              f"{load_range(floors + lats)}", flush=True)
    return results


def _kafka_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--kafka wants KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


@contextlib.contextmanager
def timed_appends() -> Iterator[list[tuple[float, float]]]:
    """Time every Iceberg append of the consumer while the block runs (bench only): wall time and
    the commit thread's own CPU per append, to split "in hand → visible" into the commit itself
    and the rest (the wait behind the commit before it, decoding, the batch window)."""
    from catalog.engine.writer import IcebergWriter

    samples: list[tuple[float, float]] = []
    original = IcebergWriter.append

    def append(self, batch, **kw):  # noqa: ANN001, ANN003, ANN202
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(self, batch, **kw)
        finally:
            samples.append((time.perf_counter() - wall, time.thread_time() - cpu))

    IcebergWriter.append = append  # type: ignore[method-assign]
    try:
        yield samples
    finally:
        IcebergWriter.append = original  # type: ignore[method-assign]


@contextlib.contextmanager
def gc_pauses() -> Iterator[list[tuple[int, float, float]]]:
    """The garbage collector's pauses in this process while the block runs: (generation, seconds,
    seconds since the block began) each; a full collection stops every thread of the consumer
    while it walks the heap (the consumer's own full collection at start, before any message,
    included)."""
    samples: list[tuple[int, float, float]] = []
    began = time.perf_counter()
    started: list[float] = [0.0]

    def callback(phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            started[0] = now
        else:
            samples.append((info["generation"], now - started[0], started[0] - began))

    gc.callbacks.append(callback)
    try:
        yield samples
    finally:
        gc.callbacks.remove(callback)


def _gc_summary(samples: list[tuple[int, float, float]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for gen in (0, 1, 2):
        ms = [1000 * s for g, s, _ in samples if g == gen]
        if ms:
            out[f"gen{gen}"] = {"count": len(ms), "total_ms": round(sum(ms), 1), "max_ms": round(max(ms), 1)}
    full = [(round(at, 2), round(1000 * s, 1)) for g, s, at in samples if g == 2]
    if full:
        out["gen2"]["at_s_and_ms"] = full
    return out


def _append_quantiles(samples: list[tuple[float, float]]) -> dict[str, float] | None:
    if not samples:
        return None
    walls = sorted(1000 * w for w, _ in samples)
    cpus = sorted(1000 * c for _, c in samples)
    return {"appends": len(samples), "wall_p50_ms": round(percentile(walls, 0.5), 1),
            "wall_p90_ms": round(percentile(walls, 0.9), 1), "wall_p99_ms": round(percentile(walls, 0.99), 1),
            "thread_cpu_p50_ms": round(percentile(cpus, 0.5), 1)}


def latency_run(env: Env, args: argparse.Namespace, max_ms: int, run: int) -> tuple[dict, dict]:
    """One latency measurement: the broker floor on a fresh broker, then the consumer on another."""
    env.fresh_broker()  # the embedded broker's fetches slow down as its in-memory log grows
    with Meter(scope="self") as floor_meter:
        floor = broker_floor(env, args)
    floor.update(floor_meter.report(units=max(1, floor["rows"])), run=run)
    print(json.dumps(floor), flush=True)
    env.fresh_broker()
    topic = env.topic(args.partitions)
    catalog = env.namespace()
    if args.seed_snapshots:
        seed_snapshots(catalog, args.seed_snapshots)
    StampingConsumer.fetched = {}
    committed: list[tuple[object, float]] = []

    def on_commit(table, committed_at: float, committed: list = committed) -> None:  # noqa: ANN001
        committed.append((table, committed_at))  # on the commit thread: read after the run

    total = args.rate * args.seconds
    engine = engine_for(env, topic, catalog, batch_size=_opt(args.batch_size), max_batch_ms=max_ms,
                        min_commit_interval_ms=_opt(args.min_commit_interval_ms),
                        max_messages=total + 1, on_batch_committed=on_commit,
                        kafka_overrides=tuple(_kafka_setting(kv) for kv in args.kafka) or None)
    thread = threading.Thread(target=engine.run)
    with Meter(scope="self") as meter, timed_appends() as appends, gc_pauses() as pauses:  # this process: the consumer (the producer runs in its own)
        thread.start()
        proc = multiprocessing.get_context("spawn").Process(
            target=paced_produce, args=(env.bootstrap, topic, args.rate, total, time.time() + 8))  # after the group join
        proc.start()
        proc.join(args.seconds + 60)
        thread.join(timeout=120)
    lat: list[float] = []
    k2_part: list[float] = []
    for table, committed_at in committed:
        cols = [table.column(c).to_pylist() for c in ("symbol", "ingestion_timestamp", "source_partition",  # type: ignore[attr-defined]
                                                       "source_offset")]
        for sym, ts, partition, offset in zip(*cols, strict=True):
            if sym != WARMUP:
                lat.append(committed_at - ts.timestamp())
                fetched = StampingConsumer.fetched.pop(stamp_key(partition, offset), None)
                if fetched is not None:
                    k2_part.append(committed_at - fetched)
    result = {"bench": "latency", "offered_per_s": args.rate, "seconds": args.seconds,
              "partitions": args.partitions, "seeded_snapshots": args.seed_snapshots,
              "batch_size": engine.config.batch_size, "batch_floor": engine.config.batch_floor,
              "max_batch_ms": engine.config.max_batch_ms,
              "min_commit_interval_ms": engine.config.min_commit_interval_ms, "rows": len(lat), **_quantiles(lat),
              "batches": engine.stats.batches,
              "in_hand_to_visible": _quantiles(k2_part) if k2_part else None,
              "append": _append_quantiles(appends), "gc": _gc_summary(pauses), "run": run,
              **meter.report(units=max(1, len(lat)))}
    print(json.dumps(result), flush=True)
    return floor, result


def rss(env: Env, args: argparse.Namespace) -> list[dict]:
    topic = env.topic()
    catalog = env.namespace()
    chunk = 200_000
    samples: list[tuple[int, float]] = []

    def on_commit(table, _at: float) -> None:  # noqa: ANN001
        done = engine.stats.messages
        if not samples or done - samples[-1][0] >= chunk:
            samples.append((done, rss_mb()))

    engine = engine_for(env, topic, catalog, batch_size=args.batch_size, max_batch_ms=500, max_messages=args.messages,
                        on_batch_committed=on_commit)
    for start in range(0, args.messages, chunk):  # produce in chunks to bound the generator's own memory
        produce(env.bootstrap, topic, encoded_values(min(chunk, args.messages - start), start))
    t0 = time.time()
    with Meter(scope="self") as meter:
        engine.run()
    result = {"bench": "rss", **meter.report(units=max(1, engine.stats.messages)), "messages": engine.stats.messages, "batch_size": args.batch_size,
              "rss_mb_after_first_batch": round(samples[0][1], 1) if samples else None,
              "rss_mb_end": round(rss_mb(), 1), "samples": [(n, round(m, 1)) for n, m in samples],
              "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(result), flush=True)
    return [result]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyiceberg-append", action="store_true",
                        help="commit with pyiceberg's Table.append (no fast_commit): the 'before' figures")
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--messages", type=int, default=500_000)
    p.add_argument("--batch-sizes", default="1000,10000,50000", help="comma-separated; `default`: the engine's")
    p.add_argument("--max-batch-ms", default="500", help="an int, or `default`: the engine's")
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("progress")
    p.add_argument("--messages", type=int, default=12_000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--max-batch-ms", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("latency")
    p.add_argument("--runs", type=int, default=3, help="measurements per batch age (median and range)")
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--batch-size", default="1000", help="an int, or `default`: the engine's")
    p.add_argument("--max-batch-ms-list", default="50,100")
    p.add_argument("--min-commit-interval-ms", default="default",
                   help="an int (0: hand a batch over whenever the commit thread is free), or `default`: the engine's")
    p.add_argument("--partitions", type=int, default=30, help="topic partitions (ADR #009: 30 for ASX)")
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting for K2's consumer (repeatable), e.g. fetch.wait.max.ms=10")
    p.add_argument("--floor-fetch-wait-ms", type=int, default=50,
                   help="fetch.wait.max.ms of the plain consumer that measures the broker floor")
    p.add_argument("--seed-snapshots", type=int, default=0,
                   help="commit this many snapshots to the table first (a long-running table's steady state)")
    p = sub.add_parser("rss")
    p.add_argument("--messages", type=int, default=2_000_000)
    p.add_argument("--batch-size", type=int, default=10000)
    args = parser.parse_args()
    from k2core.logging import configure

    configure(json_output=True, level="WARNING")
    if args.pyiceberg_append:
        from catalog.engine import fast_commit

        def pyiceberg_append(table, df, snapshot_properties=None):  # type: ignore[no-untyped-def]
            table.append(df, snapshot_properties=snapshot_properties or {})

        fast_commit.append = pyiceberg_append  # type: ignore[assignment]
    print(machine_line(), flush=True)
    print(json.dumps({"commit_path": "pyiceberg Table.append" if args.pyiceberg_append else "fast_commit.append"}),
          flush=True)
    env = Env()
    try:
        {"throughput": throughput, "latency": latency, "rss": rss, "progress": progress}[args.bench](env, args)
    finally:
        env.close()


if __name__ == "__main__":
    main()
