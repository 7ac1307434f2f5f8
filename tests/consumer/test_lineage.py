"""Issue 11 item 10: rows carry enough lineage to be unique across topics and broker lifetimes:
`source_topic` and `source_topic_id` (the Kafka topic id) beside `source_partition` and
`source_offset`. Read back with plain DuckDB `iceberg_scan` (no K2 code in the reading)."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicCollection
from confluent_kafka.admin import AdminClient

from catalog.engine.iceberg import load_catalog
from catalog.engine.writer import IcebergWriter
from ingestion.engine.decode import INDEX_COLUMN, BatchDecoder
from ingestion.gaps import OrmGapSink
from tests.consumer.conftest import (
    create_topic,
    encode_trade,
    encode_trades,
    make_config,
    produce,
    run_consumer,
    trade,
)
from tests.consumer.test_datatypes import _create_old_tables, _old_trade_rows
from tests.faults import PG_TEST_URL, duckdb_scan

T1, T2 = "market.equities.trades.asx", "market.equities.trades.chix"


def _lineage(result) -> list[tuple]:  # noqa: ANN001
    rows = sorted(result.table.to_pylist(), key=lambda r: r[INDEX_COLUMN])
    return [(r["source_topic"], r["source_topic_id"], r["source_partition"], r["source_offset"]) for r in rows]


def test_decoder_fills_topic_and_topic_id_per_message(decoder) -> None:
    values = [encode_trade(trade("BHP", i + 1)) for i in range(4)]
    result = decoder.decode(values, [0, 0, 1, 1], [5, 6, 5, 6], topics=[T1, T2, T1, T2], topic_ids={T1: "id-1"})
    assert _lineage(result) == [(T1, "id-1", 0, 5), (T2, None, 0, 6), (T1, "id-1", 1, 5), (T2, None, 1, 6)]


def test_decoder_takes_one_topic_for_the_whole_batch(decoder) -> None:
    result = decoder.decode([encode_trade(trade("BHP", 1)), encode_trade(trade("BHP", 2))], [3, 3], [0, 1], topics=T1,
                            topic_ids={T1: "id-1"})
    assert _lineage(result) == [(T1, "id-1", 3, 0), (T1, "id-1", 3, 1)]


def test_decoder_without_topics_leaves_the_topic_columns_null(decoder) -> None:
    result = decoder.decode([encode_trade(trade("BHP", 1))], [3], [0])
    assert _lineage(result) == [(None, None, 3, 0)]


def test_the_message_by_message_path_fills_the_same_lineage(decoder) -> None:
    # a body the schema cannot read sends its schema group down the one-by-one path
    values = [encode_trade(trade("BHP", 1)), b"\x00\x00\x00\x00\x01\xff", encode_trade(trade("BHP", 2))]
    result = decoder.decode(values, [0, 0, 0], [0, 1, 2], topics=[T1, T2, T2], topic_ids={T2: "id-2"})
    assert result.slow_rows == 2 and [p.index for p in result.poison] == [1]
    assert _lineage(result) == [(T1, None, 0, 0), (T2, "id-2", 0, 2)]


def test_decoder_refuses_topics_that_do_not_match_the_messages(decoder) -> None:
    with pytest.raises(ValueError, match="1 topics for 2 messages"):
        decoder.decode([encode_trade(trade("BHP", 1)), encode_trade(trade("BHP", 2))], [0, 0], [0, 1], topics=[T1])


def _consume_all(bootstrap: str, topic: str, count: int, unique: str) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lineage-{unique}-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(num_messages=count, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    assert len(got) == count, f"read {len(got)} of {count} messages from {topic}"
    return got


def _topic_id(admin: AdminClient, topic: str) -> str:
    return str(admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=10).topic_id)


def _write(decoder: BatchDecoder, writer: IcebergWriter, msgs: list, topic_ids: dict[str, str]) -> None:
    decoded = decoder.decode([m.value() for m in msgs], [m.partition() for m in msgs], [m.offset() for m in msgs],
                             topics=[m.topic() for m in msgs], topic_ids=topic_ids)
    assert decoded.poison == []
    writer.append(decoded.table.drop_columns([INDEX_COLUMN]))


def test_two_topics_and_a_recreated_topic_with_the_same_offsets_have_distinct_lineage_keys(
        kafka_bootstrap, iceberg_tables, catalog_config, unique, registry) -> None:
    one, other = f"market.equities.trades.l{unique[:6]}a", f"market.equities.trades.l{unique[:6]}b"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    decoder = BatchDecoder(data_type="trades", registry=registry)
    writer = IcebergWriter(iceberg_tables["trades"], table_name="trades")
    ids: dict[str, str] = {}
    try:
        for topic in (one, other):  # two topics: offsets 0..4 in both
            create_topic(kafka_bootstrap, topic)
            produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", i + 1) for i in range(5)]))
            ids[topic] = _topic_id(admin, topic)
            _write(decoder, writer, _consume_all(kafka_bootstrap, topic, 5, unique), ids)
        first_id = ids[one]
        # the broker's next lifetime of `one`: deleted and created again, offsets from 0 again
        admin.delete_topics([one])[one].result(timeout=15)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                create_topic(kafka_bootstrap, one)
                break
            except Exception:  # noqa: BLE001 - the deletion may still be in progress
                time.sleep(0.5)
        produce(kafka_bootstrap, one, encode_trades(registry, one, [trade("BHP", i + 6) for i in range(5)]))
        ids[one] = _topic_id(admin, one)
        assert ids[one] != first_id
        _write(decoder, writer, _consume_all(kafka_bootstrap, one, 5, unique), ids)
    finally:
        decoder.close()
    rows = duckdb_scan(PG_TEST_URL, catalog_config.namespace,
                       "SELECT source_topic, source_topic_id, source_partition, source_offset FROM {scan}")
    assert len(rows) == 15
    assert len({(p, o) for _, _, p, o in rows}) == 5  # partition and offset alone collide
    assert len({(t, p, o) for t, _, p, o in rows}) == 10  # the name tells the two topics apart, not the lifetimes
    assert len(set(rows)) == 15  # with the topic id every row is unique
    assert sorted({(t, i) for t, i, _, _ in rows}) == sorted([(one, first_id), (one, ids[one]), (other, ids[other])])
    # the table is readable as a whole by a fresh reader: the catalog's table is the one written
    assert load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades").scan().to_arrow().num_rows == 15


@pytest.mark.django_db(transaction=True)
def test_a_consumer_keeps_writing_into_a_table_created_before_the_topic_columns(
        kafka_bootstrap, catalog_config, unique, registry) -> None:
    catalog = load_catalog(catalog_config)
    table = _create_old_tables(catalog, catalog_config.namespace)["trades"]
    old_rows = _old_trade_rows(3)
    table.append(old_rows.set_column(12, "source_offset", pa.array([-3, -2, -1], pa.int64())).cast(old_rows.schema))
    topic = f"market.equities.trades.o{unique[:8]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", i + 1) for i in range(4)]))
    run_consumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=4),
                 catalog_config, registry, gap_sink=OrmGapSink())
    columns = [r[0] for r in duckdb_scan(PG_TEST_URL, catalog_config.namespace, "DESCRIBE SELECT * FROM {scan}")]
    rows = duckdb_scan(PG_TEST_URL, catalog_config.namespace,
                       "SELECT source_offset, source_topic FROM {scan} ORDER BY source_offset")
    assert columns[-2:] == ["source_topic", "source_topic_id"]
    assert [o for o, _ in rows] == [-3, -2, -1, 0, 1, 2, 3]
    assert [t for o, t in rows if o < 0] == [None, None, None]  # rows of the old K2 read NULL
