"""Result encodings: JSON rows (decimals as strings, instants as ISO 8601 UTC), CSV,
Parquet and Arrow IPC stream for quants who pull large ranges."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = {
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


def negotiate(explicit: str | None, accept: str | None) -> str | None:
    """The format asked for by `format=` or else the Accept header; None when unknown."""
    if explicit:
        return explicit.lower() if explicit.lower() in FORMATS else None
    for part in (accept or "").split(","):
        mime = part.split(";")[0].strip().lower()
        for name, known in FORMATS.items():
            if mime == known:
                return name
    return "json"


def json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # never a float: money stays exact
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value.tzinfo else value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def json_ready(table: pa.Table) -> pa.Table:
    """Decimals to exact strings and instants to ISO 8601 UTC strings, column by column
    (vectorised: much cheaper than converting value by value in Python)."""
    columns = []
    for column in table.columns:
        kind = column.type
        if pa.types.is_decimal(kind):
            column = pc.cast(column, pa.string())
        elif pa.types.is_timestamp(kind) and kind.tz is not None:
            column = pc.strftime(pc.cast(column, pa.timestamp("us", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _plain(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind))


def rows(table: pa.Table) -> list[dict[str, Any]]:
    ready = json_ready(table)
    if all(_plain(field.type) for field in ready.schema):
        return ready.to_pylist()  # already JSON types: skip the per-value walk
    return [{k: json_value(v) for k, v in row.items()} for row in ready.to_pylist()]


def encode(table: pa.Table, fmt: str, meta: dict[str, Any]) -> bytes:
    if fmt == "json":
        return json.dumps({"data": rows(table), "meta": json_value(meta)}, separators=(",", ":")).encode()
    sink = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, sink)
    elif fmt == "parquet":
        pq.write_table(table, sink, compression="zstd")
    elif fmt == "arrow":
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return sink.getvalue()
