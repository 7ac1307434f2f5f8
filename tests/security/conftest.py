"""The security probes reuse the query tests' fixtures (a per-test Iceberg namespace with trades)."""

from tests.query.conftest import catalog, engine, generated, query_settings, trades_table  # noqa: F401
