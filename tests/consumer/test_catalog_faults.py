"""Issue 11, items 1-3: ambiguous catalog commits, a second consumer group on the same table, and a
catalog outage. Faults are injected at real boundaries (a TCP proxy in front of Postgres, a
throwaway Postgres cluster that is stopped and started); the table is read back with plain
DuckDB `iceberg_scan` (tests/faults.py), not with K2 code."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from catalog.engine import fast_commit
from catalog.engine.iceberg import CatalogConfig, arrow_schema, ensure_tables, load_catalog
from catalog.engine.writer import (
    CatalogUnavailable,
    IcebergWriter,
    OffsetConflict,
    RetryPolicy,
    offsets_properties,
    recorded_offsets,
)
from ingestion.engine.consumer import IcebergConsumer, MemoryGapSink
from tests.consumer.conftest import (
    committed_offsets,
    create_topic,
    encode_trades,
    make_config,
    produce,
    run_consumer,
    run_in_thread,
    run_in_thread_with_errors,
    trade,
)
from tests.faults import PG_TEST_URL, CutAfterCommitProxy, assert_written_once, duckdb_offsets, wait_for

FAST = RetryPolicy(first_delay=0.05, max_delay=0.2, budget_seconds=10)


def _batch(n: int, start: int = 0, partition: int = 0) -> pa.Table:
    now = datetime(2026, 3, 10, 1, tzinfo=UTC)
    rows = [{"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
             "price": Decimal("1.000001"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
             "ingestion_timestamp": now, "sequence_number": i, "source_partition": partition, "source_offset": i}
            for i in range(start, start + n)]
    return pa.Table.from_pylist(rows, schema=arrow_schema("trades"))


@pytest.fixture
def proxied_catalog(catalog_config: CatalogConfig):  # type: ignore[no-untyped-def]
    """The test's catalog reached through a proxy that can cut the reply to a COMMIT."""
    proxy = CutAfterCommitProxy(5432)
    config = dataclasses.replace(catalog_config, uri=catalog_config.uri.replace("127.0.0.1:5432",
                                                                                f"127.0.0.1:{proxy.port}"))
    catalog = load_catalog(config)
    tables = ensure_tables(catalog, config.namespace)
    yield proxy, catalog, tables, config
    proxy.close()
    catalog.engine.dispose()
    real = load_catalog(catalog_config)
    for name in tables:
        real.drop_table(f"{config.namespace}.{name}")
    real.drop_namespace(config.namespace)
    real.engine.dispose()


def test_ambiguous_commit_is_written_once(proxied_catalog) -> None:
    """The catalog connection drops after Postgres committed the append but before the reply:
    the writer finds its batch in the reloaded table (the recorded offsets cover it), reports
    success, and the rows are in the table exactly once."""
    proxy, _catalog, tables, config = proxied_catalog
    writer = IcebergWriter(tables["trades"], table_name="trades", policy=FAST)
    writer.append(_batch(100, 0), properties=offsets_properties("g", {("t", 0): 100}))
    proxy.arm()
    result = writer.append(_batch(1000, 100), properties=offsets_properties("g", {("t", 0): 1100}))
    assert proxy.cuts == 1  # the fault did happen
    assert result.rows == 1000 and result.already_committed
    snapshot = tables["trades"].metadata.snapshot_by_id(result.snapshot_id)
    assert snapshot.summary["added-records"] == "1000" and snapshot.summary["k2.kafka.offsets"] == '{"t":{"0":1100}}'
    assert_written_once(duckdb_offsets(PG_TEST_URL, config.namespace), 1100)
    # and the writer goes on: the next batch lands on top
    writer.append(_batch(10, 1100), properties=offsets_properties("g", {("t", 0): 1110}))
    assert len(duckdb_offsets(PG_TEST_URL, config.namespace)) == 1110
    assert recorded_offsets(tables["trades"]) == {("t", 0): 1110}


