"""Issue 11, items 1-3: ambiguous catalog commits, a second consumer group on the same table, and a
catalog outage. Faults are injected at real boundaries (a TCP proxy in front of Postgres, a
throwaway Postgres cluster that is stopped and started); the table is read back with plain
DuckDB `iceberg_scan` (tests/faults.py), not with K2 code."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from catalog.engine.iceberg import CatalogConfig, arrow_schema, ensure_tables, load_catalog
from catalog.engine.writer import IcebergWriter, RetryPolicy, offsets_properties, recorded_offsets
from tests.faults import PG_TEST_URL, CutAfterCommitProxy, duckdb_offsets

FAST = RetryPolicy(first_delay=0.05, max_delay=0.2, budget_seconds=10)


def _batch(n: int, start: int = 0, partition: int = 0) -> pa.Table:
    now = datetime(2026, 3, 10, 1, tzinfo=UTC)
    rows = [{"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
             "price": Decimal("1.000001"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
             "ingestion_timestamp": now, "sequence_number": i, "source_partition": partition, "source_offset": i}
            for i in range(start, start + n)]
    return pa.Table.from_pylist(rows, schema=arrow_schema("trades"))


@pytest.fixture
def proxied_catalog(catalog_config: CatalogConfig):  # type: ignore[no-untyped-def]
    """The test's catalog reached through a proxy that can cut the reply to a COMMIT."""
    proxy = CutAfterCommitProxy(5432)
    config = dataclasses.replace(catalog_config, uri=catalog_config.uri.replace("127.0.0.1:5432",
                                                                                f"127.0.0.1:{proxy.port}"))
    catalog = load_catalog(config)
    tables = ensure_tables(catalog, config.namespace)
    yield proxy, catalog, tables, config
    proxy.close()
    real = load_catalog(catalog_config)
    for name in tables:
        real.drop_table(f"{config.namespace}.{name}")
    real.drop_namespace(config.namespace)


def test_ambiguous_commit_is_written_once(proxied_catalog) -> None:
    """The catalog connection drops after Postgres committed the append but before the reply:
    the writer finds its batch in the reloaded table (the recorded offsets cover it), reports
    success, and the rows are in the table exactly once."""
    proxy, _catalog, tables, config = proxied_catalog
    writer = IcebergWriter(tables["trades"], table_name="trades", policy=FAST)
    writer.append(_batch(100, 0), properties=offsets_properties("g", {("t", 0): 100}))
    proxy.arm()
    result = writer.append(_batch(1000, 100), properties=offsets_properties("g", {("t", 0): 1100}))
    assert proxy.cuts == 1  # the fault did happen
    assert result.rows == 1000 and result.already_committed
    rows = duckdb_offsets(PG_TEST_URL, config.namespace)
    duplicated = {k: n for k, n in Counter(rows).items() if n > 1}
    assert not duplicated, f"{sum(duplicated.values()) - len(duplicated)} rows written twice"
    assert sorted(o for _, o in rows) == list(range(1100))
    # and the writer goes on: the next batch lands on top
    writer.append(_batch(10, 1100), properties=offsets_properties("g", {("t", 0): 1110}))
    assert len(duckdb_offsets(PG_TEST_URL, config.namespace)) == 1110
    assert recorded_offsets(tables["trades"]) == {("t", 0): 1110}
