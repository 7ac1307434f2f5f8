"""Shared fixtures: real Postgres, Redis, an embedded Kafka broker per test worker, and a real
Iceberg SQL catalog with a namespace per test. Names are unique per test so `pytest -n 2` is safe."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog
from ingestion.engine import broker

PG_ADMIN = os.environ.get("K2_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
ICEBERG_TEST_DB = "k2_test_iceberg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Tansu broker on a free port, for this test worker's session."""
    var_dir = tmp_path_factory.mktemp("broker")
    port = free_port()
    status = broker.start(port=port, var_dir=var_dir)
    yield status.address
    broker.stop(port=port, var_dir=var_dir)


@pytest.fixture
def unique() -> str:
    """A short unique token for topic, group and namespace names."""
    return uuid.uuid4().hex[:10]


def _ensure_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another test worker created it at the same moment


@pytest.fixture(scope="session")
def iceberg_uri() -> str:
    _ensure_database(ICEBERG_TEST_DB)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{ICEBERG_TEST_DB}"


@pytest.fixture(scope="session")
def warehouse_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="k2-warehouse-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def catalog_config(iceberg_uri: str, warehouse_dir: Path, unique: str) -> CatalogConfig:
    """A catalog config whose namespace is this test's own."""
    return CatalogConfig(uri=iceberg_uri, warehouse=warehouse_dir.as_uri(), namespace=f"t_{unique}")


@pytest.fixture
def iceberg_tables(catalog_config: CatalogConfig) -> Iterator[dict]:
    catalog = load_catalog(catalog_config)
    tables = ensure_tables(catalog, catalog_config.namespace)
    yield tables
    for data_type in tables:
        try:
            catalog.drop_table(f"{catalog_config.namespace}.{data_type}")
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
    try:
        catalog.drop_namespace(catalog_config.namespace)
    except Exception:  # noqa: BLE001
        pass


@pytest.fixture
def k2_settings(settings, kafka_bootstrap: str, catalog_config: CatalogConfig):  # type: ignore[no-untyped-def]
    """Django settings whose K2 config points at this worker's broker and this test's catalog."""
    settings.K2 = dataclasses.replace(
        settings.K2,
        kafka_bootstrap=kafka_bootstrap,
        kafka_session_timeout_ms=6000,
        iceberg_catalog_uri=catalog_config.uri,
        warehouse=catalog_config.warehouse,
    )
    from catalog import selectors

    selectors.get_catalog.cache_clear()
    yield settings
    selectors.get_catalog.cache_clear()
