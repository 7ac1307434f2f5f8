"""The consumer engine end to end on a real broker, Iceberg catalog and Postgres (ADR #003, #011, #013, #014)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer
from prometheus_client import REGISTRY

from catalog.engine import schemas, wire
from catalog.engine.iceberg import load_catalog
from ingestion.engine.consumer import ConsumerConfig, IcebergConsumer, MemoryGapSink
from ingestion.gaps import OrmGapSink
from ingestion.models import SequenceGap
from tests.consumer.conftest import (
    create_topic,
    encode_trades,
    make_config,
    produce,
    run_consumer,
    table_rows,
    trade,
)


def _gap_metric(topic_asset: str) -> float:
    return REGISTRY.get_sample_value("k2_sequence_gaps_detected_total",
                                     {"exchange": "asx", "asset_class": topic_asset, "data_type": "trades"}) or 0.0


@pytest.mark.django_db(transaction=True)
def test_gap_1_2_5_gives_one_gap_of_two_one_row_one_metric_and_message_5_written(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique, caplog) -> None:
    topic = f"market.eq{unique}.trades.asx"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", s) for s in (1, 2, 5)]))
    before = _gap_metric(f"eq{unique}")
    engine = run_consumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                                      max_messages=3), catalog_config, registry, gap_sink=OrmGapSink())
    gaps = list(SequenceGap.objects.filter(symbol="BHP", data_type="trades", topic=topic))
    assert len(gaps) == 1
    assert (gaps[0].expected_sequence, gaps[0].received_sequence, gaps[0].gap_size) == (3, 5, 2)
    assert gaps[0].state == "open" and gaps[0].missing_remaining == 2
    assert _gap_metric(f"eq{unique}") - before == 1
    assert sorted(r["sequence_number"] for r in table_rows(catalog_config)) == [1, 2, 5]
    assert engine.stats.gaps == 1
    logged = [r for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "sequence_gap_detected"]
    assert len(logged) == 1 and logged[0].levelname == "WARNING"
    assert {k: logged[0].msg[k] for k in ("symbol", "expected", "received", "gap")} == {
        "symbol": "BHP", "expected": 3, "received": 5, "gap": 2}


@pytest.mark.django_db(transaction=True)
def test_late_event_fills_its_gap(kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    topic = f"market.equities.trades.l{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("CBA", s) for s in (1, 2, 5, 3)]))
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=4)
    run_consumer(config, catalog_config, registry, gap_sink=OrmGapSink())
    gap = SequenceGap.objects.get(symbol="CBA", exchange="ASX", data_type="trades", topic=topic)
    assert (gap.state, gap.missing_remaining, gap.filled_sequences) == ("open", 1, [3])
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("CBA", 4)]))
    engine = run_consumer(ConsumerConfig(**{**config.__dict__, "max_messages": 1}), catalog_config, registry,
                          gap_sink=OrmGapSink())
    gap.refresh_from_db()
    assert gap.state == "filled" and gap.missing_remaining == 0 and gap.filled_sequences == [3, 4]
    assert gap.filled_at is not None
    assert engine.stats.out_of_order == 1 and engine.stats.gaps_filled == 1
    assert SequenceGap.objects.filter(topic=topic).count() == 1


@pytest.mark.django_db(transaction=True)
def test_restart_neither_invents_nor_hides_a_gap(kafka_bootstrap, iceberg_tables, catalog_config, registry,
                                                 unique) -> None:
    topic = f"market.equities.trades.r{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("NAB", s) for s in range(1, 6)]))
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=5)
    run_consumer(config, catalog_config, registry, gap_sink=OrmGapSink())
    # a new process: empty tracker; 6 follows 5 (no gap), 9 follows 7 (a real gap)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("NAB", s) for s in (6, 7, 9)]))
    engine = run_consumer(ConsumerConfig(**{**config.__dict__, "max_messages": 3}), catalog_config, registry,
                          gap_sink=OrmGapSink())
    gaps = list(SequenceGap.objects.filter(topic=topic).values_list("expected_sequence", "received_sequence"))
    assert gaps == [(8, 9)]
    assert engine.stats.gaps == 1


@pytest.mark.django_db(transaction=True)
def test_poison_messages_go_to_the_dlq_while_good_ones_flow(kafka_bootstrap, iceberg_tables, catalog_config,
                                                            registry, unique) -> None:
    topic = f"market.equities.trades.p{unique}"
    create_topic(kafka_bootstrap, topic)
    good = encode_trades(registry, topic, [trade("ANZ", s) for s in range(1, 7)])
    unknown_id = wire.encode(999, schemas.parsed_schema("trades"), trade("ANZ", 99))
    other_schema_id = registry.register("x-value", schemas.schema_text("reference_data"))
    wrong_record = wire.encode(other_schema_id, schemas.parsed_schema("reference_data"),
                               {"company_id": 1, "symbol": "ANZ", "company_name": "x", "sector": None,
                                "market_cap": None, "last_updated": trade("ANZ", 1)["exchange_timestamp"]})
    truncated = good[3][1][:-6]
    values = [good[0], (b"ANZ", b"not avro at all"), good[1], (b"ANZ", unknown_id), good[2],
              (b"ANZ", truncated), (b"ANZ", wrong_record), good[4], good[5]]
    produce(kafka_bootstrap, topic, values)
    before = REGISTRY.get_sample_value("k2_dlq_messages_total", {"exchange": f"p{unique}", "asset_class": "equities",
                                                                 "data_type": "trades", "reason": "not_wire_format"}) or 0
    engine = run_consumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                                      max_messages=len(values)), catalog_config, registry, gap_sink=OrmGapSink())
    rows = table_rows(catalog_config)
    assert sorted(r["source_offset"] for r in rows) == [0, 2, 4, 7, 8]
    assert engine.stats.dlq == 4
    after = REGISTRY.get_sample_value("k2_dlq_messages_total", {"exchange": f"p{unique}", "asset_class": "equities",
                                                                "data_type": "trades", "reason": "not_wire_format"})
    assert after - before == 1
    dlq = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{unique}", "auto.offset.reset": "earliest"})
    dlq.subscribe([f"{topic}.dlq"])
    found: dict[int, dict[str, str]] = {}
    deadline = time.monotonic() + 30
    while len(found) < 4 and time.monotonic() < deadline:
        msg = dlq.poll(1.0)
        if msg is None or msg.error():
            continue
        headers = {k: v.decode() for k, v in msg.headers()}
        found[int(headers["k2.source.offset"])] = headers | {"value": msg.value()}
    dlq.close()
    assert sorted(found) == [1, 3, 5, 6]
    assert found[1]["k2.error.reason"] == "not_wire_format" and found[1]["value"] == b"not avro at all"
    assert found[3]["k2.error.reason"] == "unknown_schema" and "999" in found[3]["k2.error"]
    assert found[5]["k2.error.reason"] == "undecodable"
    assert found[6]["k2.error.reason"] == "schema_mismatch"
    assert all(h["k2.source.topic"] == topic and h["k2.source.partition"] == "0" for h in found.values())


@pytest.mark.parametrize("kwargs", [{"topics": ("a",), "topic_pattern": "b.*"}, {}])
def test_both_or_neither_subscription_is_a_value_error(kwargs) -> None:
    with pytest.raises(ValueError, match="either topics or topic_pattern"):
        ConsumerConfig(bootstrap_servers="127.0.0.1:1", data_type="trades", **kwargs)


@pytest.mark.django_db(transaction=True)
def test_pattern_subscription_picks_up_a_matching_topic(kafka_bootstrap, iceberg_tables, catalog_config, registry,
                                                        unique) -> None:
    matching = f"market.pat{unique}.trades.asx"
    other = f"market.nomatch{unique}.trades.asx"
    for topic in (matching, other):
        create_topic(kafka_bootstrap, topic)
        produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("WBC", s) for s in (1, 2)]))
    config = make_config(kafka_bootstrap, matching, unique, namespace=catalog_config.namespace,
                         topic_pattern=rf"market\.pat{unique}\..*", max_messages=2)
    run_consumer(config, catalog_config, registry, gap_sink=OrmGapSink())
    rows = table_rows(catalog_config)
    assert [r["sequence_number"] for r in sorted(rows, key=lambda r: r["source_offset"])] == [1, 2]
    assert len(rows) == 2  # the other topic was not read


@pytest.mark.django_db(transaction=True)
def test_batch_is_sorted_by_symbol_time_sequence_and_carries_lineage(kafka_bootstrap, iceberg_tables, catalog_config,
                                                                   registry, unique) -> None:
    topic = f"market.equities.trades.s{unique}"
    create_topic(kafka_bootstrap, topic)
    records = [trade(sym, seq) for seq in (1, 2, 3) for sym in ("WES", "ANZ", "MQG")]
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, records))
    run_consumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                             max_messages=len(records)), catalog_config, registry, gap_sink=OrmGapSink())
    rows = table_rows(catalog_config)  # one batch, one data file: file order
    assert [(r["symbol"], r["sequence_number"]) for r in rows] == [
        (s, q) for s in ("ANZ", "MQG", "WES") for q in (1, 2, 3)]
    by_offset = {r["source_offset"]: (r["symbol"], r["sequence_number"]) for r in rows}
    assert by_offset == {i: (r["symbol"], r["sequence_number"]) for i, r in enumerate(records)}
    assert {r["source_partition"] for r in rows} == {0}


@pytest.mark.django_db(transaction=True)
def test_missing_table_says_to_run_init_catalog(kafka_bootstrap, catalog_config, registry, unique) -> None:
    from ingestion.engine.consumer import ConsumerError

    config = make_config(kafka_bootstrap, "market.equities.trades.none", unique,
                         namespace=f"missing_{unique}", max_messages=1)
    with pytest.raises(ConsumerError, match="init_catalog"):
        run_consumer(config, catalog_config, registry)


@pytest.mark.timeout(90)  # without the topic-id check the consumer waits past the new topic's end
@pytest.mark.django_db(transaction=True)
def test_offsets_recorded_for_a_deleted_topic_do_not_hide_a_recreated_one(kafka_bootstrap, iceberg_tables,
                                                                          catalog_config, registry, unique) -> None:
    """The embedded broker forgets topics when it restarts while the table keeps its offsets: the
    new topic's messages must not be skipped as 'already in the table'."""
    from confluent_kafka.admin import AdminClient

    topic = f"market.equities.trades.d{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("RIO", s) for s in range(1, 6)]))
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=5)
    run_consumer(config, catalog_config, registry, gap_sink=OrmGapSink())
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=15)
    deadline = time.monotonic() + 20
    while True:  # deletion completes asynchronously
        try:
            create_topic(kafka_bootstrap, topic)
            break
        except Exception:  # noqa: BLE001 - TOPIC_ALREADY_EXISTS until the deletion is done
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("RIO", s) for s in (6, 7, 8)]))
    engine = run_consumer(ConsumerConfig(**{**config.__dict__, "max_messages": 3}), catalog_config, registry,
                          gap_sink=OrmGapSink())
    rows = table_rows(catalog_config)
    assert sorted(r["sequence_number"] for r in rows) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert engine.stats.duplicates_skipped == 0


