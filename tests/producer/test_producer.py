"""The producer against the real broker and the embedded registry in Postgres (ADR #009, #010)."""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from datetime import UTC
from pathlib import Path

import fastavro
import pytest

from catalog.engine.schemas import parsed_schema
from catalog.engine.wire import split
from catalog.registry import EmbeddedRegistry
from ingestion.engine import broker
from ingestion.engine.producer import ProduceError, ProducerSettings, produce_csv
from ingestion.engine.topics import create_topics, declared_topics
from tests.conftest import free_port
from tests.producer.conftest import TRADE_HEADER, read_all, write_csv

SYMBOLS = ["BHP", "RIO", "CBA", "NAB", "WBC", "ANZ", "CSL", "WES", "TLS", "WOW"]


def trade_rows(n: int) -> list[list[str]]:
    """n trades cycling through 10 symbols, one second apart, prices walking by a cent."""
    return [[SYMBOLS[i % 10], str(1000 + i % 10), f"2014-03-03T10:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}",
             f"{30 + (i % 7) * 0.01:.2f}", str(100 + i % 50), "0", "ASX"] for i in range(n)]


def decode(value: bytes) -> dict:
    _, body = split(value)
    return fastavro.schemaless_reader(io.BytesIO(body), parsed_schema("trades"), None)


@pytest.mark.django_db
def test_every_message_for_a_symbol_lands_in_one_partition_in_sequence_order(
        tmp_path: Path, kafka_bootstrap: str, topics: dict[str, str], producer_settings: ProducerSettings, unique: str) -> None:
    """ADR #009 verification: BHP's messages all go to one partition; seq 1, 2, 3 arrive in order."""
    csv_path = write_csv(tmp_path / "trades.csv", TRADE_HEADER, trade_rows(3000))
    result = produce_csv(csv_path=csv_path, settings=producer_settings, registry=EmbeddedRegistry(), data_type="trades",
                         exchange="asx", asset_class=topics["trades"].split(".")[1])
    assert result.acked == 3000 and result.ok
    messages = read_all(kafka_bootstrap, topics["trades"], expected=3000, group=f"g-{unique}")
    partitions_of: dict[str, set[int]] = defaultdict(set)
    sequences: dict[str, list[int]] = defaultdict(list)
    for msg in messages:
        record = decode(msg.value())
        assert msg.key().decode() == record["symbol"]
        partitions_of[record["symbol"]].add(msg.partition())
        sequences[record["symbol"]].append(record["sequence_number"])
    assert set(partitions_of) == set(SYMBOLS)
    assert all(len(parts) == 1 for parts in partitions_of.values()), partitions_of
    # Within its partition each symbol's sequence numbers arrive 1, 2, 3, … (consumer order is partition order).
    for symbol, seqs in sequences.items():
        assert seqs == list(range(1, 301)), symbol
    # 10 symbols over 30 partitions use more than one partition (keys are spread, not all in one).
    assert len({next(iter(p)) for p in partitions_of.values()}) > 1


@pytest.mark.django_db
def test_10000_produced_are_10000_consumed_without_duplicates(
        tmp_path: Path, kafka_bootstrap: str, topics: dict[str, str], producer_settings: ProducerSettings, unique: str) -> None:
    """ADR #010 verification: all delivered (count on the consumer), zero duplicates."""
    csv_path = write_csv(tmp_path / "trades.csv", TRADE_HEADER, trade_rows(10_000))
    result = produce_csv(csv_path=csv_path, settings=producer_settings, registry=EmbeddedRegistry(), data_type="trades",
                         exchange="asx", asset_class=topics["trades"].split(".")[1], keep_latencies=True)
    assert (result.rows_read, result.produced, result.acked, result.rejected, result.failed) == (10_000, 10_000, 10_000, 0, 0)
    assert len(result.latencies) == 10_000  # one produce-to-ack latency per acknowledged message
    messages = read_all(kafka_bootstrap, topics["trades"], expected=10_000, group=f"g-{unique}")
    identities = [(r["symbol"], r["sequence_number"]) for r in (decode(m.value()) for m in messages)]
    assert len(identities) == 10_000
    assert len(set(identities)) == 10_000


@pytest.mark.django_db
def test_decimal_prices_and_utc_timestamps_survive_the_round_trip(
        tmp_path: Path, kafka_bootstrap: str, topics: dict[str, str], producer_settings: ProducerSettings, unique: str) -> None:
    from datetime import datetime
    from decimal import Decimal

    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, [["QAN", "1011", "2014-03-03T15:59:59.999999", "1.185", "2000", "2", "CXA"]])
    produce_csv(csv_path=csv_path, settings=producer_settings, registry=EmbeddedRegistry(), data_type="trades",
                exchange="asx", asset_class=topics["trades"].split(".")[1])
    [msg] = read_all(kafka_bootstrap, topics["trades"], expected=1, group=f"g-{unique}")
    record = decode(msg.value())
    assert record["price"] == Decimal("1.185000")
    assert record["exchange_timestamp"] == datetime(2014, 3, 3, 4, 59, 59, 999999, tzinfo=UTC)
    assert (record["venue"], record["qualifiers"], record["buyer_id"], record["sequence_number"]) == ("CXA", 2, None, 1)


