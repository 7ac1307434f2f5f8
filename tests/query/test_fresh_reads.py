"""Fresh reads (issue 15 item 1): a query over the current snapshot plus what is on the topics
beyond the offsets that snapshot records. Real broker, real consumer engine, real catalog; the
table is read back with plain DuckDB where the test checks what the consumer wrote."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import replace

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from catalog.engine.iceberg import load_catalog
from ingestion.engine.tail import KafkaTail
from k2core import metrics
from k2core.duckdb_conn import connect, scan_sql
from queries.engine.connection import EngineConfig
from queries.engine.errors import BadQuery
from queries.engine.market import MarketQueries
from queries.engine.source import IcebergSource
from queries.engine.timeutil import TimeRange
from tests.consumer.conftest import BASE_TIME, DictRegistry, create_topic, encode_trades, make_config, run_consumer, trade

WHOLE = TimeRange(BASE_TIME - dt.timedelta(days=1), BASE_TIME + dt.timedelta(days=2))
ORDER = ["source_partition", "source_offset"]


def _trades(symbols: tuple[str, ...], first: int, count: int) -> list[dict]:
    """`count` trades, the symbols in turn, each symbol's sequence numbers from `first` on."""
    return [trade(symbols[i % len(symbols)], first + i // len(symbols)) for i in range(count)]


def _produce_to(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes | None]], partitions: int) -> None:
    """Each symbol (the key) to its own partition, in turn, so a symbol's sequence stays in order
    and several partitions have a tail."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    partition_of: dict[bytes | None, int] = {}
    for key, value in values:
        partition = partition_of.setdefault(key, len(partition_of) % partitions)
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def _count(metric, **labels) -> float:  # type: ignore[no-untyped-def]
    return metric.labels(**labels)._value.get()


def _engine(catalog_config, tail: KafkaTail | None) -> MarketQueries:  # type: ignore[no-untyped-def]
    return MarketQueries(IcebergSource(load_catalog(catalog_config), catalog_config.namespace), EngineConfig(threads=2),
                         tail=tail)


def _plain_duckdb_rows(catalog_config) -> pa.Table:  # type: ignore[no-untyped-def]
    """The trades table as plain DuckDB reads it (its current metadata file), in offset order."""
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    con = connect()
    try:
        return con.execute(f"SELECT * FROM {scan_sql(table.metadata_location)} ORDER BY source_partition, source_offset"
                           ).to_arrow_table()
    finally:
        con.close()


@pytest.fixture
def registry() -> DictRegistry:
    return DictRegistry()


@pytest.fixture(params=["standing", "direct"])
def setup(request, kafka_bootstrap, catalog_config, iceberg_tables, registry, unique):  # type: ignore[no-untyped-def]
    """A topic of 3 partitions, the consumer's config and a tail reader: each test runs with the
    standing reader (reads from what its thread holds) and with direct reads only."""
    topic = f"fresh-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace)
    tail = KafkaTail(bootstrap_servers=kafka_bootstrap, registry=registry, topics_of={"trades": (topic,)},
                     group_of={"trades": config.group}, timeout_s=10, standing=request.param == "standing")
    yield topic, config, tail
    tail.close()


def test_a_fresh_read_holds_exactly_the_rows_the_consumer_commits_next_and_none_twice(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    topic, config, tail = setup
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA"), 1, 300)), 3)
    run_consumer(replace(config, max_messages=300), catalog_config, registry)
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA"), 151, 200)), 3)
    engine = _engine(catalog_config, tail)

    path = "standing" if tail.standing else "direct"
    reads_before = _count(metrics.FRESH_READS, data_type="trades", path=path)
    committed = engine.trades(rng=WHOLE, limit=10_000)
    fresh = engine.trades(rng=WHOLE, limit=10_000, fresh=True)
    assert _count(metrics.FRESH_READS, data_type="trades", path=path) == reads_before + 1  # answered as configured
    assert committed.table.num_rows == 300 and committed.fresh is None
    assert fresh.table.num_rows == 500
    assert fresh.snapshot_id == committed.snapshot_id  # the snapshot the tail continues
    assert fresh.fresh["rows"] == 200 and fresh.fresh["messages"] == 200 and fresh.fresh["dead_letters"] == 0
    assert fresh.fresh["complete"] is True
    # BHP went to partition 0 and CBA to 1 (250 each); partition 2 is empty
    assert fresh.fresh["upto"] == {topic: {"0": 250, "1": 250, "2": 0}}
    keys = list(zip(fresh.table["source_partition"].to_pylist(), fresh.table["source_offset"].to_pylist(), strict=True))
    assert len(set(keys)) == 500  # no message twice

    # the consumer now commits the rest: the table then holds exactly what the fresh read showed
    run_consumer(replace(config, max_messages=200), catalog_config, registry)
    written = _plain_duckdb_rows(catalog_config)
    assert written.num_rows == 500
    assert fresh.table.sort_by([(c, "ascending") for c in ORDER]).to_pylist() == \
        written.select(fresh.table.column_names).to_pylist()
    plain = engine.trades(rng=WHOLE, limit=10_000)  # asks the catalog: the engine now holds the new snapshot
    after = engine.trades(rng=WHOLE, limit=10_000, fresh=True)
    assert after.table.num_rows == 500 and after.fresh["rows"] == 0
    assert after.snapshot_id == plain.snapshot_id != committed.snapshot_id


def test_within_the_bound_a_fresh_read_continues_the_snapshot_it_holds_and_answers_the_rows_the_catalog_has(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    """A fresh read takes the table as the engine last loaded or checked it, for up to the tail's
    `metadata_ttl_s`, without asking the catalog: the stream beyond that snapshot holds what the
    consumer committed since, so the rows are those of the newest snapshot plus its tail. After
    the bound it asks again."""
    topic, config, tail = setup
    tail.metadata_ttl_s = 600.0  # longer than the test: the first fresh read's table is held throughout
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA"), 1, 300)), 3)
    run_consumer(replace(config, max_messages=300), catalog_config, registry)
    engine = _engine(catalog_config, tail)
    first = engine.trades(rng=WHOLE, limit=10_000, fresh=True)
    assert first.table.num_rows == 300 and first.fresh["rows"] == 0

    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA"), 151, 200)), 3)
    run_consumer(replace(config, max_messages=200), catalog_config, registry)  # a new snapshot in the catalog
    held = engine.trades(rng=WHOLE, limit=10_000, fresh=True)
    assert held.snapshot_id == first.snapshot_id  # the catalog was not asked: its new snapshot is not seen
    assert held.fresh["rows"] == 200 and held.table.num_rows == 500  # what it committed is read from the stream
    bars = engine.ohlcv(interval="1m", rng=WHOLE, symbols=["BHP", "CBA"], fresh=True)

    written = _plain_duckdb_rows(catalog_config)  # the table as plain DuckDB reads it now
    assert written.num_rows == 500
    assert held.table.sort_by([(c, "ascending") for c in ORDER]).to_pylist() == \
        written.select(held.table.column_names).to_pylist()
    plain = engine.trades(rng=WHOLE, limit=10_000)  # a query without fresh asks the catalog every time
    assert plain.snapshot_id != first.snapshot_id and plain.table.num_rows == 500
    assert engine.ohlcv(interval="1m", rng=WHOLE, symbols=["BHP", "CBA"]).table.to_pylist() == bars.table.to_pylist()

    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA"), 251, 20)), 3)
    run_consumer(replace(config, max_messages=20), catalog_config, registry)
    tail.metadata_ttl_s = 0.0  # past the bound: the catalog is asked again
    asked = engine.trades(rng=WHOLE, limit=10_000, fresh=True)
    assert asked.snapshot_id not in (first.snapshot_id, plain.snapshot_id)
    assert asked.fresh["rows"] == 0 and asked.table.num_rows == 520


def test_a_standing_read_takes_in_what_the_broker_delivered_while_the_readers_thread_waits(
        kafka_bootstrap, registry, unique, monkeypatch):  # type: ignore[no-untyped-def]
    """librdkafka fetches on threads of its own; a read takes in what it has fetched itself, so it
    does not wait for the standing reader's thread (here made to sleep 60 s between looks)."""
    import ingestion.engine.tail as tail_module

    topic = f"fresh-wait-{unique}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    tail = KafkaTail(bootstrap_servers=kafka_bootstrap, registry=registry, topics_of={"trades": (topic,)}, timeout_s=10)
    try:
        assert tail.read("trades", None).path == "standing"  # the reader is caught up with an empty topic
        monkeypatch.setattr(tail_module._Standing, "IDLE_WAIT_S", 60.0)
        time.sleep(0.5)  # the thread has looked, found nothing, and sleeps
        _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA", "CSL"), 1, 90)), 3)
        deadline = time.monotonic() + 15
        read = tail.read("trades", None)
        while read.table.num_rows < 90 and time.monotonic() < deadline:
            time.sleep(0.05)
            read = tail.read("trades", None)
        assert read.path == "standing" and read.table.num_rows == 90
        assert read.upto == {(topic, 0): 30, (topic, 1): 30, (topic, 2): 30}
    finally:
        tail.close()


