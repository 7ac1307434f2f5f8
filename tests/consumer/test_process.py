"""`manage.py consume` as a real process: SIGTERM is graceful, SIGKILL between the Iceberg and the
Kafka commits does not duplicate anything (ADR #003, #016, and the issue's exactly-once rule)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from catalog.registry import EmbeddedRegistry
from tests.consumer.conftest import (
    committed_offsets,
    consume_process,
    create_topic,
    encode_trades,
    produce,
    subprocess_env,
    table_rows,
    trade,
)


@pytest.mark.django_db(transaction=True)
def test_sigkill_between_iceberg_and_kafka_commit_then_restart_writes_every_message_exactly_once(
        kafka_bootstrap, iceberg_tables, catalog_config, unique) -> None:
    topic = f"market.equities.trades.k{unique}"
    group = f"g-{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(EmbeddedRegistry(), topic, [trade(f"S{i % 3}", i // 3 + 1) for i in range(300)]))
    args = ["--topic", topic, "--group", group, "--batch-size", "100", "--max-batch-ms", "2000",
            "--namespace", catalog_config.namespace]
    env = subprocess_env(bootstrap=kafka_bootstrap, catalog_config=catalog_config)
    proc = consume_process([*args, "--max-messages", "300"], env, faults=["--kill-after-table-commits", "2"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, out
    # killed after the 2nd Iceberg commit, before its Kafka commit
    assert len(table_rows(catalog_config)) == 200
    assert committed_offsets(kafka_bootstrap, group, topic) == [100]

    proc = consume_process([*args, "--max-messages", "100"], env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    offsets = sorted(r["source_offset"] for r in table_rows(catalog_config))
    assert offsets == list(range(300))  # every message once: none lost, none twice
    assert committed_offsets(kafka_bootstrap, group, topic) == [300]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.django_db(transaction=True)
def test_sigterm_mid_stream_commits_offsets_and_loses_nothing(kafka_bootstrap, iceberg_tables, catalog_config,
                                                              unique, signum) -> None:
    topic = f"market.equities.trades.t{unique}"
    group = f"g-{unique}"
    create_topic(kafka_bootstrap, topic)
    records = [trade("BHP", i + 1) for i in range(6000)]
    encoded = encode_trades(EmbeddedRegistry(), topic, records)
    produce(kafka_bootstrap, topic, encoded[:500])
    stop_producing = threading.Event()
    produced = [500]

    def keep_producing() -> None:  # a steady stream while the consumer runs and is stopped
        while not stop_producing.is_set() and produced[0] < len(encoded):
            produce(kafka_bootstrap, topic, encoded[produced[0]:produced[0] + 50])
            produced[0] += 50
            time.sleep(0.1)

    args = ["--topic", topic, "--group", group, "--batch-size", "50", "--max-batch-ms", "100",
            "--namespace", catalog_config.namespace, "--progress-interval", "1"]
    env = subprocess_env(bootstrap=kafka_bootstrap, catalog_config=catalog_config)
    proc = consume_process(args, env)
    producer = threading.Thread(target=keep_producing)
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(table_rows(catalog_config)) < 200:
            time.sleep(0.3)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_producing.set()
        producer.join()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "finished:" in out and "batches" in out
    assert "msg/s" in out and "lag" in out  # the periodic one-line progress report
    written = sorted(r["source_offset"] for r in table_rows(catalog_config))
    committed = committed_offsets(kafka_bootstrap, group, topic)[0]
    assert written == list(range(committed))  # all that was read was written and committed
    assert 200 <= committed < produced[0]  # stopped mid-stream

    proc = consume_process([*args, "--max-messages", str(produced[0] - committed)], env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert sorted(r["source_offset"] for r in table_rows(catalog_config)) == list(range(produced[0]))


@pytest.mark.django_db(transaction=True)
def test_unreachable_broker_and_catalog_give_clear_errors(catalog_config, unique) -> None:
    from tests.conftest import free_port

    closed = f"127.0.0.1:{free_port()}"
    args = ["--topic", "market.equities.trades.asx", "--namespace", catalog_config.namespace, "--max-messages", "1"]
    no_broker = consume_process(args, subprocess_env(bootstrap=closed, catalog_config=catalog_config))
    bad_catalog_env = subprocess_env(bootstrap=closed, catalog_config=catalog_config)
    bad_catalog_env["K2_ICEBERG_CATALOG_URI"] = f"postgresql+psycopg://postgres@{closed}/nope"
    bad_catalog_env["K2_CATALOG_RETRY_SECONDS"] = "2"  # waited for that long first (test_disk_and_startup_faults.py)
    no_catalog = consume_process(args, bad_catalog_env)
    out_broker, _ = no_broker.communicate(timeout=60)
    out_catalog, _ = no_catalog.communicate(timeout=60)
    assert no_broker.returncode == 1
    assert f"cannot reach Kafka at {closed}" in out_broker and "K2_KAFKA_BOOTSTRAP" in out_broker
    assert no_catalog.returncode == 1
    assert "cannot reach the Iceberg catalog" in out_catalog and "K2_ICEBERG_CATALOG_URI" in out_catalog


@pytest.mark.django_db(transaction=True)
def test_failed_commit_on_the_commit_thread_stops_the_loop_and_kafka_never_runs_ahead_of_the_table(
        kafka_bootstrap, iceberg_tables, catalog_config, unique, registry) -> None:
    """The next batch is decoded while the previous one commits on another thread: a commit that
    fails there must stop the consumer with that error, Kafka's committed offset must not pass
    what the table holds, and a restart must write every message exactly once."""
    from pyiceberg.exceptions import NoSuchTableError

    from catalog.engine.iceberg import load_catalog
    from ingestion.engine.consumer import IcebergConsumer, MemoryGapSink
    from tests.consumer.conftest import encode_trades, make_config, run_consumer
    from tests.consumer.test_writer import FailingTable

    topic = f"market.equities.trades.f{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", s) for s in range(1, 501)]))
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, batch_size=100,
                         max_batch_ms=2000, max_messages=500)
    catalog = load_catalog(catalog_config)
    failing = FailingTable(catalog.load_table(f"{catalog_config.namespace}.trades"),
                           NoSuchTableError("table dropped under the consumer"), 1, after=2)
    engine = IcebergConsumer(config, catalog=catalog, registry=registry, gap_sink=MemoryGapSink(), table=failing)
    with pytest.raises(Exception, match="table dropped under the consumer"):
        engine.run()
    in_table = sorted(r["source_offset"] for r in table_rows(catalog_config))
    assert in_table == list(range(200))  # batches 1 and 2 committed, batch 3 failed, nothing after it
    assert committed_offsets(kafka_bootstrap, f"g-{unique}", topic) == [200]

    engine = run_consumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                                      batch_size=100, max_batch_ms=2000, max_messages=300), catalog_config, registry)
    assert sorted(r["source_offset"] for r in table_rows(catalog_config)) == list(range(500))
    assert engine.stats.gaps == 0  # sequences resumed from the table: no false gap at 201