# --- item 2: the offset record belongs to the table, whatever group writes it ---------------------
def _run_until(engine: IcebergConsumer, rows: int, timeout: float = 60) -> None:
    """Run `engine` in a thread until it has written `rows` rows (or `timeout`), then stop it."""
    thread = run_in_thread(engine)
    try:
        assert wait_for(lambda: engine.stats.rows_written >= rows or not thread.is_alive(), timeout)
        time.sleep(1.0)  # a few more polls: anything it would write twice would be written now
    finally:
        engine.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_a_second_group_on_the_same_table_writes_nothing_twice(kafka_bootstrap, iceberg_tables, catalog_config,
                                                                registry, unique) -> None:
    topic = f"market.equities.trades.s{unique}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade(f"S{i % 4}", i // 4 + 1) for i in range(300)]))
    first = make_config(kafka_bootstrap, topic, f"a{unique}", namespace=catalog_config.namespace, max_messages=300)
    run_consumer(first, catalog_config, registry)
    assert len(duckdb_offsets(PG_TEST_URL, catalog_config.namespace)) == 300

    # another group id (a new deployment, a renamed consumer) on the same table and topic
    produce(kafka_bootstrap, topic, encode_trades(registry, topic,
                                                  [trade(f"S{i % 4}", i // 4 + 1) for i in range(300, 400)]))
    second = IcebergConsumer(make_config(kafka_bootstrap, topic, f"b{unique}", namespace=catalog_config.namespace),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    _run_until(second, 100)
    assert second.stats.rows_written == 100 and second.stats.messages == 100  # resumed where the table ends
    rows = duckdb_offsets(PG_TEST_URL, catalog_config.namespace)
    assert len(rows) == len(set(rows)) == 400, f"{len(rows) - len(set(rows))} rows written twice"
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    summary = table.current_snapshot().summary
    assert summary["k2.kafka.group"] == f"g-b{unique}" and "k2.kafka.offsets" in summary.additional_properties


@pytest.mark.django_db(transaction=True)
def test_offsets_recorded_in_the_old_per_group_format_are_resumed_by_any_group(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    """Tables written before the table-wide record hold `k2.kafka.offsets.<group>`: a consumer of
    another group resumes after them too, and still ignores offsets of a re-created topic."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    topic = f"market.equities.trades.o{unique}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic_id = str(admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=10).topic_id)
    counts = {0: 30, 1: 20}
    values = [v for _, v in encode_trades(registry, topic, [trade("BHP", i + 1) for i in range(50)])]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=0 if i < counts[0] else 1)
    assert producer.flush(30) == 0
    # what an old consumer of group "old" left: partition 0 all written, under this topic's id;
    # partition 1 recorded under another (deleted) incarnation of the topic: must be ignored
    table = iceberg_tables["trades"]
    old = {f"k2.kafka.offsets.g-old{unique}": json.dumps({topic: {"0": counts[0]}}),
           f"k2.kafka.topic-ids.g-old{unique}": json.dumps({topic: topic_id})}
    stale = {f"k2.kafka.offsets.g-old{unique}": json.dumps({topic: {"1": 10_000}}),
             f"k2.kafka.topic-ids.g-old{unique}": json.dumps({topic: "an-earlier-topic-id"})}
    fast_commit.append(table, _batch(counts[0], 0, partition=0), snapshot_properties=old)
    fast_commit.append(table, _batch(1, 20_000, partition=1), snapshot_properties=stale)
    engine = IcebergConsumer(make_config(kafka_bootstrap, topic, f"new{unique}", namespace=catalog_config.namespace),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    _run_until(engine, counts[1])
    assert engine.stats.rows_written == counts[1]  # partition 0 resumed from the old record, 1 from its start
    rows = duckdb_offsets(PG_TEST_URL, catalog_config.namespace)
    assert len(rows) == len(set(rows)) == counts[0] + counts[1] + 1
    assert recorded_offsets(load_catalog(catalog_config).load_table(table.name()),
                            topic_ids={topic: topic_id}) == {(topic, 0): counts[0], (topic, 1): counts[1]}


def test_two_writers_never_write_the_same_offsets_twice(iceberg_tables, catalog_config) -> None:
    """Two writers on one table (two groups at once): a batch whose offsets another writer already
    recorded is not written again; one only partly recorded stops with a clear OffsetConflict."""
    one = IcebergWriter(iceberg_tables["trades"], table_name="trades", policy=FAST)
    other = IcebergWriter(load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades"),
                          table_name="trades", policy=FAST)
    one.append(_batch(100, 0), properties=offsets_properties("a", {("t", 0): 100}))
    result = other.append(_batch(100, 0), properties=offsets_properties("b", {("t", 0): 100}))
    assert result.already_committed and result.attempts == 2
    one.append(_batch(50, 100), properties=offsets_properties("a", {("t", 0): 150}))
    with pytest.raises(OffsetConflict, match=r"t\[0\] now at 150 \(this batch ends at 200\)"):
        other.append(_batch(100, 100), properties=offsets_properties("b", {("t", 0): 200}))
    rows = duckdb_offsets(PG_TEST_URL, catalog_config.namespace)
    assert sorted(o for _, o in rows) == list(range(150))


# --- item 3: a catalog outage is ridden out within the budget, then fails clearly ------------------
# `outage_catalog` (tests/consumer/conftest.py): the catalog on a Postgres cluster the test stops and starts
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_consumer_rides_out_a_catalog_postgres_restart(kafka_bootstrap, outage_catalog, registry, unique) -> None:
    pg, catalog_config = outage_catalog
    topic = f"market.equities.trades.r{unique}"
    create_topic(kafka_bootstrap, topic)
    records = [trade(f"S{i % 3}", i // 3 + 1) for i in range(600)]
    encoded = encode_trades(registry, topic, records)
    produce(kafka_bootstrap, topic, encoded[:300])
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=600,
                         retry=RetryPolicy(budget_seconds=60, max_delay=2.0))
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    thread, errors = run_in_thread_with_errors(engine)
    assert wait_for(lambda: engine.stats.rows_written >= 300, 60), engine.stats
    pg.stop()  # the catalog goes away mid-run ...
    produce(kafka_bootstrap, topic, encoded[300:])
    time.sleep(8)
    assert thread.is_alive() and not errors, errors  # ... the consumer waits instead of dying
    assert engine.stats.rows_written == 300
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [300]  # nothing committed past the table
    pg.start()  # ... and comes back
    thread.join(timeout=90)
    assert not thread.is_alive() and not errors, errors
    assert engine.stats.rows_written == 600
    assert_written_once(duckdb_offsets(pg.url, catalog_config.namespace), 600)
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [600]


@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_catalog_down_beyond_the_budget_fails_clearly_without_committing_past_the_table(
        kafka_bootstrap, outage_catalog, registry, unique) -> None:
    pg, catalog_config = outage_catalog
    topic = f"market.equities.trades.x{unique}"
    create_topic(kafka_bootstrap, topic)
    encoded = encode_trades(registry, topic, [trade(f"S{i % 3}", i // 3 + 1) for i in range(300)])
    produce(kafka_bootstrap, topic, encoded[:200])
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                         retry=RetryPolicy(budget_seconds=3, max_delay=1.0))
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    thread, errors = run_in_thread_with_errors(engine)
    assert wait_for(lambda: engine.stats.rows_written >= 200, 60), engine.stats
    pg.stop()
    started = time.monotonic()
    produce(kafka_bootstrap, topic, encoded[200:])
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert time.monotonic() - started >= 3  # the budget was used
    assert len(errors) == 1 and isinstance(errors[0], CatalogUnavailable), errors
    message = str(errors[0])
    assert f"127.0.0.1:{pg.port}/postgres" in message and "K2_CATALOG_RETRY_SECONDS" in message
    assert "Postgres is running" in message
    pg.start()
    assert_written_once(duckdb_offsets(pg.url, catalog_config.namespace), 200)
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [200]  # not past what the table holds


def test_catalog_retry_budget_comes_from_the_setting(settings) -> None:  # type: ignore[no-untyped-def]
    from ingestion.consumer_services import consumer_config
    from k2portal.config import ConfigError, load

    assert load({}).catalog_retry_seconds == 60
    assert load({"K2_CATALOG_RETRY_SECONDS": "90"}).catalog_retry_seconds == 90
    with pytest.raises(ConfigError, match="K2_CATALOG_RETRY_SECONDS"):
        load({"K2_CATALOG_RETRY_SECONDS": "soon"})
    k2 = dataclasses.replace(settings.K2, catalog_retry_seconds=45)
    config = consumer_config(data_type="trades", topics=("market.equities.trades.asx",), k2=k2)
    assert config.retry.budget_seconds == 45 and config.retry.max_delay == 10.0


def test_expiry_keeps_each_partitions_offset_record_across_both_formats(iceberg_tables, catalog_config) -> None:
    """Snapshot expiry keeps, per topic-partition, the snapshot recording its highest offset,
    whether written in the old per-group format or the table-wide one, so a consumer of any
    group resumes at the same place after an expiry as before it."""
    from datetime import timedelta

    from catalog.engine.maintenance import expire_snapshots

    table = iceberg_tables["trades"]
    old = {"k2.kafka.offsets.x": json.dumps({"t": {"0": 100, "1": 50}})}
    for i, props in enumerate([old, offsets_properties("y", {("t", 0): 200}), {},
                               offsets_properties("z", {("t", 0): 300}), {}]):
        fast_commit.append(table, _batch(2, 2 * i), snapshot_properties=props)
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    assert recorded_offsets(table) == {("t", 0): 300, ("t", 1): 50}
    expire_snapshots(table, retention=timedelta(0), retain_last=1)
    fresh = load_catalog(catalog_config).load_table(table.name())
    assert [s.snapshot_id for s in fresh.metadata.snapshots] == [ids[0], ids[3], ids[4]]
    assert recorded_offsets(fresh) == {("t", 0): 300, ("t", 1): 50}