def test_fresh_ohlcv_counts_the_trades_not_yet_committed_as_the_table_will(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    topic, config, tail = setup
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP",), 1, 120)), 3)
    run_consumer(replace(config, max_messages=120), catalog_config, registry)
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP",), 121, 90)), 3)
    engine = _engine(catalog_config, tail)
    before = engine.ohlcv(interval="1m", rng=WHOLE, symbols=["BHP"])
    fresh = engine.ohlcv(interval="1m", rng=WHOLE, symbols=["BHP"], fresh=True)
    assert sum(before.table["trade_count"].to_pylist()) == 120
    assert sum(fresh.table["trade_count"].to_pylist()) == 210 and fresh.fresh["rows"] == 90
    run_consumer(replace(config, max_messages=90), catalog_config, registry)
    assert engine.ohlcv(interval="1m", rng=WHOLE, symbols=["BHP"]).table.to_pylist() == fresh.table.to_pylist()


def test_a_fresh_read_of_a_table_with_no_snapshot_reads_the_topic_from_its_start(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    topic, _config, tail = setup
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP",), 1, 40)), 3)
    engine = _engine(catalog_config, tail)
    assert engine.trades(rng=WHOLE).table.num_rows == 0
    fresh = engine.trades(rng=WHOLE, fresh=True)
    assert fresh.snapshot_id is None and fresh.table.num_rows == 40 and fresh.fresh["rows"] == 40
    bars = engine.ohlcv(interval="1h", rng=WHOLE, symbols=["BHP"], fresh=True)
    assert sum(bars.table["trade_count"].to_pylist()) == 40


def test_undecodable_messages_in_the_tail_are_left_out_and_counted_as_the_consumer_dead_letters_them(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    topic, config, tail = setup
    good = encode_trades(registry, topic, _trades(("BHP",), 1, 30))
    bad = [(b"BHP", b"not avro at all"), (b"BHP", None), (b"BHP", b"\x00\x00\x00\x03\x99garbage")]
    _produce_to(kafka_bootstrap, topic, good[:15] + bad + good[15:], 3)
    engine = _engine(catalog_config, tail)
    dead_before = _count(metrics.FRESH_READ_DEAD_LETTERS, data_type="trades")
    fresh = engine.trades(rng=WHOLE, fresh=True)
    assert _count(metrics.FRESH_READ_DEAD_LETTERS, data_type="trades") == dead_before + 3
    assert fresh.table.num_rows == 30
    assert fresh.fresh["messages"] == 33 and fresh.fresh["dead_letters"] == 3
    consumer = run_consumer(replace(config, max_messages=33), catalog_config, registry)
    assert consumer.stats.dlq == 3  # the same three, by the consumer
    assert _plain_duckdb_rows(catalog_config).num_rows == 30


def test_a_group_moved_past_the_tables_record_moves_the_tail_too(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    """An operator who moved the consumer group forward skipped those messages for the table: the
    consumer resumes at the group's offset, so the tail starts there as well."""
    topic, config, tail = setup
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP",), 1, 60)), 3)
    mover = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": config.group, "enable.auto.commit": False})
    try:
        mover.commit(offsets=[TopicPartition(topic, 0, 15)], asynchronous=False)  # 5 of partition 0's 20 skipped
    finally:
        mover.close()
    fresh = _engine(catalog_config, tail).trades(rng=WHOLE, limit=1000, fresh=True)
    assert fresh.table.num_rows == 45
    assert min(o for p, o in zip(fresh.table["source_partition"].to_pylist(), fresh.table["source_offset"].to_pylist(),
                                 strict=True) if p == 0) == 15
    consumer = run_consumer(replace(config, max_messages=45), catalog_config, registry)
    assert consumer.stats.rows_written == 45  # what the consumer wrote is what the tail showed


def test_where_the_group_stands_is_asked_again_once_older_than_the_metadata_bound(
        kafka_bootstrap, catalog_config, registry, setup) -> None:  # type: ignore[no-untyped-def]
    """The broker's answers about where things stand (partitions, the group's committed offsets)
    are kept for `metadata_ttl_s`: a group moved after a read counts from the first read after
    that bound, and a read within it asks the broker nothing (so it still starts where it did)."""
    topic, config, tail = setup
    tail.metadata_ttl_s = 1.5
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP",), 1, 60)), 3)
    engine = _engine(catalog_config, tail)

    def first_offset_of_partition_0() -> int:
        table = engine.trades(rng=WHOLE, limit=1000, fresh=True).table
        return min(o for p, o in zip(table["source_partition"].to_pylist(), table["source_offset"].to_pylist(),
                                     strict=True) if p == 0)

    began = time.monotonic()
    assert first_offset_of_partition_0() == 0  # the broker was asked during this read: kept from then
    ended = time.monotonic()
    mover = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": config.group, "enable.auto.commit": False})
    try:
        mover.commit(offsets=[TopicPartition(topic, 0, 15)], asynchronous=False)
    finally:
        mover.close()
    if time.monotonic() - began < 1.0:  # well within the bound (on a slow machine maybe not: then only the next part)
        assert first_offset_of_partition_0() == 0  # the committed offsets were not asked again
    time.sleep(max(0.0, ended + 1.6 - time.monotonic()))
    assert first_offset_of_partition_0() == 15


def test_a_read_cut_short_by_its_cap_says_so(kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    topic, _config, tail = setup
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP",), 1, 90)), 3)
    tail.max_messages = 50
    cut_before = _count(metrics.FRESH_READ_INCOMPLETE, data_type="trades")
    fresh = _engine(catalog_config, tail).trades(rng=WHOLE, limit=1000, fresh=True)
    assert _count(metrics.FRESH_READ_INCOMPLETE, data_type="trades") == cut_before + 1
    assert fresh.fresh["complete"] is False
    assert fresh.fresh["messages"] == fresh.table.num_rows == 50
    assert sum(off for part in fresh.fresh["upto"].values() for off in part.values()) == 50


def test_fresh_pages_continue_after_the_cursor_and_never_repeat_a_row_while_the_consumer_commits(
        kafka_bootstrap, catalog_config, registry, setup):  # type: ignore[no-untyped-def]
    topic, config, tail = setup
    _produce_to(kafka_bootstrap, topic, encode_trades(registry, topic, _trades(("BHP", "CBA", "CSL"), 1, 240)), 3)
    engine = _engine(catalog_config, tail)
    seen: list[tuple[int, int]] = []
    page = engine.trades(rng=WHOLE, limit=100, fresh=True)
    seen += zip(page.table["source_partition"].to_pylist(), page.table["source_offset"].to_pylist(), strict=True)
    run_consumer(replace(config, max_messages=240), catalog_config, registry)
    while page.next_cursor:
        with pytest.raises(BadQuery) as refused:  # a fresh cursor asks for fresh pages
            engine.trades(rng=WHOLE, limit=100, cursor=page.next_cursor)
        assert refused.value.field == "cursor"
        page = engine.trades(rng=WHOLE, limit=100, cursor=page.next_cursor, fresh=True)
        seen += zip(page.table["source_partition"].to_pylist(), page.table["source_offset"].to_pylist(), strict=True)
    assert len(seen) == len(set(seen)) == 240


def test_a_read_while_messages_arrive_holds_every_offset_up_to_where_it_says_it_read_once(
        kafka_bootstrap, registry, setup):  # type: ignore[no-untyped-def]
    """Reads taken while a producer keeps going: each holds exactly the offsets from the start up
    to its `upto` on every partition (no hole, no repeat, none beyond), each reaches at least as far
    as the one before, and once the producer is done a read holds every message (the standing
    reader within a fetch or two; a direct read at once)."""
    import threading

    from confluent_kafka import Producer

    topic, _config, tail = setup
    values = encode_trades(registry, topic, _trades(("BHP", "CBA", "CSL"), 1, 3000))

    def produce_in_bursts() -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 1})
        for i, (key, value) in enumerate(values):
            producer.produce(topic, key=key, value=value, partition=("BHP", "CBA", "CSL").index(key.decode()))
            if i % 100 == 99:
                assert producer.flush(30) == 0
                time.sleep(0.01)
        assert producer.flush(30) == 0

    def check(read) -> int:  # type: ignore[no-untyped-def]
        held = sorted(zip(read.table["source_partition"].to_pylist(), read.table["source_offset"].to_pylist(), strict=True))
        assert held == sorted((p, o) for (_t, p), upto in read.upto.items() for o in range(upto))
        assert read.dead_letters == 0
        return read.table.num_rows

    producing = threading.Thread(target=produce_in_bursts)
    producing.start()
    reached = []
    try:
        while producing.is_alive() or len(reached) < 3:
            reached.append(check(tail.read("trades", None)))
    finally:
        producing.join()
    assert reached == sorted(reached) and len(set(reached)) > 2  # reads saw the stream grow
    deadline = time.monotonic() + 5
    while reached[-1] < 3000 and time.monotonic() < deadline:
        reached.append(check(tail.read("trades", None)))
    assert reached[-1] == 3000


def test_fresh_with_time_travel_or_without_a_reader_is_refused_with_the_field_named(
        catalog_config, iceberg_tables, setup):  # type: ignore[no-untyped-def]
    _topic, _config, tail = setup
    with pytest.raises(BadQuery) as both:
        _engine(catalog_config, tail).trades(rng=WHOLE, as_of=1, fresh=True)
    assert both.value.field == "fresh" and "as_of" in str(both.value)
    with pytest.raises(BadQuery) as bars:
        _engine(catalog_config, tail).ohlcv(interval="1m", rng=WHOLE, as_of=dt.datetime.now(dt.UTC), fresh=True)
    assert bars.value.field == "fresh"
    with pytest.raises(BadQuery) as none:
        _engine(catalog_config, None).trades(rng=WHOLE, fresh=True)
    assert none.value.field == "fresh" and "not available" in str(none.value)


# --- the API, with the deployment's own reader (settings.K2_STREAM_TAIL) --------------------

RANGE = "start=2026-03-09T00:00:00Z&end=2026-03-12T00:00:00Z"


@pytest.fixture
def api(k2_settings, query_settings, unique):  # type: ignore[no-untyped-def]
    """The API over this test's catalog and the worker's broker; trades of a symbol of this test's
    own produced to the declared trades topic, encoded with the embedded registry."""
    from catalog.engine.schemas import subject_name, topic_name
    from catalog.selectors import get_registry
    from queries import services
    from queries.models import ApiKey

    key = services.api_key_create(name="fresh", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    topic = topic_name(asset_class="equities", data_type="trades", exchange="asx")
    symbol = f"F{unique[:7].upper()}"
    schema_id = get_registry().register(subject_name(topic), schemas_text())
    from catalog.engine import schemas, wire

    parsed = schemas.parsed_schema("trades")
    values = [(symbol.encode(), wire.encode(schema_id, parsed, trade(symbol, seq))) for seq in range(1, 26)]
    _produce_to(k2_settings.K2.bootstrap_servers, topic, values, 1)
    yield key, symbol
    from queries.selectors import close_fresh_readers

    close_fresh_readers()  # its broker stops with this worker: no client left calling it


def schemas_text() -> str:
    from catalog.engine import schemas

    return schemas.schema_text("trades")


@pytest.mark.django_db(transaction=True)  # the standing reader's thread looks the schema up on its own connection
def test_the_api_answers_fresh_reads_in_json_and_csv_with_what_was_read_beyond_the_snapshot(client, api):  # type: ignore[no-untyped-def]
    key, symbol = api
    headers = {"X-API-Key": key}
    plain = client.get(f"/api/v1/trades?symbol={symbol}&{RANGE}", headers=headers).json()
    assert plain["data"] == [] and "fresh" not in plain["meta"]
    body = client.get(f"/api/v1/trades?symbol={symbol}&{RANGE}&fresh=true", headers=headers).json()
    assert [row["sequence_number"] for row in body["data"]] == list(range(1, 26))
    assert body["data"][0]["price"] == "45.123456"  # a decimal string, as from the table
    assert body["meta"]["fresh"]["complete"] is True and body["meta"]["fresh"]["rows"] >= 25
    bars = client.get(f"/api/v1/ohlcv?symbol={symbol}&{RANGE}&interval=1h&fresh=1", headers=headers).json()
    assert sum(b["trade_count"] for b in bars["data"]) == 25 and bars["meta"]["fresh"]["complete"] is True
    csv = client.get(f"/api/v1/trades?symbol={symbol}&{RANGE}&fresh=true&format=csv", headers=headers)
    assert csv.status_code == 200 and len(csv.content.decode().strip().splitlines()) == 26  # header + 25
    assert json.loads(csv["X-K2-Fresh"])["complete"] is True


@pytest.mark.django_db(transaction=True)
def test_the_api_refuses_a_malformed_fresh_or_fresh_with_as_of_naming_the_parameter(client, api):  # type: ignore[no-untyped-def]
    key, symbol = api
    headers = {"X-API-Key": key}
    bad = client.get(f"/api/v1/trades?symbol={symbol}&{RANGE}&fresh=perhaps", headers=headers)
    assert bad.status_code == 422 and "fresh" in json.dumps(bad.json())
    both = client.get(f"/api/v1/ohlcv?symbol={symbol}&{RANGE}&fresh=true&as_of=1", headers=headers)
    assert both.status_code == 400 and both.json()["field"] == "fresh" and "as_of" in both.json()["message"]


@pytest.mark.django_db
def test_a_broker_that_does_not_answer_gives_503_saying_to_ask_without_fresh_and_the_snapshot_still_answers(
        client, query_settings, generated):  # type: ignore[no-untyped-def]
    """The closed port of a stopped broker: the fresh read fails with a message, the plain query still answers."""
    from bench.common import free_port
    from queries import services
    from queries.models import ApiKey

    query_settings.K2 = dataclasses.replace(query_settings.K2, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                                            fresh_read_timeout_ms=300)
    key = services.api_key_create(name="fresh", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    url = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h"
    failed_before = _count(metrics.FRESH_READS, data_type="trades", path="failed")
    down = client.get(url + "&fresh=true", headers={"X-API-Key": key})
    assert _count(metrics.FRESH_READS, data_type="trades", path="failed") == failed_before + 1
    assert down.status_code == 503
    assert down.json()["error"] == "stream_unavailable" and "without fresh=true" in down.json()["message"]
    plain = client.get(url, headers={"X-API-Key": key})
    assert plain.status_code == 200 and plain.json()["data"]
    from queries.selectors import close_fresh_readers

    close_fresh_readers()
