"""Issue 11 items 4-5 (and issue 13's per-partition lag): lag per assigned partition, true on the
embedded broker (Tansu answers watermark and ListOffsets queries with the base offset of the last
record batch + 1, not the log end), right after a restart, and the group aligned to the table's
offsets so outside tools see no phantom lag. Real broker, real Iceberg table."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from catalog.engine.iceberg import load_catalog
from ingestion.engine.consumer import ConsumerStats, IcebergConsumer, MemoryGapSink
from k2core import metrics
from tests.consumer.conftest import committed_offsets, create_topic, encode_trades, make_config, table_rows, trade


def _produce_in_batches(bootstrap: str, topic: str, registry: Any, per_partition: dict[int, list[int]]) -> None:
    """Each partition gets its own symbol's records (sequence 1, 2, …), flushed in several requests
    (several record batches in the log: what makes Tansu's watermark differ from the log end)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for partition, sizes in per_partition.items():
        seq = 0
        for size in sizes:
            records = [trade(f"P{partition}", seq + i + 1) for i in range(size)]
            seq += size
            for key, value in encode_trades(registry, topic, records):
                producer.produce(topic, key=key, value=value, partition=partition)
            assert producer.flush(15) == 0


def _lag_series(group: str) -> dict[str, float]:
    return {s.labels["partition"]: s.value for m in metrics.CONSUMER_LAG.collect() for s in m.samples
            if s.labels.get("group") == group}


def _start(config: Any, catalog_config: Any, registry: Any) -> tuple[IcebergConsumer, threading.Event,
                                                                       threading.Thread, list[dict]]:
    stop = threading.Event()
    beats: list[dict] = []
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink(),
                             stop_signal=stop.is_set, heartbeat=lambda s: beats.append(s.as_dict()))
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    return engine, stop, thread, beats


def _wait(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)
    assert predicate()


@pytest.mark.django_db(transaction=True)
def test_caught_up_consumer_restarted_reports_lag_0_per_partition_and_the_group_sees_no_phantom_lag(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    topic = f"market.equities.trades.l{unique}"
    group = f"g-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    _produce_in_batches(kafka_bootstrap, topic, registry, {0: [40, 40, 40], 1: [60, 60], 2: [1, 1, 1, 1]})
    ends = [120, 120, 4]

    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, batch_size=50,
                         progress_interval_s=0.2)
    engine, stop, thread, beats = _start(config, catalog_config, registry)
    try:
        # the Kafka commit after the last batch is asynchronous: its acknowledgement (last_commit_at)
        # may come a beat after the table's offsets made the lag 0
        _wait(lambda: engine.stats.rows_written == sum(ends) and beats and beats[-1]["lag"] == 0
              and len(beats[-1]["partitions"]) == 3 and all(p["last_commit_at"] for p in beats[-1]["partitions"]))
        first = beats[-1]
        assert _lag_series(group) == {"0": 0.0, "1": 0.0, "2": 0.0}
    finally:
        stop.set()
        thread.join(30)
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in first["partitions"]] == \
        [(0, 120, 120, 0), (1, 120, 120, 0), (2, 4, 4, 0)]
    assert all(p["topic"] == topic and p["last_commit_at"].endswith("+00:00") for p in first["partitions"])
    assert first["member_id"]
    assert _lag_series(group) == {}  # the partitions went with the consumer: no stale series

    # an outside reset (or a crash between the Iceberg and the Kafka commit) leaves the group behind the table
    outside = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    outside.commit(offsets=[TopicPartition(topic, p, 0) for p in range(3)], asynchronous=False)
    outside.close()

    # restarted and caught up: nothing fetched yet on any partition, and still lag 0 everywhere
    engine, stop, thread, beats = _start(config, catalog_config, registry)
    try:
        _wait(lambda: beats and len(beats[-1]["partitions"]) == 3
              and all(p["lag"] is not None for p in beats[-1]["partitions"]))
        restarted = beats[-1]
        _wait(lambda: committed_offsets(kafka_bootstrap, group, topic, 3) == ends, timeout=20)
    finally:
        stop.set()
        thread.join(30)
    assert [(p["committed"], p["lag"]) for p in restarted["partitions"]] == [(120, 0), (120, 0), (4, 0)]
    assert restarted["lag"] == 0
    # never a phantom: until the first fetch answers, a partition's lag is unknown (None), not the log's size
    assert {p["lag"] for beat in beats for p in beat["partitions"]} <= {0, None}
    assert len(table_rows(catalog_config)) == sum(ends)  # and nothing was written twice


@pytest.mark.django_db(transaction=True)
def test_lag_counts_exactly_the_unread_messages_on_the_embedded_broker(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    topic = f"market.equities.trades.u{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    _produce_in_batches(kafka_bootstrap, topic, registry, {0: [30, 30, 30], 1: [45, 45], 2: [5, 5, 5]})
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, batch_size=20,
                         max_messages=60)
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    stats: ConsumerStats = engine.run()
    # 195 in the logs, 60 read and written: exactly 135 unread, split per partition as read
    assert stats.rows_written == 60
    assert stats.lag == 135
    by_partition = {p["partition"]: p for p in stats.partitions}
    assert [by_partition[p]["end"] for p in range(3)] == [90, 90, 15]
    written = {p: 0 for p in range(3)}
    for row in table_rows(catalog_config):
        written[row["source_partition"]] += 1
    assert {p: by_partition[p]["lag"] for p in range(3)} == {0: 90 - written[0], 1: 90 - written[1],
                                                             2: 15 - written[2]}
