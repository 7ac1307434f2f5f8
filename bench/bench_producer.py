"""Benchmark: CSV → acknowledged-by-broker throughput and produce-to-ack latency (ADR #010).

Runs the real producer engine against an embedded Tansu broker it starts on a free port,
from a generated ASX trades CSV (default 1,000,000 rows; generated once and cached). The
schema id comes from an in-memory registry (one lookup per run either way, so it does not
change the figures). Prints one line per run and a summary; with --sweep, tries batching
settings (linger.ms × queue.buffering.max.messages) and prints a table, which is how the defaults in
`ProducerSettings` were chosen.

    .venv/bin/python bench/bench_producer.py [--rows 1000000] [--runs 3] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LoadSampler, cpu_seconds, fmt_spread, free_port, load_range, machine_line, percentile  # noqa: E402
from ingestion.engine import broker  # noqa: E402
from ingestion.engine.producer import ProducerSettings, produce_csv_parallel  # noqa: E402
from ingestion.engine.sample import write_sample  # noqa: E402
from ingestion.engine.topics import create_topics, declared_topics  # noqa: E402


class MemoryRegistry:
    def register(self, subject: str, schema_text: str) -> int:
        return 1


def one_run(csv_path: Path, settings: ProducerSettings, asset_class: str, workers: int) -> dict[str, float]:
    """One produce of the whole file: throughput, ack latency, CPU per row (this process and its worker
    processes, user + system; the broker is not a child of the producer) and the load meanwhile."""
    load = LoadSampler().start()
    cpu_before = cpu_seconds()
    result = produce_csv_parallel(workers=workers, csv_path=csv_path, settings=settings, registry=MemoryRegistry(),
                                  data_type="trades", exchange="asx", asset_class=asset_class, keep_latencies=True)
    if not result.ok:
        raise SystemExit(f"run was not clean: {result.summary()}")
    lat = result.latencies
    cpu_us = (cpu_seconds() - cpu_before) / result.acked * 1e6
    return {**load.stop(), "cpu_us_per_row": cpu_us, "rows": result.acked, "seconds": result.seconds, "rows_per_s": result.rows_per_second,
            "p50_ms": percentile(lat, 0.50) * 1000, "p99_ms": percentile(lat, 0.99) * 1000, "max_ms": max(lat) * 1000}


def paced_latency(csv_path: Path, settings: ProducerSettings, asset_class: str, rate: int, seconds: float) -> dict[str, float]:
    """Produce-to-ack latency at a steady `rate` rows/s (not at saturation, where latency is just queueing):
    the same settings and encoder as the producer, paced in 10 ms slices."""
    import csv

    from confluent_kafka import Producer

    from ingestion.engine.csv_rows import RowParser
    from ingestion.engine.fast_encode import FastEncoder

    latencies: list[float] = []
    failed = [0]

    def on_delivery(err, msg):  # type: ignore[no-untyped-def]
        if err is None:
            latencies.append(msg.latency())
        else:
            failed[0] += 1

    producer = Producer(settings.librdkafka())
    topic = f"market.{asset_class}.trades.asx"
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        encode = FastEncoder(RowParser(data_type="trades", exchange="asx", header=next(reader))).encode
        # Warm-up: the first sends wait for metadata and the idempotent producer id (about 0.5 s on
        # Tansu); that is start-up, not steady-state latency, so it is excluded.
        for fields, _ in zip(reader, range(2000), strict=False):
            key, buf = encode(fields, 0)
            buf[:5] = b"\x00\x00\x00\x00\x01"
            producer.produce(topic, bytes(buf), key)
        producer.flush(30)
        total = int(rate * seconds)
        per_slice = max(1, rate // 100)
        cpu_before = cpu_seconds()  # after the warm-up
        start = time.perf_counter()
        sent = 0
        while sent < total:
            for fields in reader:
                key, buf = encode(fields, 0)
                buf[:5] = b"\x00\x00\x00\x00\x01"
                producer.produce(topic, bytes(buf), key, on_delivery=on_delivery)
                sent += 1
                if sent % per_slice == 0:
                    break
            producer.poll(0)
            pause = start + sent / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        producer.flush(30)
    cpu_us = (cpu_seconds() - cpu_before) / max(1, sent) * 1e6
    return {"rate": rate, "acked": len(latencies), "failed": failed[0], "cpu_us_per_row": cpu_us, "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "max_ms": max(latencies) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="producer processes (sharded by symbol)")
    parser.add_argument("--rates", default="", help="comma-separated rows/s for paced latency runs, e.g. 10000,50000")
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--sweep", action="store_true", help="try batching settings instead of the defaults")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "k2-bench-producer")
    args = parser.parse_args()

    import logging

    logging.disable(logging.INFO)
    sample_dir = args.data_dir / f"trades-{args.rows}"
    csv_path = sample_dir / "trades.csv"
    if not csv_path.exists():
        print(f"generating {args.rows:,} trades in {sample_dir} …", flush=True)
        write_sample(out_dir=sample_dir, seed=2014, trades=args.rows, days=20, quotes_per_trade=0)
    size_mb = csv_path.stat().st_size / 1e6

    var_dir = Path(tempfile.mkdtemp(prefix="k2-bench-broker-"))
    port = free_port()
    status = broker.start(port=port, var_dir=var_dir)
    try:
        base = ProducerSettings(bootstrap_servers=status.address)
        variants = [("default", base)]
        if args.sweep:
            variants = [(f"linger {linger} ms, queue {queue:,}", replace(base, linger_ms=linger, queue_max_messages=queue))
                        for linger in (5, 20) for queue in (20_000, 100_000, 500_000)]
        print(f"{machine_line()} · file {size_mb:.0f} MB, {args.rows:,} rows · workers {args.workers}", flush=True)
        for label, settings in variants:
            runs = []
            for i in range(args.runs):
                topic_class = f"bench{port}x{len(runs)}{abs(hash(label)) % 1000}"
                create_topics(status.address, declared_topics(asset_class=topic_class))
                started = time.perf_counter()
                run = one_run(csv_path, settings, topic_class, args.workers)
                runs.append(run)
                print(f"  [{label}] run {i + 1}: {run['rows_per_s']:,.0f} rows/s acked ({run['seconds']:.2f} s, "
                      f"wall {time.perf_counter() - started:.2f} s), ack latency p50 {run['p50_ms']:.1f} ms, "
                      f"p99 {run['p99_ms']:.1f} ms, max {run['max_ms']:.1f} ms, producer CPU {run['cpu_us_per_row']:.1f} µs/row, "
                      f"load {run['load_min']:.1f}–{run['load_max']:.1f}", flush=True)
            if not runs:
                continue
            print(f"{label}: throughput {fmt_spread((r['rows_per_s'] for r in runs), '{:,.0f}', 'rows/s')}; "
                  f"ack p50 {fmt_spread((r['p50_ms'] for r in runs), unit='ms')}; "
                  f"ack p99 {fmt_spread((r['p99_ms'] for r in runs), unit='ms')}; "
                  f"producer CPU {fmt_spread((r['cpu_us_per_row'] for r in runs), unit='µs/row')}; "
                  f"{load_range(runs)}", flush=True)
        for rate in [int(r) for r in args.rates.split(",") if r]:
            paced_runs = []
            for i in range(args.runs):
                topic_class = f"pace{port}x{rate}x{i}"
                create_topics(status.address, declared_topics(asset_class=topic_class))
                load = LoadSampler().start()
                paced = paced_latency(csv_path, ProducerSettings(bootstrap_servers=status.address), topic_class, rate,
                                      args.rate_seconds)
                paced.update(load.stop())
                paced_runs.append(paced)
                print(f"  paced {rate:,} rows/s for {args.rate_seconds:g} s, run {i + 1}: acked {paced['acked']:,}, "
                      f"failed {paced['failed']}, ack latency p50 {paced['p50_ms']:.1f} ms, p99 {paced['p99_ms']:.1f} ms, "
                      f"max {paced['max_ms']:.1f} ms, CPU {paced['cpu_us_per_row']:.1f} µs/row, "
                      f"load {paced['load_min']:.1f}–{paced['load_max']:.1f}", flush=True)
            print(f"paced {rate:,} rows/s: ack p50 {fmt_spread((r['p50_ms'] for r in paced_runs), unit='ms')}; "
                  f"ack p99 {fmt_spread((r['p99_ms'] for r in paced_runs), unit='ms')}; "
                  f"CPU {fmt_spread((r['cpu_us_per_row'] for r in paced_runs), unit='µs/row')}; {load_range(paced_runs)}",
                  flush=True)
    finally:
        broker.stop(port=port, var_dir=var_dir)


if __name__ == "__main__":
    main()
