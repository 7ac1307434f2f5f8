"""The query engine's configuration: the DuckDB connection settings (`k2core.duckdb_conn`, where
`connect` and `scan_sql` live) plus the limits of the query API."""

from __future__ import annotations

from dataclasses import dataclass

from k2core.duckdb_conn import DuckDBConfig

__all__ = ("EngineConfig",)


@dataclass(frozen=True)
class EngineConfig(DuckDBConfig):
    """Knobs of the query engine: the DuckDB connection's (threads, memory limit, S3) and the
    API's row and bar limits."""

    default_limit: int = 1000
    max_limit: int = 100_000
    max_bars: int = 100_000
    replay_batch_rows: int = 65_536
