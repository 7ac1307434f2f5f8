"""Batches sized from what is waiting (issue #15 item 1): large ones while catching up a backlog,
a small one at once when traffic is thin. Real broker and Iceberg; behaviour, not timing: the
batches are counted (one Iceberg snapshot each)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from catalog.engine.iceberg import load_catalog
from ingestion.engine.consumer import ConsumerConfig, IcebergConsumer, MemoryGapSink
from tests.consumer.conftest import create_topic, encode_trades, produce, run_in_thread, table_rows, trade


def _config(bootstrap: str, topic: str, unique: str, namespace: str, **kw: object) -> ConsumerConfig:
    """The engine's own batching defaults (batch_size, batch_floor, max_batch_ms) unless given."""
    return ConsumerConfig(bootstrap_servers=bootstrap, data_type="trades", topics=(topic,), group_id=f"g-{unique}",
                          session_timeout_ms=6000, idle_poll_s=0.2, namespace=namespace, **kw)  # type: ignore[arg-type]


def _snapshots(catalog_config) -> int:  # noqa: ANN001
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    return len(table.metadata.snapshots)


def _counting_consumer(kafka_bootstrap: str, topic: str, unique: str, catalog_config, registry,  # noqa: ANN001
                       **kw: object) -> tuple[IcebergConsumer, list[int], threading.Event]:
    """The consumer, the size of each batch it commits (in order), and an event set at each commit."""
    sizes: list[int] = []
    committed = threading.Event()

    def on_commit(rows, _at: float) -> None:  # noqa: ANN001
        sizes.append(rows.num_rows)
        committed.set()

    engine = IcebergConsumer(_config(kafka_bootstrap, topic, unique, catalog_config.namespace, **kw),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink(),
                             on_batch_committed=on_commit)
    return engine, sizes, committed


@pytest.mark.django_db(transaction=True)
def test_with_a_backlog_the_consumer_writes_large_batches(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    topic = f"market.equities.trades.bl{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    count = 20_000
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade(f"S{i % 50}", i // 50 + 1)
                                                                    for i in range(count)]))
    engine, sizes, _ = _counting_consumer(kafka_bootstrap, topic, unique, catalog_config, registry, max_messages=count,
                                          max_batch_ms=5000)
    engine.run()
    rows = table_rows(catalog_config)
    assert len({(r["source_partition"], r["source_offset"]) for r in rows}) == len(rows) == count  # each once
    # ADR #015's 1,000 would take 20 commits: the backlog goes in a few large ones
    assert engine.stats.batches == len(sizes) == _snapshots(catalog_config) <= 4
    assert max(sizes) >= 5000
    assert engine.stats.gaps == 0


@pytest.mark.django_db(transaction=True)
def test_with_thin_traffic_a_message_is_written_at_once_in_its_own_small_batch(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    """A batch age of 60 s and a floor of 1,000: neither is waited for when nothing more is
    coming, so each lone message is committed on its own, well before the age bound."""
    topic = f"market.equities.trades.th{unique}"
    create_topic(kafka_bootstrap, topic)
    engine, sizes, committed = _counting_consumer(kafka_bootstrap, topic, unique, catalog_config, registry,
                                                  max_batch_ms=60_000)
    thread = run_in_thread(engine)
    try:
        for seq in (1, 2, 3):
            committed.clear()
            produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", seq)]))
            assert committed.wait(30), f"message {seq} not written within 30 s (the batch age is 60 s)"
            time.sleep(0.2)
    finally:
        engine.request_stop()
        thread.join(timeout=60)
    assert sizes == [1, 1, 1]
    assert sorted(r["sequence_number"] for r in table_rows(catalog_config)) == [1, 2, 3]
    assert _snapshots(catalog_config) == 3


@pytest.mark.django_db(transaction=True)
def test_a_steady_trickle_is_committed_at_most_once_per_min_commit_interval(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    """A message after a quiet spell goes at once; the trickle that follows (20 messages ~50 ms
    apart, which would otherwise each get their own commit) waits for the interval since the last
    hand-over and goes in one commit (two, should the trickle straddle an interval's end)."""
    topic = f"market.equities.trades.tr{unique}"
    create_topic(kafka_bootstrap, topic)
    engine, sizes, first = _counting_consumer(kafka_bootstrap, topic, unique, catalog_config, registry,
                                              max_batch_ms=60_000, min_commit_interval_ms=5000)
    values = encode_trades(registry, topic, [trade("BHP", seq) for seq in range(1, 22)])
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    thread = run_in_thread(engine)
    try:
        producer.produce(topic, key=values[0][0], value=values[0][1])
        assert producer.flush(10) == 0
        assert first.wait(30), "the lone first message was not written within 30 s (the batch age is 60 s)"
        for key, value in values[1:]:
            producer.produce(topic, key=key, value=value)
            assert producer.flush(10) == 0
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while sum(sizes) < len(values) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        engine.request_stop()
        thread.join(timeout=60)
    assert sum(sizes) == len(values), sizes
    assert sizes[0] == 1, sizes
    assert len(sizes) <= 3, f"the trickle took {len(sizes) - 1} commits: {sizes}"
    assert sorted(r["sequence_number"] for r in table_rows(catalog_config)) == list(range(1, 22))


@pytest.mark.parametrize(("interval", "accepted"), [(0, True), (60_000, True), (-1, False), (60_001, False)])
def test_the_engine_takes_a_commit_interval_from_0_to_its_bound_and_refuses_others_saying_so(
        interval: int, accepted: bool) -> None:
    from ingestion.engine.limits import MAX_COMMIT_INTERVAL_MS

    assert MAX_COMMIT_INTERVAL_MS == 60_000
    if accepted:
        assert _config("b:1", "t", "u", "ns", min_commit_interval_ms=interval).min_commit_interval_ms == interval
        return
    with pytest.raises(ValueError, match=rf"min_commit_interval_ms must be from 0 to 60000 \(ms\), got {interval}$"):
        _config("b:1", "t", "u", "ns", min_commit_interval_ms=interval)