@pytest.mark.django_db
def test_bad_rows_go_to_the_dlq_file_and_the_good_rows_are_produced(
        tmp_path: Path, kafka_bootstrap: str, topics: dict[str, str], producer_settings: ProducerSettings, unique: str) -> None:
    good = trade_rows(5)
    rows = [good[0], ["BHP", "1", "2014-03-03T10:00:00", "abc", "1", "0", "ASX"], good[1],
            ["BHP", "1", "2014-03-03T10:00:00", "30.00", "-1", "0", "ASX"], good[2], ["", "1", "2014-03-03T10:00:00", "1", "1", "0", "ASX"],
            good[3], good[4]]
    dlq = tmp_path / "rejected.jsonl"
    result = produce_csv(csv_path=write_csv(tmp_path / "t.csv", TRADE_HEADER, rows), settings=producer_settings,
                         registry=EmbeddedRegistry(), data_type="trades", exchange="asx",
                         asset_class=topics["trades"].split(".")[1], dlq_path=dlq)
    assert (result.rows_read, result.produced, result.acked, result.rejected) == (8, 5, 5, 3)
    entries = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert [(e["line"], e["reason"]) for e in entries] == [(3, "bad_price"), (5, "negative_volume"), (7, "empty_symbol")]
    assert entries[0]["row"] == "BHP,1,2014-03-03T10:00:00,abc,1,0,ASX"
    assert "price 'abc' is not a decimal number" in entries[0]["error"]
    assert len(read_all(kafka_bootstrap, topics["trades"], expected=5, group=f"g-{unique}")) == 5


@pytest.mark.django_db
def test_broker_that_is_not_there_gives_a_clear_error_within_the_timeout(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, trade_rows(3))
    settings = ProducerSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", connect_timeout_s=2.0, delivery_timeout_ms=2000)
    start = time.monotonic()
    with pytest.raises(ProduceError) as caught:
        produce_csv(csv_path=csv_path, settings=settings, registry=EmbeddedRegistry(), data_type="trades", exchange="asx")
    assert time.monotonic() - start < 10
    assert "did not answer within 2s" in str(caught.value) and "manage.py broker start" in str(caught.value)


@pytest.mark.django_db
def test_missing_topic_is_a_clear_error(tmp_path: Path, producer_settings: ProducerSettings, unique: str) -> None:
    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, trade_rows(3))
    with pytest.raises(ProduceError) as caught:
        produce_csv(csv_path=csv_path, settings=producer_settings, registry=EmbeddedRegistry(), data_type="trades",
                    exchange="asx", asset_class=f"none{unique}")
    assert "does not exist" in str(caught.value) and "manage.py create_topics" in str(caught.value)


@pytest.mark.django_db
def test_broker_killed_mid_file_reports_only_acknowledged_rows_and_does_not_hang(tmp_path: Path) -> None:
    """A broker that dies while rows are in flight: the run ends within the delivery timeout and
    every row is either acked (the broker confirmed it) or counted as failed and kept in the DLQ file."""
    var_dir, port = tmp_path / "broker", free_port()
    status = broker.start(port=port, var_dir=var_dir)
    create_topics(status.address, declared_topics(asset_class="killed", partitions=3))
    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, trade_rows(60_000))
    settings = ProducerSettings(bootstrap_servers=status.address, connect_timeout_s=2.0, delivery_timeout_ms=3000)
    dlq = tmp_path / "dlq.jsonl"
    killed = []

    def kill_after_first_batch(_: int) -> None:
        if not killed:
            broker.stop(port=port, var_dir=var_dir, timeout=0.1)
            killed.append(time.monotonic())

    try:
        result = produce_csv(csv_path=csv_path, settings=settings, registry=EmbeddedRegistry(), data_type="trades",
                             exchange="asx", asset_class="killed", dlq_path=dlq, on_progress=kill_after_first_batch)
    finally:
        broker.stop(port=port, var_dir=var_dir)
    assert killed, "the broker was never stopped"
    # ends instead of waiting forever for acks that cannot come: 3 s delivery timeout plus drain
    # slack, with room for a loaded shared machine (a hang would run into the test's timeout)
    assert time.monotonic() - killed[0] < 60
    assert result.produced == 60_000
    assert result.failed > 0 and not result.ok
    assert result.acked + result.failed == result.produced
    not_delivered = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert len(not_delivered) == result.failed - result.delivery_errors.get("no_delivery_report", 0)
    assert all(e["reason"] == "not_delivered" for e in not_delivered)
    assert {e["row"]["symbol"] for e in not_delivered} <= set(SYMBOLS)


def test_producer_is_configured_idempotent_with_acks_all_and_five_in_flight() -> None:
    """ADR #010's producer configuration, as handed to librdkafka."""
    conf = ProducerSettings(bootstrap_servers="x:1").librdkafka()
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["max.in.flight.requests.per.connection"] == 5 and conf["compression.type"] == "snappy"
    assert conf["retries"] == 3


