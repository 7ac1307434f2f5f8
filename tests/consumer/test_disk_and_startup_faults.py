"""Issue 11's fault suite, the two faults not covered elsewhere: a full warehouse disk (a real
8 MB tmpfs under the warehouse, filled to ENOSPC) and a consumer started while its catalog is
down (a throwaway Postgres cluster that is stopped, or a closed port). Every table is read back
with plain DuckDB `iceberg_scan` (tests/faults.py), not with K2 code; Kafka's committed offsets
are read from the broker."""

from __future__ import annotations

import threading
import time

import pytest

from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog
from catalog.engine.writer import RetryPolicy, WarehouseFull
from catalog.registry import EmbeddedRegistry
from ingestion.engine.consumer import IcebergConsumer, MemoryGapSink
from tests.consumer.conftest import (
    committed_offsets,
    consume_process,
    create_topic,
    encode_trades,
    make_config,
    produce,
    run_in_thread_with_errors,
    subprocess_env,
    trade,
)
from tests.faults import PG_TEST_URL, SmallTmpfs, assert_written_once, duckdb_offsets, free_port, wait_for


# --- a full warehouse disk -------------------------------------------------------------------------
@pytest.fixture
def tmpfs_catalog(iceberg_uri, unique):  # type: ignore[no-untyped-def]
    """The test's tables with their warehouse on an 8 MB tmpfs of their own."""
    disk = SmallTmpfs(size_mb=8)
    config = CatalogConfig(uri=iceberg_uri, warehouse=disk.path.as_uri(), namespace=f"t_{unique}")
    catalog = load_catalog(config)
    tables = ensure_tables(catalog, config.namespace)
    yield disk, config
    disk.free()
    for name in tables:
        catalog.drop_table(f"{config.namespace}.{name}")
    catalog.drop_namespace(config.namespace)
    catalog.engine.dispose()
    disk.close()


