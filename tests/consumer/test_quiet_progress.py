"""A consumer logs `consumer_progress` only when something moved (or once a minute idle), while
its heartbeat to the portal keeps its pace (issue 13, item 8)."""

from __future__ import annotations

import threading
import time

import pytest

from ingestion.engine.consumer import IcebergConsumer, MemoryGapSink
from ingestion.engine.progress import ProgressGate
from tests.consumer.conftest import create_topic, encode_trades, make_config, produce, trade


def test_progress_gate_passes_movement_and_one_idle_line_a_minute() -> None:
    gate = ProgressGate(idle_every_s=60)
    assert gate.due(0, 0, 0, 0, now=0.0)            # first report
    assert not gate.due(0, 0, 0, 0, now=5.0)        # idle
    assert gate.due(10, 10, 0, 0, now=10.0)         # moved
    assert not gate.due(10, 10, 0, 0, now=69.0)     # idle, under a minute since the last line
    assert gate.due(10, 10, 0, 0, now=70.0)         # idle a minute: one line
    assert gate.due(10, 10, 0, 1, now=71.0)         # a dead letter counts as movement


@pytest.mark.django_db(transaction=True)
def test_idle_consumer_writes_progress_only_when_messages_moved(kafka_bootstrap, iceberg_tables, catalog_config,
                                                                 registry, unique, caplog) -> None:
    topic = f"market.eq{unique}.trades.asx"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade("BHP", s) for s in range(1, 6)]))
    beats: list[int] = []
    stop = threading.Event()
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                         progress_interval_s=0.1, stop_check_interval_s=0.1, from_beginning=True)
    from catalog.engine.iceberg import load_catalog

    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink(),
                             stop_signal=stop.is_set, heartbeat=lambda stats: beats.append(stats.messages))
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while (not beats or beats[-1] < 5) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert beats and beats[-1] == 5, beats
    idle_from = len(beats)
    time.sleep(3)  # idle: ~30 progress reports at 0.1 s
    stop.set()
    thread.join(30)
    assert len(beats) - idle_from >= 10  # the heartbeat (stats to the portal) is not throttled
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "consumer_progress"]
    # one line per change of the counters (0 → some → 5 at most), none while idle
    assert 1 <= len(lines) <= 3, lines
    assert lines[-1]["messages"] == 5
