"""ADR #012: several consumers in one group split the partitions between them, and together
write every message to the table exactly once."""

from __future__ import annotations

import threading
import time

import pytest

from catalog.engine.iceberg import load_catalog
from ingestion.engine.consumer import IcebergConsumer, MemoryGapSink
from tests.consumer.conftest import create_topic, encode_trades, make_config, produce, table_rows, trade


@pytest.mark.django_db(transaction=True)
def test_two_members_of_one_group_split_the_partitions_and_write_each_message_once(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:  # type: ignore[no-untyped-def]
    topic = f"market.equities.trades.g{unique}"
    create_topic(kafka_bootstrap, topic, partitions=4)
    stop = threading.Event()
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, batch_size=50)
    members = [IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink(),
                               stop_signal=stop.is_set) for _ in range(2)]
    threads = [threading.Thread(target=m.run, daemon=True) for m in members]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        # Both members hold partitions once the group has settled (each assignment is recorded).
        while time.monotonic() < deadline and not all(m._sent_to_table_upto for m in members):
            time.sleep(0.2)
        assert all(m._sent_to_table_upto for m in members), "the group never gave both members partitions"
        owned = [set(m._sent_to_table_upto) for m in members]
        assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == 4

        symbols = [f"S{i}" for i in range(12)]
        records = [trade(sym, seq) for seq in range(1, 26) for sym in symbols]
        produce(kafka_bootstrap, topic, encode_trades(registry, topic, records))
        while time.monotonic() < deadline and sum(m.stats.rows_written for m in members) < len(records):
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert all(m.stats.rows_written > 0 for m in members), [m.stats.rows_written for m in members]
    assert sum(m.stats.rows_written for m in members) == len(records)
    rows = table_rows(catalog_config)
    positions = [(r["source_partition"], r["source_offset"]) for r in rows]
    assert len(positions) == len(set(positions)) == len(records)
    assert sum(m.stats.gaps for m in members) == 0  # each symbol's stream stayed whole on one member
