"""Issue 11 item 6: a graceful stop while the broker is down is bounded, exits 0 when the table is
consistent, and says what was not sent. The broker is a real Tansu process this test starts on
its own port and stops (SIGTERM) while the consumer holds a batch with a poison message in it."""

from __future__ import annotations

import signal
import time

import pytest

from catalog.registry import EmbeddedRegistry
from ingestion.engine import broker
from ingestion.engine.consumer.config import ConsumerConfig
from tests.conftest import free_port
from tests.consumer.conftest import consume_process, create_topic, encode_trades, produce, subprocess_env, table_rows, trade


@pytest.mark.django_db(transaction=True)
def test_stop_while_the_broker_is_down_is_bounded_exits_0_and_says_what_was_not_sent(
        iceberg_tables, catalog_config, unique, tmp_path) -> None:
    port = free_port()
    address = broker.start(port=port, var_dir=tmp_path).address
    proc = None
    try:
        topic = f"market.equities.trades.d{unique}"
        create_topic(address, topic)
        encoded = encode_trades(EmbeddedRegistry(), topic, [trade("BHP", i + 1) for i in range(250)])
        produce(address, topic, encoded[:200])
        # batches of 100 at most; once 200 rows are in the table the commit thread is held (a slow
        # commit) until the stop, so the next batch, up to a minute old, is still in hand at the stop
        args = ["--topic", topic, "--group", f"g-{unique}", "--batch-size", "100", "--max-batch-ms", "60000",
                "--namespace", catalog_config.namespace, "--progress-interval", "1"]
        proc = consume_process(args, subprocess_env(bootstrap=address, catalog_config=catalog_config),
                               faults=["--hold-commits-after-rows", "200"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(table_rows(catalog_config)) < 200:
            time.sleep(0.3)
        assert len(table_rows(catalog_config)) == 200
        produce(address, topic, [*encoded[200:], (b"BHP", b"not avro at all")])  # 51 in hand, one poison
        time.sleep(3)
        broker.stop(port=port, var_dir=tmp_path)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        elapsed = time.monotonic() - signalled
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        broker.stop(port=port, var_dir=tmp_path)
    assert proc.returncode == 0, out
    # bounded by the stop budget (`shutdown_timeout_s`), not by librdkafka's own waits for a broker
    # that is gone (a minute and more); the margin is the process's own exit on a loaded 2-core
    # machine (interpreter teardown, the logs flushed), which once took it past budget + 2 s
    budget = ConsumerConfig.__dataclass_fields__["shutdown_timeout_s"].default
    assert elapsed <= budget + 7, f"stop took {elapsed:.1f} s against a stop budget of {budget} s"
    # the batch in hand could not send its dead letter: it is not written, and the output says so
    assert "not sent: the last 51 messages read were not written" in out, out[-3000:]
    assert "a restart reads them again" in out
    assert sorted(r["source_offset"] for r in table_rows(catalog_config)) == list(range(200))
