"""DuckDB connections with the `avro` and `iceberg` extensions loaded from site-packages.

ADR #001: nothing is downloaded at run time. The extensions come from the PyPI wheels
`duckdb-extension-avro` and `duckdb-extension-iceberg` (same version as DuckDB); the
connection has extension auto-install and auto-load off, and avro is loaded before
iceberg (iceberg reads Avro manifests through it). With an s3:// warehouse (`DuckDBConfig.s3`)
`httpfs` (wheel `duckdb-extension-httpfs`) is loaded too and the connection gets an S3 secret
(`catalog.engine.storage.S3Options` renders it).

Shared by the write path (the consumer decodes batches and reads last sequence numbers with
DuckDB) and the query engine (`queries.engine`, whose `EngineConfig` adds the query limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb


class ExtensionMissing(RuntimeError):
    """An extension wheel matching the installed DuckDB is not installed."""


class S3Secret(Protocol):
    """What the connection needs of the warehouse's S3 settings (`catalog.engine.storage.S3Options`)."""

    def duckdb_secret_sql(self) -> str: ...


@dataclass(frozen=True)
class DuckDBConfig:
    """`threads`/`memory_limit` None keep DuckDB's defaults."""

    threads: int | None = None
    memory_limit: str | None = None
    s3: S3Secret | None = None  # set for an s3:// warehouse: httpfs is loaded and a secret created


def extension_path(name: str) -> Path:
    """Where the `name` extension of this DuckDB version sits inside its PyPI wheel."""
    module = __import__(f"duckdb_extension_{name}")
    path = Path(module.__file__).resolve().parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise ExtensionMissing(f"{path} does not exist: install duckdb-extension-{name}=={duckdb.__version__} "
                               f"(the extension wheel must match duckdb {duckdb.__version__})")
    return path


def scan_sql(metadata_location: str, snapshot_id: int | None = None) -> str:
    """The `iceberg_scan(...)` table expression for a table's metadata file (quoted), pinned to a
    snapshot when one is given."""
    location = metadata_location.replace("'", "''")
    return f"iceberg_scan('{location}', snapshot_from_id={int(snapshot_id)})" if snapshot_id \
        else f"iceberg_scan('{location}')"


def connect(config: DuckDBConfig | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB database with avro + iceberg loaded (+ httpfs and an S3 secret when
    `config.s3` is set), UTC session time zone."""
    config = config or DuckDBConfig()
    settings: dict[str, object] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if config.threads:
        settings["threads"] = config.threads
    if config.memory_limit:
        settings["memory_limit"] = config.memory_limit
    conn = duckdb.connect(database=":memory:", config=settings)
    conn.execute(f"LOAD '{extension_path('avro')}'")
    conn.execute(f"LOAD '{extension_path('iceberg')}'")
    if config.s3 is not None:
        conn.execute(f"LOAD '{extension_path('httpfs')}'")
        conn.execute(config.s3.duckdb_secret_sql())
    conn.execute("SET TimeZone = 'UTC'")
    return conn
