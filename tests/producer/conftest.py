"""Helpers for the producer tests: per-test topics on the real broker, a consumer that reads them back."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from ingestion.engine.producer import ProducerSettings
from ingestion.engine.topics import create_topics, declared_topics

TRADE_HEADER = ["symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue"]
QUOTE_HEADER = ["symbol", "company_id", "exchange_timestamp", "bid_price", "bid_volume", "ask_price", "ask_volume"]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_all(bootstrap: str, topic: str, *, expected: int, group: str, timeout: float = 60.0) -> list[Message]:
    """Every message of `topic` from the beginning, stopping once `expected` arrived (or at the timeout),
    then reading a little longer so extra (duplicate) messages would be seen too."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=0.5)
            for msg in batch:
                if msg.error() is None:
                    messages.append(msg)
            if len(messages) >= expected and quiet_until is None:
                quiet_until = time.monotonic() + 2.0
            if quiet_until is not None and time.monotonic() > quiet_until:
                break
    finally:
        consumer.close()
    return messages


def partition_counts(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "k2-test-watermarks"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


@pytest.fixture
def asset_class(unique: str) -> str:
    """A per-test asset class, so this test's topics and subjects are its own (market.t<unique>.<type>.asx)."""
    return f"t{unique}"


@pytest.fixture
def topics(kafka_bootstrap: str, asset_class: str) -> dict[str, str]:
    """This test's three topics on the real broker, 30 partitions each (ADR #009). data_type → topic."""
    specs = declared_topics(asset_class=asset_class, partitions=30)
    create_topics(kafka_bootstrap, specs)
    return {s.data_type: s.name for s in specs if not s.dlq}


@pytest.fixture
def producer_settings(kafka_bootstrap: str) -> ProducerSettings:
    return ProducerSettings(bootstrap_servers=kafka_bootstrap, delivery_timeout_ms=15_000, connect_timeout_s=5.0)
