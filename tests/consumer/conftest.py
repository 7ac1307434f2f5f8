"""Helpers for the consumer tests: a real broker (the shared `kafka_bootstrap`), a real
Iceberg catalog with a namespace per test, and messages produced with confluent-kafka in
the Confluent wire format. The registry here is a small dict-backed implementation of the
`SchemaRegistry` interface (not a stand-in for a service: the engine only needs ids → text).
`outage_catalog` is a catalog on a Postgres cluster of the test's own, which the test stops and
starts to inject a catalog outage at a real boundary."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from catalog.engine import schemas, wire
from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog
from ingestion.engine.consumer import ConsumerConfig, IcebergConsumer, MemoryGapSink
from ingestion.engine.decode import BatchDecoder
from k2portal.config import BASE_DIR
from tests.faults import ThrowawayPostgres

BASE_TIME = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)


class DictRegistry:
    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.ids: dict[str, int] = {}

    def register(self, subject: str, schema_text: str) -> int:
        if schema_text not in self.ids:
            self.ids[schema_text] = len(self.by_id) + 1
            self.by_id[self.ids[schema_text]] = schema_text
        return self.ids[schema_text]

    def get_schema(self, schema_id: int) -> str:
        from catalog.engine.registry import SchemaNotFound

        try:
            return self.by_id[schema_id]
        except KeyError:
            raise SchemaNotFound(f"schema id {schema_id} is not in the registry") from None


def trade(symbol: str, seq: int | None, *, i: int | None = None, exchange: str = "ASX") -> dict[str, Any]:
    n = seq if seq is not None else (i or 0)
    return {"symbol": symbol, "company_id": 7, "exchange": exchange,
            "exchange_timestamp": BASE_TIME + timedelta(seconds=n), "price": Decimal("45.123456"),
            "volume": 100 + n, "qualifiers": 0, "venue": "X", "buyer_id": None,
            "ingestion_timestamp": datetime.now(UTC), "sequence_number": seq}


def encode_trade(record: dict[str, Any]) -> bytes:
    """One trade in the Confluent wire format under schema id 1 (the `decoder` fixture's trades schema)."""
    return wire.encode(1, schemas.parsed_schema("trades"), record)


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=15)


def produce(bootstrap: str, topic: str, values: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []
    count = 0
    for key, value in values:
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, _m: errors.append(err.str()) if err else None)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    return count


def encode_trades(registry: DictRegistry, topic: str, records: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    schema_id = registry.register(schemas.subject_name(topic), schemas.schema_text("trades"))
    parsed = schemas.parsed_schema("trades")
    return [(r["symbol"].encode(), wire.encode(schema_id, parsed, r)) for r in records]


def make_config(bootstrap: str, topic: str, unique: str, **kw: Any) -> ConsumerConfig:
    base: dict[str, Any] = {"bootstrap_servers": bootstrap, "data_type": "trades", "topics": (topic,),
                            "group_id": f"g-{unique}", "batch_size": 100, "max_batch_ms": 200,
                            "session_timeout_ms": 6000, "idle_poll_s": 0.2}
    if "namespace" not in kw:
        raise TypeError("namespace is required")
    base.update(kw)
    if base.get("topic_pattern"):
        base["topics"] = None
    return ConsumerConfig(**base)


def run_consumer(config: ConsumerConfig, catalog_config: CatalogConfig, registry: Any, **kw: Any) -> IcebergConsumer:
    """Run an engine to its end; gaps kept in memory unless the test passes its own `gap_sink`."""
    kw.setdefault("gap_sink", MemoryGapSink())
    engine = IcebergConsumer(config, catalog=load_catalog(catalog_config), registry=registry, **kw)
    engine.run()
    return engine


def run_in_thread(engine: IcebergConsumer) -> threading.Thread:
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    return thread


def run_in_thread_with_errors(engine: IcebergConsumer) -> tuple[threading.Thread, list[BaseException]]:
    """Run an engine in a daemon thread; what it raises is collected in the list, for the test to assert on."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test's assertions
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    """The group's committed Kafka offset of each partition of `topic`, read from the broker (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                       timeout=10)]
    finally:
        consumer.close()


def table_rows(catalog_config: CatalogConfig, data_type: str = "trades") -> list[dict[str, Any]]:
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.{data_type}")
    return table.scan().to_arrow().to_pylist()


def subprocess_env(*, bootstrap: str, catalog_config: CatalogConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a `manage.py consume` child process: this test's broker, catalog and
    (pytest-django's) test database."""
    from django.db import connection

    db = connection.settings_dict
    env = {**os.environ,
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
           "K2_KAFKA_BOOTSTRAP": bootstrap, "K2_ICEBERG_CATALOG_URI": catalog_config.uri,
           "K2_WAREHOUSE": catalog_config.warehouse, "K2_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "K2_LOG_JSON": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra or {})
    return env


def consume_process(args: list[str], env: dict[str, str], *, faults: list[str] | None = None) -> subprocess.Popen[str]:
    """`manage.py consume ARGS` as a child process; with `faults` (e.g. ["--kill-after-table-commits", "2"]),
    the same command run by `tests.consumer.faulty_consume`, which SIGKILLs it at that point."""
    command = ["-m", "tests.consumer.faulty_consume", *faults, "--"] if faults else ["manage.py"]
    return subprocess.Popen([sys.executable, *command, "consume", *args], cwd=BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def registry() -> DictRegistry:
    return DictRegistry()


@pytest.fixture
def outage_catalog(warehouse_dir, unique) -> Iterator[tuple[ThrowawayPostgres, CatalogConfig]]:  # noqa: ANN001
    """(pg, config): a catalog with this test's tables on a Postgres cluster of the test's own
    (`tests.faults.ThrowawayPostgres`, running), which the test stops and starts to take the
    catalog down and bring it back; the cluster is destroyed after the test."""
    pg = ThrowawayPostgres()
    try:
        pg.start()
        config = CatalogConfig(uri=pg.sqlalchemy_url, warehouse=warehouse_dir.as_uri(), namespace=f"t_{unique}")
        catalog = load_catalog(config)
        ensure_tables(catalog, config.namespace)
        catalog.engine.dispose()  # no connection of the test's left open when the test stops the cluster
        yield pg, config
    finally:
        pg.destroy()


@pytest.fixture
def decoder() -> Iterator[BatchDecoder]:
    """A trades `BatchDecoder` whose registry holds the trades schema as id 1 (`encode_trade`)."""
    registry = DictRegistry()
    registry.register("t-value", schemas.schema_text("trades"))
    dec = BatchDecoder(data_type="trades", registry=registry)
    yield dec
    dec.close()
