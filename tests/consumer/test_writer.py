"""The Iceberg writer's ADR #006 retries, with a wrapped table as the fault injection."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from prometheus_client import REGISTRY
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

from catalog.engine.iceberg import arrow_schema, load_catalog
from catalog.engine.writer import IcebergWriter, RetryPolicy, offsets_properties, recorded_offsets


class FailingTable:
    """Delegates to a real pyiceberg Table; its first `failures` appends raise `error` instead."""

    def __init__(self, table, error: Exception, failures: int) -> None:
        self._table = table
        self.error = error
        self.failures = failures
        self.appends = 0
        self.refreshes = 0

    def append(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self.appends += 1
        if self.appends <= self.failures:
            raise self.error
        return self._table.append(*args, **kwargs)

    def refresh(self):  # noqa: ANN201
        self.refreshes += 1
        return self._table.refresh()

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._table, name)


def _batch(n: int = 3) -> pa.Table:
    now = datetime(2026, 3, 10, 1, tzinfo=UTC)
    rows = [{"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
             "price": Decimal("1.000001"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
             "ingestion_timestamp": now, "sequence_number": i, "source_partition": 0, "source_offset": i}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=arrow_schema("trades"))


FAST = RetryPolicy(first_delay=0.01, max_delay=0.05)


def _attempts(table_name: str) -> float:
    return REGISTRY.get_sample_value("k2_iceberg_write_attempts_total", {"table": table_name, "operation": "append"}) or 0


def test_transient_commit_failure_succeeds_on_retry(iceberg_tables, catalog_config, unique, caplog) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], CommitFailedException("another writer committed first"), 1)
    name = f"trades-{unique}"
    before = _attempts(name)
    result = IcebergWriter(wrapped, table_name=name, policy=FAST).append(
        _batch(), properties=offsets_properties("g", {("t", 0): 3}))
    assert result.attempts == 2 and wrapped.refreshes == 1
    retries = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "iceberg_write_retry"]
    assert len(retries) == 1
    assert retries[0]["attempt"] == 1 and retries[0]["error_type"] == "CommitFailedException"
    assert retries[0]["delay_seconds"] == 0.01
    assert _attempts(name) - before == 2
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert table.scan().to_arrow().num_rows == 3
    assert recorded_offsets(table, "g") == {("t", 0): 3}


def test_connection_error_retried_three_times_then_raised(iceberg_tables, unique) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], ConnectionError("catalog unreachable"), 10)
    with pytest.raises(ConnectionError):
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=FAST).append(_batch())
    assert wrapped.appends == 4  # first try + 3 retries (ADR #006)


@pytest.mark.parametrize("error", [NoSuchTableError("market_data.nope"), ValueError("schema mismatch")])
def test_permanent_failure_fails_at_once(iceberg_tables, unique, error) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], error, 1)
    with pytest.raises(type(error)):
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=FAST).append(_batch())
    assert wrapped.appends == 1


def test_schema_mismatch_from_the_real_table_is_not_retried(iceberg_tables, unique) -> None:
    wrapped = FailingTable(iceberg_tables["trades"], RuntimeError("unused"), 0)
    bad = pa.table({"symbol": ["BHP"], "volume": ["not a number"]})
    with pytest.raises(ValueError):
        IcebergWriter(wrapped, table_name=f"trades-{unique}", policy=FAST).append(bad)
    assert wrapped.appends == 1
