"""Issue 11 items 8 (consumer side) and 9: a value the gap store cannot hold never makes the
consumer fail (and replay the same batch forever): its record goes to the dead-letter topic and
the rest flows. Dead letters are keyed by their source position, so a replay is recognisable.
Real broker, Postgres (SequenceGap) and Iceberg."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer

from ingestion.gaps import OrmGapSink
from ingestion.models import SequenceGap
from tests.consumer.conftest import create_topic, encode_trades, make_config, produce, run_consumer, table_rows, trade


def read_dlq(bootstrap: str, topic: str, count: int, group: str) -> list[Any]:
    dlq = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    dlq.subscribe([f"{topic}.dlq"])
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while len(found) < count and time.monotonic() < deadline:
        msg = dlq.poll(1.0)
        if msg is not None and not msg.error():
            found.append(msg)
    dlq.close()
    return found


@pytest.mark.django_db(transaction=True)
def test_a_value_the_gap_store_cannot_hold_goes_to_the_dlq_and_the_rest_flows(
        kafka_bootstrap, iceberg_tables, catalog_config, registry, unique) -> None:
    topic = f"market.equities.trades.v{unique}"
    create_topic(kafka_bootstrap, topic)
    long_symbol = "X" * 40  # longer than SequenceGap.symbol (32)
    nul_symbol = "AB\x00C"  # Postgres text cannot hold NUL
    records = [trade("BHP", 1), trade(long_symbol, 1), trade("BHP", 2), trade(long_symbol, 5),
               trade(nul_symbol, 1), trade(nul_symbol, 4), trade("BHP", 3), trade("BHP", 6)]
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, records))
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                         max_messages=len(records))
    engine = run_consumer(config, catalog_config, registry, gap_sink=OrmGapSink())

    offsets = sorted(r["source_offset"] for r in table_rows(catalog_config))
    assert offsets == [0, 2, 4, 6, 7]  # BHP 1, 2, 3, 6 and the NUL stream's first record (no gap there)
    assert engine.stats.dlq == 3
    gaps = list(SequenceGap.objects.filter(topic=topic).values_list("symbol", "expected_sequence",
                                                                    "received_sequence"))
    assert gaps == [("BHP", 4, 6)]  # the gap of a storable stream is still recorded
    assert engine.stats.gaps == 1
    dead = {int(dict(m.headers())["k2.source.offset"]): dict(m.headers()) for m in
            read_dlq(kafka_bootstrap, topic, 3, f"dlq-{unique}")}
    assert sorted(dead) == [1, 3, 5]
    assert dead[1]["k2.error.reason"] == dead[3]["k2.error.reason"] == b"value_too_long"
    assert b"symbol is 40 characters long" in dead[1]["k2.error"] and b"at most 32" in dead[1]["k2.error"]
    assert dead[5]["k2.error.reason"] == b"gap_unstorable" and b"NUL" in dead[5]["k2.error"]


@pytest.mark.django_db(transaction=True)
def test_dead_letters_sent_again_after_a_crash_are_recognisable_by_key_and_a_truncated_record_says_why(
        kafka_bootstrap, iceberg_tables, catalog_config, unique) -> None:
    """SIGKILL right after a batch's dead letters were delivered, before anything of the batch was
    committed: the restart sends them again, with the same key (the source position), so the
    documented dedup (first message per key) leaves each once."""
    import signal

    from catalog.registry import EmbeddedRegistry
    from tests.consumer.conftest import consume_process, encode_trades, subprocess_env

    topic = f"market.equities.trades.k{unique}"
    create_topic(kafka_bootstrap, topic)
    good = encode_trades(EmbeddedRegistry(), topic, [trade("BHP", 1), trade("BHP", 2), trade("BHP", 3)])
    values = [good[0], (b"BHP", b"not avro at all"), (b"BHP", good[1][1][:-6]), good[2]]
    produce(kafka_bootstrap, topic, values)
    args = ["--topic", topic, "--group", f"g-{unique}", "--batch-size", "10", "--max-batch-ms", "2000",
            "--namespace", catalog_config.namespace, "--max-messages", "4"]
    env = subprocess_env(bootstrap=kafka_bootstrap, catalog_config=catalog_config)
    proc = consume_process(args, env, faults=["--kill-after-dlq-sends", "1"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, out
    assert table_rows(catalog_config) == []  # killed before the batch's commit

    proc = consume_process(args, env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert sorted(r["source_offset"] for r in table_rows(catalog_config)) == [0, 3]

    dead = read_dlq(kafka_bootstrap, topic, 4, f"dlq-{unique}")
    keys = [m.key() for m in dead]
    assert sorted(keys) == sorted([f"{topic}/0/1".encode(), f"{topic}/0/2".encode()] * 2)  # each sent twice
    first_per_key = {}
    for m in dead:  # the deduplication the README describes: keep the first message per key
        first_per_key.setdefault(m.key(), m)
    assert len(first_per_key) == 2
    headers = {k: dict(m.headers()) for k, m in first_per_key.items()}
    assert all(h["k2.source.key"] == b"BHP" for h in headers.values())
    assert headers[f"{topic}/0/1".encode()]["k2.source.position"] == f"{topic}/0/1".encode()
    truncated = headers[f"{topic}/0/2".encode()]
    assert truncated["k2.error.reason"] == b"undecodable"
    assert truncated["k2.error"].startswith(b"truncated record: expected ")
    assert b" bytes at byte " in truncated["k2.error"]
