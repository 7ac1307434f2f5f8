"""Kafka client settings every K2 producer shares (the CSV producer, the consumer's DLQ producer
and replay), so a key lands in the same partition whichever wrote it."""

from __future__ import annotations

# Java clients' default partitioner (murmur2 of the key, modulo the partition count), so a key lands in the
# same partition whichever client produced it; librdkafka's own default (consistent_random, CRC32) differs.
PARTITIONER = "murmur2_random"
