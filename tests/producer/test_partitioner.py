"""Issue 11 item 7: a symbol lands in the partition a Java client's default partitioner picks.

The expected partition comes from an independent murmur2 written here from Kafka's Java source
(`org.apache.kafka.common.utils.Utils.murmur2`, and `BuiltInPartitioner.partitionForKey`:
`toPositive(murmur2(keyBytes)) % numPartitions`), checked against Kafka's own test vectors
(`UtilsTest.testMurmur2`); the partition each message landed in is read back from the broker.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import pytest

from catalog.registry import EmbeddedRegistry
from ingestion.engine.producer import ProducerSettings, produce_csv
from tests.producer.conftest import read_all

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "asx-2014-03"
PARTITIONS = 30  # the test topics' partition count (ADR #009)


def java_murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2, transcribed with Java's 32-bit int arithmetic; returns the signed int."""
    mask = 0xFFFFFFFF
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r  # >>> on an int: logical shift of the 32-bit pattern
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """BuiltInPartitioner.partitionForKey: Utils.toPositive(murmur2(key)) % numPartitions."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


# Kafka's UtilsTest.testMurmur2 (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_reference_murmur2_matches_kafkas_published_vectors() -> None:
    assert {key: java_murmur2(key) for key in KAFKA_VECTORS} == KAFKA_VECTORS


def _sample_keys(name: str, column: str) -> set[str]:
    with open(SAMPLE / name, newline="", encoding="utf-8") as fh:
        return {row[column] for row in csv.DictReader(fh)}


def test_librdkafkas_old_default_would_have_split_the_sample_symbols_from_java() -> None:
    """Why the setting matters: CRC32 (librdkafka's consistent_random) places the sample symbols elsewhere."""
    symbols = _sample_keys("trades.csv", "symbol")
    moved = {s for s in symbols if zlib.crc32(s.encode()) % PARTITIONS != java_partition(s.encode(), PARTITIONS)}
    assert "BHP" in moved and len(moved) >= len(symbols) - 1


@pytest.mark.django_db
@pytest.mark.parametrize(("data_type", "key_column"), [("trades", "symbol"), ("quotes", "symbol"),
                                                       ("reference_data", "company_id")])
def test_every_sample_key_lands_in_the_partition_javas_partitioner_chooses(  # type: ignore[no-untyped-def]
        kafka_bootstrap: str, topics: dict[str, str], producer_settings: ProducerSettings, unique: str,
        data_type: str, key_column: str) -> None:
    csv_path = SAMPLE / f"{data_type}.csv"
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = sum(1 for _ in csv.DictReader(fh))
    result = produce_csv(csv_path=csv_path, settings=producer_settings, registry=EmbeddedRegistry(),
                         data_type=data_type, exchange="asx", asset_class=topics[data_type].split(".")[1])
    assert result.ok and result.acked == rows
    messages = read_all(kafka_bootstrap, topics[data_type], expected=rows, group=f"g-{unique}")
    assert len(messages) == rows
    landed: dict[str, set[int]] = {}
    for msg in messages:
        landed.setdefault(msg.key().decode(), set()).add(msg.partition())
    assert set(landed) == _sample_keys(f"{data_type}.csv", key_column)
    expected = {key: {java_partition(key.encode(), PARTITIONS)} for key in landed}
    assert landed == expected
    if data_type == "trades":
        assert landed["BHP"] == {java_partition(b"BHP", PARTITIONS)}
