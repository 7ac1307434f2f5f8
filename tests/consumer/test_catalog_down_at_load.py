"""A consumer engine whose process already holds a catalog object waits for the catalog when it
loads its table (issue 11: catalog faults at start-up)."""

from __future__ import annotations

import time

import pytest

from catalog.engine.iceberg import load_catalog
from catalog.engine.writer import RetryPolicy
from ingestion.engine.consumer import IcebergConsumer, MemoryGapSink
from tests.consumer.conftest import (
    create_topic,
    encode_trades,
    make_config,
    produce,
    run_in_thread_with_errors,
    trade,
)
from tests.faults import assert_written_once, duckdb_offsets


@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_engine_started_while_its_catalog_is_down_waits_for_the_table_then_writes_once(
        kafka_bootstrap, outage_catalog, registry, unique) -> None:
    """A process that already holds a catalog object (a Celery worker's cached `get_catalog()`)
    starts a consumer while the catalog's Postgres is down: loading the table is retried within
    the budget, then the consumer writes every message once."""
    pg, catalog_config = outage_catalog
    catalog = load_catalog(catalog_config)  # held from before the outage
    catalog.load_table(f"{catalog_config.namespace}.trades")
    topic = f"market.equities.trades.l{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, [trade(f"S{i % 3}", i // 3 + 1) for i in range(300)]))
    pg.stop()
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=300,
                         retry=RetryPolicy(budget_seconds=60, max_delay=1.0))
    engine = IcebergConsumer(config, catalog=catalog, registry=registry, gap_sink=MemoryGapSink())
    thread, errors = run_in_thread_with_errors(engine)
    time.sleep(6)
    assert thread.is_alive() and not errors, errors  # waiting for the catalog, not failed
    pg.start()
    thread.join(timeout=90)
    assert not thread.is_alive() and not errors, errors
    assert_written_once(duckdb_offsets(pg.url, catalog_config.namespace), 300)