@pytest.mark.django_db
def test_two_worker_processes_keep_each_symbol_in_one_partition_in_order_and_merge_rejects(
        tmp_path: Path, kafka_bootstrap: str, topics: dict[str, str], producer_settings: ProducerSettings, unique: str) -> None:
    """--workers 2 splits rows by symbol: counts add up, order per symbol holds, rejected rows from
    both processes land in one DLQ file in line order."""
    from ingestion.engine.producer import produce_csv_parallel

    rows = trade_rows(4000)
    rows[10] = [*rows[10][:3], "bad", *rows[10][4:]]  # BHP (symbol index 0)
    rows[3001] = [*rows[3001][:4], "-5", *rows[3001][5:]]  # RIO (symbol index 1)
    dlq = tmp_path / "dlq.jsonl"
    result = produce_csv_parallel(workers=2, csv_path=write_csv(tmp_path / "t.csv", TRADE_HEADER, rows), settings=producer_settings,
                                  registry=EmbeddedRegistry(), data_type="trades", exchange="asx",
                                  asset_class=topics["trades"].split(".")[1], dlq_path=dlq, keep_latencies=True)
    assert (result.rows_read, result.produced, result.acked, result.rejected, result.failed) == (4000, 3998, 3998, 2, 0)
    assert len(result.latencies) == 3998
    assert [(e["line"], e["reason"]) for e in map(json.loads, dlq.read_text().splitlines())] == [(12, "bad_price"), (3003, "negative_volume")]
    messages = read_all(kafka_bootstrap, topics["trades"], expected=3998, group=f"g-{unique}")
    assert len(messages) == 3998
    partitions_of: dict[str, set[int]] = defaultdict(set)
    sequences: dict[str, list[int]] = defaultdict(list)
    for msg in messages:
        record = decode(msg.value())
        partitions_of[record["symbol"]].add(msg.partition())
        sequences[record["symbol"]].append(record["sequence_number"])
    assert all(len(p) == 1 for p in partitions_of.values())
    assert sequences["BHP"] == list(range(1, 400)) and sequences["RIO"] == list(range(1, 400))
    assert all(seqs == list(range(1, 401)) for s, seqs in sequences.items() if s not in ("BHP", "RIO"))


@pytest.mark.django_db
def test_metrics_count_produced_rejected_and_ack_latency(
        tmp_path: Path, topics: dict[str, str], producer_settings: ProducerSettings) -> None:
    from prometheus_client import REGISTRY

    asset_class = topics["trades"].split(".")[1]
    labels = {"exchange": "asx", "asset_class": asset_class, "data_type": "trades"}
    rows = [*trade_rows(20), ["BHP", "1", "2014-03-03T10:00:00", "1.00", "-1", "0", "ASX"]]
    produce_csv(csv_path=write_csv(tmp_path / "t.csv", TRADE_HEADER, rows), settings=producer_settings,
                registry=EmbeddedRegistry(), data_type="trades", exchange="asx", asset_class=asset_class)
    assert REGISTRY.get_sample_value("k2_kafka_messages_produced_total", labels) == 20
    assert REGISTRY.get_sample_value("k2_producer_rows_rejected_total", {**labels, "reason": "negative_volume"}) == 1
    assert REGISTRY.get_sample_value("k2_kafka_produce_ack_latency_seconds_count", labels) == 20
    assert REGISTRY.get_sample_value("k2_kafka_produce_ack_latency_seconds_bucket", {**labels, "le": "5.0"}) == 20


def test_registry_that_is_not_there_gives_a_clear_error(tmp_path: Path, topics: dict[str, str], producer_settings: ProducerSettings) -> None:
    from catalog.engine.registry import ConfluentRegistry

    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, trade_rows(3))
    with pytest.raises(ProduceError) as caught:
        produce_csv(csv_path=csv_path, settings=producer_settings, registry=ConfluentRegistry(f"http://127.0.0.1:{free_port()}"),
                    data_type="trades", exchange="asx", asset_class=topics["trades"].split(".")[1])
    assert "could not register the trades schema" in str(caught.value) and "K2_SCHEMA_REGISTRY_URL" in str(caught.value)


def test_latency_batch_fills_the_histogram_exactly_as_observe_does() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from ingestion.engine.producer import LatencyBatch
    from k2core.metrics import LATENCY_BUCKETS

    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "h", buckets=LATENCY_BUCKETS, registry=registry)
    batched = Histogram("batched", "h", buckets=LATENCY_BUCKETS, registry=registry)
    values = [0.0, 0.001, 0.0010001, 0.004, 0.1, 0.25, 0.2500001, 4.9, 5.0, 7.5, 120.0] * 3
    for value in values:
        one_by_one.observe(value)
    batch = LatencyBatch(batched)
    batch.pending.extend(values)
    batch.flush()
    samples = {m.name: [(s.name.split("_")[-1], s.labels.get("le"), s.value) for s in m.samples if not s.name.endswith("_created")]
               for m in registry.collect()}
    assert [(k, le, v) for k, le, v in samples["batched"]] == [(k, le, v) for k, le, v in samples["one_by_one"]]
    assert batch.pending == []