@pytest.mark.django_db(transaction=True)
def test_consumer_thins_its_own_snapshots_and_a_restart_still_writes_each_message_once(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    """With a snapshot policy the consumer expires and thins its table's snapshots itself between
    commits (the metadata each commit writes holds them all), keeping every partition's newest
    offset snapshot: a new consumer of the group then resumes exactly where the table is."""
    import datetime as dt

    from catalog.engine.maintenance import SnapshotPolicy
    from catalog.engine.writer import recorded_offsets

    topic = f"market.equities.trades.s{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    symbols = ["BHP", "CBA", "NAB", "ANZ", "WBC", "RIO"]
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade(sym, s) for s in range(1, 51) for sym in symbols]))
    policy = SnapshotPolicy(retention=dt.timedelta(days=7), full_detail=dt.timedelta(0),
                            thin_interval=dt.timedelta(hours=1), every_s=0.001, retain_last=2)
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=300,
                         batch_size=10, snapshot_policy=policy)
    engine = run_consumer(config, catalog_config, registry)
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert engine.stats.batches >= 20 and engine.stats.snapshots_expired >= engine.stats.batches - 8
    assert engine.stats.snapshot_expiry_failures == 0
    # retain_last 2, the newest of the hour bucket(s), and the newest offset snapshot of each partition
    assert len(table.snapshots()) <= 2 + 2 + 3
    ends = recorded_offsets(table, config.group)
    assert len(ends) == 3 and sum(ends.values()) == 300
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade(sym, 51) for sym in symbols]))
    run_consumer(ConsumerConfig(**{**config.__dict__, "max_messages": 6}), catalog_config, registry)
    rows = table_rows(catalog_config)
    assert len(rows) == 306
    assert len({(r["source_partition"], r["source_offset"]) for r in rows}) == 306


