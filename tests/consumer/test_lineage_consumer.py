"""The consumer fills the lineage columns and asks the data-type spec (needs the consumer.py change)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from catalog.engine.datatypes import DataType
from ingestion.gaps import OrmGapSink
from ingestion.models import SequenceGap
from tests.consumer.conftest import create_topic, encode_trades, make_config, produce, run_consumer, table_rows, trade
from tests.faults import PG_TEST_URL, duckdb_scan


def _lineage_rows(catalog_config) -> list[tuple]:  # noqa: ANN001
    return duckdb_scan(PG_TEST_URL, catalog_config.namespace,
                       "SELECT source_topic, source_topic_id, source_partition, source_offset FROM {scan}")


@pytest.mark.django_db(transaction=True)
def test_consumer_rows_are_unique_across_topics_and_a_recreated_topic(
        kafka_bootstrap, iceberg_tables, catalog_config, unique, registry) -> None:
    a, b = f"market.equities.trades.m{unique[:6]}a", f"market.equities.trades.m{unique[:6]}b"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for topic in (a, b):
        create_topic(kafka_bootstrap, topic)
        produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", i + 1) for i in range(5)]))
    pattern = rf"market\.equities\.trades\.m{unique[:6]}[ab]"
    run_consumer(make_config(kafka_bootstrap, "", unique, namespace=catalog_config.namespace, topic_pattern=pattern,
                             max_messages=10), catalog_config, registry, gap_sink=OrmGapSink())
    first_id = str(admin.describe_topics(TopicCollection([a]))[a].result(timeout=10).topic_id)
    admin.delete_topics([a])[a].result(timeout=15)
    deadline = time.monotonic() + 30
    while True:
        try:
            create_topic(kafka_bootstrap, a)
            break
        except Exception:  # noqa: BLE001 - the deletion may still be in progress
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    produce(kafka_bootstrap, a, encode_trades(registry, a, [trade("CBA", i + 1) for i in range(5)]))
    run_consumer(make_config(kafka_bootstrap, a, unique, namespace=catalog_config.namespace, max_messages=5),
                 catalog_config, registry, gap_sink=OrmGapSink())
    rows = _lineage_rows(catalog_config)
    assert len(rows) == 15 and len(set(rows)) == 15
    assert len({(p, o) for _, _, p, o in rows}) == 5
    ids = {t: set() for t in (a, b)}
    for t, i, _, _ in rows:
        ids[t].add(i)
    assert len(ids[a]) == 2 and first_id in ids[a] and None not in ids[a] and len(ids[b]) == 1


@pytest.mark.django_db(transaction=True)
def test_an_unsequenced_type_gets_no_gap_tracking(kafka_bootstrap, iceberg_tables, catalog_config, unique, registry,
                                                  monkeypatch) -> None:
    monkeypatch.setattr(DataType, "sequenced", property(lambda self: False))
    topic = f"market.equities.trades.u{unique[:8]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", s) for s in (1, 2, 5)]))
    run_consumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=3),
                 catalog_config, registry, gap_sink=OrmGapSink())
    assert len(table_rows(catalog_config)) == 3
    assert SequenceGap.objects.filter(topic=topic).count() == 0