@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_full_warehouse_disk_is_waited_out_and_every_row_lands_once(kafka_bootstrap, tmpfs_catalog, registry,
                                                                    unique) -> None:
    """The warehouse's disk fills up mid-run: the consumer keeps its batch (nothing committed to
    the table or to Kafka past it) and retries within its budget; once space is back it writes
    on, every message exactly once."""
    disk, catalog_config = tmpfs_catalog
    topic = f"market.equities.trades.d{unique}"
    create_topic(kafka_bootstrap, topic)
    encoded = encode_trades(registry, topic, [trade(f"S{i % 3}", i // 3 + 1) for i in range(600)])
    produce(kafka_bootstrap, topic, encoded[:300])
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace, max_messages=600,
                         retry=RetryPolicy(budget_seconds=60, max_delay=1.0))
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    thread, errors = run_in_thread_with_errors(engine)
    assert wait_for(lambda: engine.stats.rows_written >= 300, 60), (engine.stats, errors)
    assert wait_for(lambda: committed_offsets(kafka_bootstrap, config.group, topic) == [300], 20)
    assert disk.fill() > 0 and disk.free_bytes() == 0  # the warehouse disk is full ...
    produce(kafka_bootstrap, topic, encoded[300:])
    time.sleep(6)
    assert thread.is_alive() and not errors, errors  # ... the consumer waits instead of failing or skipping
    assert engine.stats.rows_written == 300
    assert_written_once(duckdb_offsets(PG_TEST_URL, catalog_config.namespace), 300)
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [300]  # nothing committed past the table
    disk.free()  # space comes back
    thread.join(timeout=90)
    assert not thread.is_alive() and not errors, errors
    assert engine.stats.rows_written == 600
    assert_written_once(duckdb_offsets(PG_TEST_URL, catalog_config.namespace), 600)
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [600]


@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_warehouse_full_beyond_the_budget_fails_clearly_and_a_restart_resumes_exactly_once(
        kafka_bootstrap, tmpfs_catalog, registry, unique) -> None:
    disk, catalog_config = tmpfs_catalog
    topic = f"market.equities.trades.f{unique}"
    create_topic(kafka_bootstrap, topic)
    encoded = encode_trades(registry, topic, [trade(f"S{i % 3}", i // 3 + 1) for i in range(500)])
    produce(kafka_bootstrap, topic, encoded[:200])
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                         retry=RetryPolicy(budget_seconds=3, max_delay=1.0))
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, gap_sink=MemoryGapSink())
    thread, errors = run_in_thread_with_errors(engine)
    assert wait_for(lambda: engine.stats.rows_written >= 200, 60), (engine.stats, errors)
    assert wait_for(lambda: committed_offsets(kafka_bootstrap, config.group, topic) == [200], 20)
    disk.fill()
    started = time.monotonic()
    produce(kafka_bootstrap, topic, encoded[200:])
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert time.monotonic() - started >= 3  # the budget was used
    assert len(errors) == 1 and isinstance(errors[0], WarehouseFull), errors
    message = str(errors[0])
    assert disk.path.as_uri() in message and "full" in message and "K2_CATALOG_RETRY_SECONDS" in message
    assert "No space left on device" in message
    assert_written_once(duckdb_offsets(PG_TEST_URL, catalog_config.namespace), 200)
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [200]  # not past what the table holds

    disk.free()
    restarted = IcebergConsumer(make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace,
                                            max_messages=300), catalog=load_catalog(catalog_config), registry=registry,
                                gap_sink=MemoryGapSink())
    restarted.run()
    assert restarted.stats.rows_written == 300
    assert_written_once(duckdb_offsets(PG_TEST_URL, catalog_config.namespace), 500)
    assert committed_offsets(kafka_bootstrap, config.group, topic) == [500]


# --- a consumer started while its catalog is down ------------------------------------------------------
def _encode(topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """Trades registered in the embedded registry (the test database), which `manage.py consume` reads."""
    return encode_trades(EmbeddedRegistry(), topic, [trade(f"S{i % 3}", i // 3 + 1) for i in range(count)])


@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_consumer_started_while_the_catalog_is_down_waits_then_writes_every_message_once(
        kafka_bootstrap, outage_catalog, unique) -> None:
    pg, catalog_config = outage_catalog
    topic = f"market.equities.trades.w{unique}"
    group = f"g-{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, _encode(topic, 300))
    pg.stop()  # the catalog is down before the consumer starts
    env = subprocess_env(bootstrap=kafka_bootstrap, catalog_config=catalog_config,
                         extra={"K2_CATALOG_RETRY_SECONDS": "90"})
    proc = consume_process(["--topic", topic, "--group", group, "--namespace", catalog_config.namespace,
                            "--batch-size", "100", "--max-messages", "300"], env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    # the process has started (Django's start-up takes seconds on a busy machine) and found the catalog down
    assert wait_for(lambda: any("catalog_unreachable_retry" in line for line in lines) or proc.poll() is not None,
                    120), "".join(lines)
    time.sleep(5)
    assert proc.poll() is None, "".join(lines)  # waiting, not failed
    assert committed_offsets(kafka_bootstrap, group, topic)[0] < 0  # and nothing committed meanwhile
    pg.start()
    proc.wait(timeout=150)
    reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert_written_once(duckdb_offsets(pg.url, catalog_config.namespace), 300)
    assert committed_offsets(kafka_bootstrap, group, topic) == [300]


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_consumer_started_while_the_catalog_stays_down_fails_clearly_after_the_budget(
        kafka_bootstrap, warehouse_dir, unique) -> None:
    port = free_port()  # nothing listens there: a catalog that never comes up
    catalog_config = CatalogConfig(uri=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                                   warehouse=warehouse_dir.as_uri(), namespace=f"t_{unique}")
    topic = f"market.equities.trades.n{unique}"
    group = f"g-{unique}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, _encode(topic, 50))
    env = subprocess_env(bootstrap=kafka_bootstrap, catalog_config=catalog_config,
                         extra={"K2_CATALOG_RETRY_SECONDS": "4"})
    started = time.monotonic()
    proc = consume_process(["--topic", topic, "--group", group, "--namespace", catalog_config.namespace], env)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, out
    assert time.monotonic() - started >= 4  # the budget was used ...
    assert "catalog_unreachable_retry" in out
    assert "Traceback" not in out  # ... then one clear line
    assert f"127.0.0.1:{port}/postgres" in out and "K2_CATALOG_RETRY_SECONDS" in out and "Postgres" in out
    assert committed_offsets(kafka_bootstrap, group, topic)[0] < 0  # no Kafka offset committed
