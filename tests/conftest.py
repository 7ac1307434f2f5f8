"""Shared fixtures: real Postgres, Redis, an embedded Kafka broker per test worker, and a real
Iceberg SQL catalog with a namespace per test. Names are unique per test so `pytest -n 2` is safe."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog
from catalog.engine.storage import S3Options
from ingestion.engine import broker
from tests.faults import free_port

PG_ADMIN = os.environ.get("K2_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
ICEBERG_TEST_DB = "k2_test_iceberg"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Tansu broker on a free port, for this test worker's session."""
    var_dir = tmp_path_factory.mktemp("broker")
    port = free_port()
    status = broker.start(port=port, var_dir=var_dir)
    yield status.address
    broker.stop(port=port, var_dir=var_dir)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """K2's JSON log lines (k2core.logging, level DEBUG) written during the test, in a string stream (`log_records`)."""
    from k2core.logging import configure

    configure(json_output=True, level="DEBUG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)
    configure(json_output=True, level="INFO")


def log_records(stream: io.StringIO) -> list[dict]:
    """The JSON log records `json_log` caught."""
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


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


S3_TEST_KEY, S3_TEST_SECRET = "k2-test-key", "k2-test-secret"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible HTTP server for this test worker's session: moto's standalone server
    (`python -m moto.server`) on a free 127.0.0.1 port, in a subprocess."""
    port = free_port()
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start on port {port}; see {log.name}") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    try:  # its own process group: whatever the server started goes with it
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    log.close()


@pytest.fixture
def s3_bucket(s3_endpoint: str, unique: str) -> str:
    """A new bucket of this test's own on the S3 server."""
    import boto3

    name = f"k2-{unique}"
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_TEST_KEY, aws_secret_access_key=S3_TEST_SECRET,
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_catalog_config(iceberg_uri: str, s3_endpoint: str, s3_bucket: str, unique: str) -> CatalogConfig:
    """Like `catalog_config`, with the warehouse in an s3:// bucket of the test S3 server."""
    s3 = S3Options(endpoint=s3_endpoint, region="us-east-1", path_style=True, access_key_id=S3_TEST_KEY,
                   secret_access_key=S3_TEST_SECRET)
    return CatalogConfig(uri=iceberg_uri, warehouse=f"s3://{s3_bucket}/warehouse", namespace=f"t_{unique}", s3=s3)


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
    _dispose(catalog)


def _dispose(catalog: object) -> None:
    """Close a SQL catalog's pooled Postgres connections: a test's catalog is not used again, and
    a suite that leaves each one's pool open runs into Postgres's max_connections."""
    engine = getattr(catalog, "engine", None)
    if engine is not None:
        engine.dispose()


def _clear_cached_catalog() -> None:
    from catalog import selectors

    if selectors.get_catalog.cache_info().currsize:
        _dispose(selectors.get_catalog())
    selectors.get_catalog.cache_clear()


@pytest.fixture
def k2_settings(settings, kafka_bootstrap: str, catalog_config: CatalogConfig):  # type: ignore[no-untyped-def]
    """Django settings whose K2 config points at this worker's broker and this test's catalog."""
    settings.K2 = dataclasses.replace(
        settings.K2,
        kafka_bootstrap=kafka_bootstrap,
        kafka_session_timeout_ms=6000,
        iceberg_catalog_uri=catalog_config.uri,
        warehouse=catalog_config.warehouse,
        s3=catalog_config.s3,
    )
    _clear_cached_catalog()
    yield settings
    _clear_cached_catalog()
