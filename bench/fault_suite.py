"""Fault suite (issue 11): crash a real `manage.py consume` over and over, take its catalog away
once, and count what is lost or duplicated in the table with plain DuckDB.

What it sets up, all its own: an embedded Kafka broker (Tansu) on a free port, a throwaway
Postgres cluster (initdb in a temp dir, free port) as the Iceberg SQL catalog, a temporary
warehouse, and a Django database on the shared Postgres (`k2_fault_<id>`, dropped at the end)
for the embedded schema registry and the gap table.

Then: produce `--messages` trades (keyed by symbol over `--partitions` partitions, sequence
numbers in order), and run `manage.py consume` as a subprocess `--kills` times, each time
SIGKILLed at a random point (`--seed`): odd rounds right after a random 1st-4th Iceberg commit,
before its Kafka commit (run by `tests.consumer.faulty_consume`, which wraps the engine's commit hook), the others at a
random moment up to `--max-delay` s after the round's first commit. In the middle round, at such
a moment, the catalog Postgres is stopped for `--outage` seconds (fast shutdown: open
transactions are cut) and started again; that consumer must survive it (its retry budget,
K2_CATALOG_RETRY_SECONDS, is 60 s by default). Then, with `--disk-full` seconds, a round with
the warehouse disk full (the warehouse is on a tmpfs of `--disk-mb` MB, filled to ENOSPC for
that long once the round's consumer has committed something, then emptied): the consumer must
wait and write on, and is then stopped with SIGTERM. The last run is started while the catalog
Postgres is down (`--start-outage` seconds, then started): it must wait for the catalog, not
exit; it is left to finish and stopped with SIGTERM. The table is read with DuckDB
`iceberg_scan` (metadata location from the catalog's `iceberg_tables` row, no K2 code) and
compared with the (partition, offset) of every produced message:

    lost       = produced positions missing from the table
    duplicated = rows in the table beyond one per position

    .venv/bin/python bench/fault_suite.py --messages 30000 --kills 6 --outage 30 --disk-full 20 --start-outage 20 --seed 1

Exit status 1 when anything was lost or duplicated, or a consumer died of a fault it should
have waited out; 2 when every message was in the table before the rounds ran out (a fast machine:
the rounds left would have nothing to interrupt), saying to run again with more `--messages`.
Not part of the test run (`tests/consumer/test_catalog_faults.py` and
`tests/consumer/test_disk_and_startup_faults.py` cover each fault on its own). The full disk
needs the right to mount a tmpfs (root): without it that round is left out, and the suite says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

BASE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE))

from bench.common import PG_ADMIN, LoadSampler, cpu_seconds, free_port, machine_line  # noqa: E402
from tests.faults import SmallTmpfs, ThrowawayPostgres, duckdb_offsets  # noqa: E402


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _produce(bootstrap: str, topic: str, messages: int, symbols: int) -> set[tuple[int, int]]:
    """Produce the trades; the (partition, offset) of each acknowledged message."""
    from confluent_kafka import Producer

    from catalog.engine import schemas, wire
    from catalog.registry import EmbeddedRegistry

    schema_id = EmbeddedRegistry().register(schemas.subject_name(topic), schemas.schema_text("trades"))
    parsed = schemas.parsed_schema("trades")
    base = datetime(2026, 3, 10, tzinfo=UTC)
    positions: set[tuple[int, int]] = set()
    errors: list[str] = []

    def delivered(err, msg) -> None:  # noqa: ANN001
        if err is not None:
            errors.append(err.str())
        else:
            positions.add((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "partitioner": "murmur2_random"})
    for i in range(messages):
        symbol = f"F{i % symbols:03d}"
        seq = i // symbols + 1
        record = {"symbol": symbol, "company_id": 1, "exchange": "ASX", "exchange_timestamp": base + timedelta(seconds=seq),
                  "price": Decimal("10.250000"), "volume": 100, "qualifiers": 0, "venue": "X", "buyer_id": None,
                  "ingestion_timestamp": datetime.now(UTC), "sequence_number": seq}
        while True:
            try:
                producer.produce(topic, key=symbol.encode(), value=wire.encode(schema_id, parsed, record),
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 5000 == 0:
            producer.poll(0)
    if producer.flush(60) or errors:
        raise SystemExit(f"producing failed: {errors[:3]}")
    return positions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs at random points")
    parser.add_argument("--max-delay", type=float, default=3.0,
                        help="a random kill comes up to this many seconds after the run's first commit")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the catalog Postgres is down (0: never)")
    parser.add_argument("--disk-full", type=float, default=20.0,
                        help="seconds the warehouse disk is kept full in a round of its own (0: never)")
    parser.add_argument("--disk-mb", type=int, default=256, help="size of the warehouse's tmpfs")
    parser.add_argument("--start-outage", type=float, default=20.0,
                        help="seconds the catalog is down when the last consumer starts (0: up)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"k2-fault-{run_id}-"))
    db = f"k2_fault_{run_id}"
    started = time.monotonic()
    load = LoadSampler(5.0).start()
    _log(machine_line())

    from ingestion.engine import broker

    port = free_port()
    broker_dir = work / "broker"
    bootstrap = broker.start(port=port, var_dir=broker_dir).address
    pg = ThrowawayPostgres()
    pg.start()
    disk: SmallTmpfs | None = None
    disk_note = ""
    if args.disk_full > 0:
        try:
            disk = SmallTmpfs(size_mb=args.disk_mb)
        except RuntimeError as exc:
            disk_note = f"full-disk round left out: {exc}"
            _log(disk_note)
    warehouse = disk.path if disk is not None else work / "warehouse"
    _log(f"broker {bootstrap}, catalog Postgres 127.0.0.1:{pg.port}, warehouse {warehouse}, work dir {work}")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}", "K2_KAFKA_BOOTSTRAP": bootstrap,
           "K2_ICEBERG_CATALOG_URI": pg.sqlalchemy_url, "K2_WAREHOUSE": warehouse.as_uri(),
           "K2_KAFKA_SESSION_TIMEOUT_MS": "6000", "K2_LOG_JSON": "1", "K2_LOG_LEVEL": "WARNING",
           "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "k2portal.settings"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.update(env)
    namespace = f"fault_{run_id}"
    topic = f"market.equities.trades.fault{run_id}"
    kills = 0
    survived: bool | None = None
    survived_disk: bool | None = None
    waited_at_start: bool | None = None
    outage_done = args.outage <= 0
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE, env=env, check=True)
        import django

        django.setup()
        from confluent_kafka.admin import AdminClient, NewTopic

        from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog

        ensure_tables(load_catalog(CatalogConfig(uri=pg.sqlalchemy_url, warehouse=env["K2_WAREHOUSE"],
                                                 namespace=namespace)), namespace)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[topic].result(30)
        produced = _produce(bootstrap, topic, args.messages, args.symbols)
        _log(f"produced {len(produced)} messages to {topic} ({args.partitions} partitions)")

        def in_table() -> list[tuple[int, int]]:
            return duckdb_offsets(pg.url, namespace)

        consume = ["consume", "--topic", topic, "--group", f"fault-{run_id}",
                   "--namespace", namespace, "--batch-size", str(args.batch_size), "--max-batch-ms", "200"]
        cmd = [sys.executable, "manage.py", *consume]
        log_file = open(work / "consume.log", "ab")  # noqa: SIM115 - closed at the end

        def wait_for_a_commit(since: int) -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None and len(in_table()) <= since:
                time.sleep(0.3)

        cpu_start = cpu_seconds()  # the consumer processes are children: counted once each is waited for
        for round_no in range(args.kills + 1):
            last = round_no == args.kills
            if not last and len(set(in_table())) >= len(produced):
                # a fast machine consumed everything before the rounds ran out: a round now would wait
                # for Iceberg commits that cannot come (and an exact round would hang until its timeout)
                _log(f"round {round_no}: every produced message is already in the table, so the rounds left "
                     f"have nothing to interrupt; run again with more --messages")
                return 2
            if last and disk is not None:  # before the last run: a round with the warehouse disk full
                at_start = len(in_table())
                proc = subprocess.Popen(cmd, cwd=BASE, env=env, stdout=log_file, stderr=subprocess.STDOUT)
                wait_for_a_commit(at_start)
                filled = disk.fill()
                held = len(in_table())
                _log(f"disk round: warehouse disk full ({filled:,} bytes of filler) for {args.disk_full:.0f} s")
                time.sleep(args.disk_full)
                survived_disk = proc.poll() is None
                _log(f"disk round: {len(in_table()) - held} rows committed while full; consumer "
                     f"{'alive' if survived_disk else 'DEAD'}; space given back")
                disk.free()
                wait_for_a_commit(held)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=120)
                _log(f"disk round: stopped with SIGTERM, exit {code} ({len(in_table())} rows in the table)")
                proc = None
            if last and args.start_outage > 0:  # the last run starts while the catalog is down
                pg.stop()
                log_file.flush()
                seen = (work / "consume.log").stat().st_size
                proc = subprocess.Popen(cmd, cwd=BASE, env=env, stdout=log_file, stderr=subprocess.STDOUT)
                deadline = time.monotonic() + 120  # Django's start-up takes seconds: from its first retry on
                while time.monotonic() < deadline and proc.poll() is None:
                    with open(work / "consume.log", "rb") as read:
                        read.seek(seen)
                        if b"catalog_unreachable_retry" in read.read():
                            break
                    time.sleep(0.3)
                _log(f"last round: consumer started with the catalog Postgres down, found it down; "
                     f"{args.start_outage:.0f} s more")
                time.sleep(args.start_outage)
                waited_at_start = proc.poll() is None
                pg.start()
                _log(f"last round: catalog Postgres started again; consumer {'waiting' if waited_at_start else 'DEAD'}")
            at_start = len(in_table())
            # odd rounds: SIGKILL right after a random Nth Iceberg commit, before its Kafka commit (the
            # test-side wrapper of the engine's commit hook); even rounds: at a random moment once it has
            # written something
            outage_round = not outage_done and round_no == args.kills // 2
            exact = not last and not outage_round and round_no % 2 == 1
            commits = rng.randint(1, 4)
            round_cmd = [sys.executable, "-m", "tests.consumer.faulty_consume", "--kill-after-table-commits", str(commits),
                         "--", *consume] if exact else cmd
            if proc is None:
                proc = subprocess.Popen(round_cmd, cwd=BASE, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            if outage_round:  # mid-run: once this round's consumer has committed something
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and proc.poll() is None and len(in_table()) <= at_start:
                    time.sleep(0.3)
                time.sleep(rng.uniform(0, args.max_delay))
                _log(f"round {round_no}: catalog Postgres stopped for {args.outage:.0f} s")
                pg.stop()
                time.sleep(args.outage)
                pg.start()
                outage_done = True
                alive = proc.poll() is None
                survived = alive
                _log(f"round {round_no}: catalog Postgres started again; consumer {'alive' if alive else 'DEAD'}")
            if last:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and proc.poll() is None:
                    if len(set(in_table())) >= len(produced):
                        break
                    time.sleep(2)
                time.sleep(2)  # anything it would write twice, it writes now
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=120)
                _log(f"final round: stopped with SIGTERM, exit {code}")
            elif exact:
                code = proc.wait(timeout=180)
                kills += code == -signal.SIGKILL
                _log(f"round {round_no}: killed itself after Iceberg commit {commits} (exit {code}; "
                     f"{len(in_table())} rows in the table)")
            else:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and proc.poll() is None and len(in_table()) <= at_start:
                    time.sleep(0.3)
                time.sleep(rng.uniform(0, args.max_delay))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait(timeout=30)
                _log(f"round {round_no}: SIGKILL ({len(in_table())} rows in the table)")
            proc = None
        log_file.close()
        consumer_cpu = cpu_seconds() - cpu_start

        rows = in_table()
        distinct = set(rows)
        result = {
            "produced": len(produced), "rows": len(rows), "distinct_positions": len(distinct),
            "lost": len(produced - distinct), "duplicated": len(rows) - len(distinct),
            "foreign": len(distinct - produced), "sigkills": kills, "catalog_outage_s": args.outage if outage_done else 0,
            "consumer_survived_outage": survived,
            "disk_full_s": args.disk_full if survived_disk is not None else 0, "consumer_survived_disk_full": survived_disk,
            "start_outage_s": args.start_outage if waited_at_start is not None else 0,
            "consumer_waited_for_catalog_at_start": waited_at_start, "note": disk_note,
            "seed": args.seed, "elapsed_s": round(time.monotonic() - started, 1), "cores": os.cpu_count(),
            # CPU of every consumer process (start-up, killed rounds and polling by this script included)
            "consumer_cpu_s": round(consumer_cpu, 1),
            "consumer_cpu_us_per_record": round(consumer_cpu / max(1, len(produced)) * 1e6, 1), **load.stop(),
        }
        print()
        print(f"produced {result['produced']:,}  rows in table {result['rows']:,}  lost {result['lost']:,}  "
              f"duplicated {result['duplicated']:,}  ({kills} SIGKILLs, catalog down {result['catalog_outage_s']:.0f} s, "
              f"consumer survived the outage: {survived}, disk full {result['disk_full_s']:.0f} s survived: "
              f"{survived_disk}, started with the catalog down {result['start_outage_s']:.0f} s and waited: "
              f"{waited_at_start}, "
              f"{result['elapsed_s']:.0f} s, seed {args.seed}; consumer processes' CPU {result['consumer_cpu_s']:.1f} s, "
              f"{result['consumer_cpu_us_per_record']:,.0f} µs per record; load {result['load_min']:.1f}–{result['load_max']:.1f})")
        if args.json:
            print(json.dumps(result))
        died = False in (survived, survived_disk, waited_at_start)
        return 1 if result["lost"] or result["duplicated"] or result["foreign"] or died else 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        pg.destroy()
        if disk is not None:
            disk.close()
        broker.stop(port=port, var_dir=broker_dir)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _log(f"consumer log kept in {work / 'consume.log'}")


if __name__ == "__main__":
    raise SystemExit(main())