class _Stamped:
    """A message's timestamp() as confluent-kafka returns it (type, milliseconds)."""

    def __init__(self, kind: int, ms: int) -> None:
        self._ts = (kind, ms)

    def timestamp(self) -> tuple[int, int]:
        return self._ts


def test_batch_age_counts_from_the_kafka_timestamp_and_never_from_the_future() -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

    from ingestion.engine.consumer.loop import message_age as _age

    now_ms = int(time.time() * 1000)
    assert 0.15 <= _age(_Stamped(TIMESTAMP_CREATE_TIME, now_ms - 200), cap=0.5) <= 0.5
    assert _age(_Stamped(TIMESTAMP_CREATE_TIME, now_ms - 60_000), cap=0.5) == 0.5  # at most the window
    assert _age(_Stamped(TIMESTAMP_CREATE_TIME, now_ms + 60_000), cap=0.5) == 0.0  # a clock ahead of ours
    assert _age(_Stamped(TIMESTAMP_NOT_AVAILABLE, -1), cap=0.5) == 0.0


@pytest.mark.django_db(transaction=True)
def test_messages_that_arrive_late_are_written_without_waiting_another_window(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    """max_batch_ms bounds a batch's age from its first message's Kafka timestamp: messages a
    broker (or a producer's queue) held back for longer are committed at once, not after a
    whole window more; the batch still takes everything already fetched."""
    from confluent_kafka import Producer

    from tests.consumer.conftest import run_in_thread

    topic = f"market.equities.trades.w{unique}"
    create_topic(kafka_bootstrap, topic)
    old_ms = int(time.time() * 1000) - 30_000
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for key, value in encode_trades(registry, topic, [trade("BHP", s) for s in range(1, 4)]):
        producer.produce(topic, key=key, value=value, timestamp=old_ms)
    assert producer.flush(30) == 0
    window_s = 20
    engine = IcebergConsumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                                         batch_size=1000, max_batch_ms=window_s * 1000),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    thread = run_in_thread(engine)
    started = time.monotonic()
    try:
        while time.monotonic() - started < window_s / 2 and len(table_rows(catalog_config)) < 3:
            time.sleep(0.2)
        rows = table_rows(catalog_config)
    finally:
        engine.request_stop()
        thread.join(timeout=60)
    assert sorted(r["sequence_number"] for r in rows) == [1, 2, 3]
    assert engine.stats.batches == 1


@pytest.mark.django_db(transaction=True)
def test_a_running_consumer_keeps_what_it_holds_out_of_full_garbage_collections(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    """A full cyclic-GC pass costs 60-110 ms once pyiceberg is imported (every batch in hand
    waits): the consumer freezes its long-lived objects while it runs and unfreezes them when it
    stops."""
    import gc

    from tests.consumer.conftest import run_in_thread

    topic = f"market.equities.trades.gc{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", 1)]))
    gc.unfreeze()
    engine = IcebergConsumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace),
                             catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    thread = run_in_thread(engine)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not table_rows(catalog_config):
            time.sleep(0.2)
        frozen_while_running = gc.get_freeze_count()
    finally:
        engine.request_stop()
        thread.join(timeout=60)
    assert len(table_rows(catalog_config)) == 1
    assert frozen_while_running > 10_000
    assert gc.get_freeze_count() == 0
