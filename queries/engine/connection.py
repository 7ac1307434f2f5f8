"""The query engine's configuration: the DuckDB connection settings (`k2core.duckdb_conn`) plus
the limits of the query API.

`connect`, `scan_sql`, `extension_path` and `ExtensionMissing` are re-exported from
`k2core.duckdb_conn` (compat shim: remove when consumer imports k2core).
"""

from __future__ import annotations

from dataclasses import dataclass

from k2core.duckdb_conn import DuckDBConfig, ExtensionMissing, connect, extension_path, scan_sql

__all__ = ("EngineConfig", "ExtensionMissing", "connect", "extension_path", "scan_sql")


@dataclass(frozen=True)
class EngineConfig(DuckDBConfig):
    """Knobs of the query engine: the DuckDB connection's (threads, memory limit, S3) and the
    API's row and bar limits."""

    default_limit: int = 1000
    max_limit: int = 100_000
    max_bars: int = 100_000
    replay_batch_rows: int = 65_536
