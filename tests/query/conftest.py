"""Fixtures of the query tests: trades written straight into a per-test Iceberg namespace
with pyiceberg (no dependency on the consumer), an engine over it, and Django settings
pointing the API at it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import pyarrow as pa
import pytest

from catalog.engine.iceberg import arrow_schema, load_catalog
from queries.engine.connection import EngineConfig
from queries.engine.generate import generate_trades
from queries.engine.market import MarketQueries
from queries.engine.source import IcebergSource

UTC = dt.UTC


def trade_rows(rows: Iterable[dict], *, offset_base: int = 0) -> pa.Table:
    """An Arrow table of trades from small dicts: symbol, ts, price (str), volume, seq."""
    out = []
    for i, r in enumerate(rows):
        out.append({
            "symbol": r["symbol"], "company_id": 1, "exchange": "ASX", "exchange_timestamp": r["ts"],
            "price": Decimal(r["price"]), "volume": r["volume"], "qualifiers": 0, "venue": "X", "buyer_id": None,
            "ingestion_timestamp": r["ts"], "sequence_number": r.get("seq"), "source_partition": r.get("partition", 0),
            "source_offset": r.get("offset", offset_base + i),
        })
    return pa.Table.from_pylist(out, schema=arrow_schema("trades"))


@pytest.fixture
def catalog(catalog_config, iceberg_tables):  # type: ignore[no-untyped-def]
    return load_catalog(catalog_config)


@pytest.fixture
def trades_table(iceberg_tables):  # type: ignore[no-untyped-def]
    return iceberg_tables["trades"]


@pytest.fixture
def engine(catalog, catalog_config) -> MarketQueries:  # type: ignore[no-untyped-def]
    return MarketQueries(IcebergSource(catalog, catalog_config.namespace), EngineConfig(threads=2))


@pytest.fixture
def generated(trades_table) -> pa.Table:  # type: ignore[no-untyped-def]
    """3 trading days × 4 symbols × 300 trades, one append per day; returns all rows."""
    parts = list(generate_trades(start=dt.date(2024, 3, 11), days=3, symbols=("BHP", "CBA", "CSL", "NAB"),
                                 rows_per_symbol_day=300, seed=11, schema=arrow_schema("trades")))
    for part in parts:
        trades_table.append(part)
    return pa.concat_tables(parts)


@pytest.fixture
def query_settings(settings, catalog_config, iceberg_tables):  # type: ignore[no-untyped-def]
    """Django settings whose catalog and namespace are this test's (no Kafka needed)."""
    settings.K2 = dataclasses.replace(settings.K2, iceberg_catalog_uri=catalog_config.uri,
                                      warehouse=catalog_config.warehouse, s3=catalog_config.s3)
    settings.K2 = dataclasses.replace(settings.K2, iceberg_namespace=catalog_config.namespace)
    from catalog import selectors

    selectors.get_catalog.cache_clear()
    yield settings
    selectors.get_catalog.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_api_caches():  # type: ignore[no-untyped-def]
    """A test's rolled-back rows (keys, exchanges) send no post_save signal: start each test with the
    API's in-process caches (queries.caches) empty, as a new process would."""
    from queries import caches

    caches.rows.clear()
    caches.exchanges.clear()
    yield
    caches.rows.clear()
    caches.exchanges.clear()
