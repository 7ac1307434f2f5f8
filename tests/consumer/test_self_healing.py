"""Self-healing consumers (issue 13): a real Celery worker runs a consumer on the real broker;
SIGKILL of the worker or of its pool process gets the consumer marked failed with a reason and
restarted by the reconciler, and the Iceberg table holds every message exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection

from catalog.engine.iceberg import load_catalog
from ingestion import consumer_services
from ingestion.models import Consumer, ConsumerRun, Topic
from ingestion.tasks import reconcile_consumers
from k2core.duckdb_conn import connect, scan_sql
from k2portal.config import BASE_DIR
from tests.consumer.conftest import create_topic, encode_trades, produce, subprocess_env, trade


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _duckdb_counts(catalog, namespace: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(rows, distinct sequence numbers) of the trades table, read by DuckDB's iceberg_scan."""
    table = catalog.load_table(f"{namespace}.trades")
    if table.current_snapshot() is None:
        return 0, 0
    conn = connect()
    try:
        return conn.execute(f"SELECT count(*), count(DISTINCT sequence_number) FROM {scan_sql(table.metadata_location)}"
                            ).fetchone()
    finally:
        conn.close()


@pytest.fixture
def workers(k2_settings, kafka_bootstrap, catalog_config, unique) -> Iterator[list[subprocess.Popen[str]]]:  # type: ignore[no-untyped-def]
    """Two real prefork Celery workers (one pool process each) on a queue of this test's own."""
    queue = f"consumers-{unique}"
    k2_settings.K2_CONSUMER_QUEUE = queue
    env = subprocess_env(bootstrap=kafka_bootstrap, catalog_config=catalog_config,
                         extra={"K2_TEST_NAMESPACE": catalog_config.namespace, "K2_LOG_JSON": "1"})
    procs = [subprocess.Popen([sys.executable, "-m", "tests.consumer.celery_worker", queue, f"w{i}-{unique}@%h"],
                              cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
             for i in range(2)]
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the worker and its pool process
        proc.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("victim", ["worker", "pool_process"])
def test_sigkilled_consumer_is_marked_failed_restarted_and_writes_each_message_once(
        victim, workers, k2_settings, kafka_bootstrap, iceberg_tables, catalog_config, unique) -> None:
    from catalog.registry import EmbeddedRegistry

    topic_name = f"market.equities.trades.h{unique}"
    create_topic(kafka_bootstrap, topic_name, partitions=2)
    registry = EmbeddedRegistry()

    def batch(first: int, count: int) -> list[tuple[bytes, bytes]]:
        return encode_trades(registry, topic_name, [trade(f"S{s % 4}", s) for s in range(first, first + count)])

    produce(kafka_bootstrap, topic_name, batch(1, 300))
    catalog = load_catalog(catalog_config)
    topic = Topic.objects.create(name=topic_name, asset_class="equities", data_type="trades", exchange=f"h{unique}",
                                 partitions=2)
    consumer = Consumer.objects.create(name=f"h-{unique}", data_type="trades", topic=topic, group_id=f"g-{unique}",
                                       batch_size=50, max_batch_ms=100)
    consumer_services.start_consumer(consumer=consumer)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _duckdb_counts(catalog, catalog_config.namespace)[0] < 300:
        time.sleep(0.5)
    consumer.refresh_from_db()
    assert consumer.status == "running", (consumer.status, consumer.last_error)
    first_task = consumer.task_id
    pool_pid = int(consumer.worker.rsplit(" ", 1)[1])
    target = pool_pid if victim == "pool_process" else _parent_pid(pool_pid)
    assert target in {p.pid for p in workers} or victim == "pool_process"

    # messages keep arriving while the worker dies
    producer = threading.Thread(target=lambda: [produce(kafka_bootstrap, topic_name, batch(301 + 100 * i, 100))
                                                or time.sleep(0.2) for i in range(10)])
    producer.start()
    time.sleep(0.5)
    os.kill(target, signal.SIGKILL)
    killed_at = time.monotonic()

    failed_reason = restarted_at = None
    while time.monotonic() - killed_at < 60:
        reconcile_consumers.run(lock_name=f"k2:test:reconcile:{unique}")  # what beat runs every 5 s
        consumer.refresh_from_db()
        closed = ConsumerRun.objects.filter(consumer=consumer, task_id=first_task, ended_at__isnull=False).first()
        if closed is not None:
            failed_reason = closed.end_reason
        if consumer.status == "running" and consumer.task_id != first_task:
            restarted_at = time.monotonic()
            break
        time.sleep(1)
    producer.join(timeout=60)
    assert restarted_at is not None, (consumer.status, consumer.last_error)
    assert restarted_at - killed_at <= 30
    assert failed_reason, "the dead task's run was not closed with a reason"
    # a dead worker takes its pool process with it (PDEATHSIG): the heartbeat goes stale; a lost
    # pool process is reported by Celery's worker (task_failure with WorkerLostError), or seen by
    # the reconciler in the result backend
    expected = ("heartbeat stale",) if victim == "worker" else ("WorkerLostError", "no longer running")
    assert any(e in failed_reason for e in expected), failed_reason
    assert len(consumer.restart_times) == 1

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _duckdb_counts(catalog, catalog_config.namespace)[0] < 1300:
        time.sleep(0.5)
    time.sleep(2)  # nothing more may arrive
    assert _duckdb_counts(catalog, catalog_config.namespace) == (1300, 1300)
    runs = list(ConsumerRun.objects.filter(consumer=consumer).order_by("started_at"))
    assert len(runs) == 2 and runs[0].ended_at is not None and runs[1].ended_at is None
    assert not _alive(target) and not _alive(pool_pid)

    consumer_services.stop_consumer(consumer=consumer)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and consumer.status != "stopped":
        time.sleep(0.5)
        consumer.refresh_from_db()
    assert consumer.status == "stopped"
    catalog.engine.dispose()
    connection.close()
