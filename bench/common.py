"""Helpers the benchmark scripts share: free ports, percentiles, the catalog database, and
writing a day of rows as many small data files in one commit (the layout a consumer leaves)."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import psycopg
import pyarrow as pa

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of the samples."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def ensure_db(name: str) -> bool:
    """Create a Postgres database if missing; True when this call created it."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def append_as_small_files(table: Any, data: pa.Table, file_rows: int) -> None:
    """Append `data` cut into `file_rows`-row Parquet files, all in one fast-append commit."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    files = []
    for start in range(0, data.num_rows, file_rows):
        files.extend(_dataframe_to_data_files(table.metadata, data.slice(start, file_rows), table.io, uuid.uuid4()))
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)
