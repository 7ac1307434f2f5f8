"""Batches sized from what is waiting (issue #15 item 1): large ones while catching up a backlog,
a small one at once when traffic is thin. Real broker and Iceberg; behaviour, not timing: the
batches are counted (one Iceberg snapshot each)."""

from __future__ import annotations

import threading
import time

import pytest

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


@pytest.mark.django_db(transaction=True)
def test_with_a_backlog_the_consumer_writes_large_batches(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    topic = f"market.equities.trades.bl{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    count = 20_000
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade(f"S{i % 50}", i // 50 + 1)
                                                                    for i in range(count)]))
    sizes: list[int] = []
    engine = IcebergConsumer(_config(kafka_bootstrap, topic, unique, catalog_config.namespace, max_messages=count,
                                     max_batch_ms=5000),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink(),
                             on_batch_committed=lambda rows, _at: sizes.append(rows.num_rows))
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
    sizes: list[int] = []
    committed = threading.Event()

    def on_commit(rows, _at: float) -> None:  # noqa: ANN001
        sizes.append(rows.num_rows)
        committed.set()

    engine = IcebergConsumer(_config(kafka_bootstrap, topic, unique, catalog_config.namespace, max_batch_ms=60_000),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink(),
                             on_batch_committed=on_commit)
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
