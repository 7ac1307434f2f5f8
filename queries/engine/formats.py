"""Result encodings: JSON rows (decimals as strings, instants as ISO 8601 UTC), CSV,
Parquet and Arrow IPC stream for quants who pull large ranges."""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import math
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from k2core.errors import Unprocessable

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


class UnencodableResult(Unprocessable, ValueError):
    """A result column the asked-for format cannot carry (the API answers 422 naming it)."""

    code = "unencodable_result"

    def __init__(self, message: str, *, field: str | None = "format") -> None:
        super().__init__(message, field=field)


# DuckDB's ±infinity sentinels for TIMESTAMP (int64) and DATE (int32).
_INFINITE = {64: 2**63 - 1, 32: 2**31 - 1}


# Instants from year 1 to year 9999 (in microseconds since the epoch): the range in which Arrow's
# cast to text gives ISO 8601 with a four-digit year, so the fast path below applies.
_FIRST_US, _END_US = -62_135_596_800_000_000, 253_402_300_800_000_000
_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}


def _iso_fast(column: pa.ChunkedArray, zulu: bool, low: int | None, high: int | None) -> pa.ChunkedArray | None:
    """ISO 8601 text of a timestamp column via Arrow's cast to string (about 4× cheaper than
    `strftime`, which looks the time zone up value by value): the same text, "T" for the space and
    "Z" after instants. None when a value lies outside years 1–9999 (then `strftime` decides);
    `low`/`high`: the column's least and greatest value in its unit (None when all are null)."""
    per = _US_PER[column.type.unit]
    if low is not None and (low * per < _FIRST_US or high * per >= _END_US):
        return None
    naive = column.cast(pa.timestamp(column.type.unit))
    text = pc.utf8_replace_slice(pc.cast(naive, pa.string()), start=10, stop=11, replacement="T")
    return pc.binary_join_element_wise(text, "Z", "") if zulu else text


def _temporal_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dates and instants as ISO 8601 text (UTC with Z for instants with a zone), DuckDB's
    infinite values as "infinity"/"-infinity" (Python's datetime cannot hold them)."""
    kind = column.type
    bits = 32 if pa.types.is_date32(kind) else 64
    raw = pc.cast(column, pa.int32() if bits == 32 else pa.int64())
    bounds = pc.min_max(raw)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if pa.types.is_date(kind):
        text = pc.strftime(pc.cast(column, pa.timestamp("s")), format="%Y-%m-%d")
    else:
        unit = kind.unit
        if kind.tz is not None:
            utc = pc.cast(column, pa.timestamp(unit, tz="UTC"))
            text = _iso_fast(utc, True, low, high)
            if text is None:
                text = pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ")
        else:
            text = _iso_fast(column, False, low, high)
            if text is None:
                text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
    top = _INFINITE[bits]
    if low is None or (-top < low and high < top):
        return text  # no infinite value: nothing to replace
    return pc.if_else(pc.equal(raw, top), "infinity", pc.if_else(pc.equal(raw, -top), "-infinity", text))


def _nested(kind: pa.DataType) -> bool:
    return (pa.types.is_nested(kind) or pa.types.is_union(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind) or pa.types.is_interval(kind)
            or pa.types.is_dictionary(kind))


def _text_column(column: pa.ChunkedArray) -> pa.Array:
    """Any column as text, value by value (JSON for nested values, hex for bytes)."""
    try:
        values = column.to_pylist()
    except (OverflowError, ValueError) as exc:
        raise UnencodableResult(f"a {column.type} column holds values that cannot be converted ({exc}): cast it to "
                                "VARCHAR in the SQL") from None
    out = [None if v is None else v if isinstance(v, str) else json.dumps(json_value(v), separators=(",", ":"))
           for v in values]
    return pa.array(out, pa.string())


def portable(table: pa.Table, fmt: str) -> pa.Table:
    """The table with the columns `fmt` cannot carry turned into text (CSV: nested, binary,
    interval, union and infinite temporal values; Parquet: interval and union)."""
    columns, changed = [], False
    for column in table.columns:
        kind = column.type
        if fmt == "csv" and (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
            column, changed = _temporal_text(column), True
        elif fmt == "csv" and _nested(kind):
            column, changed = _text_column(column), True
        elif fmt == "parquet" and (pa.types.is_interval(kind) or pa.types.is_union(kind)):
            column, changed = _text_column(column), True
        columns.append(column)
    return pa.table(columns, names=table.column_names) if changed else table


def json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")  # never bare NaN in JSON
    if isinstance(value, Decimal):
        return str(value)  # never a float: money stays exact
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value.tzinfo else value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # lists, MAP entries and intervals (MonthDayNano) alike
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
            column = _temporal_text(pc.cast(column, pa.timestamp("us", tz="UTC")))
        elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            column = _temporal_text(column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _plain(column: pa.ChunkedArray) -> bool:
    kind = column.type
    if pa.types.is_floating(kind):  # plain only when every value is finite (JSON has no NaN/Infinity)
        return column.null_count == len(column) or bool(pc.all(pc.is_finite(column)).as_py())
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind) or pa.types.is_null(kind))


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return _ready_rows(json_ready(table))


def _ready_rows(ready: pa.Table) -> list[dict[str, Any]]:
    try:
        if all(_plain(column) for column in ready.columns):
            return ready.to_pylist()  # already JSON types: skip the per-value walk
        return [{k: json_value(v) for k, v in row.items()} for row in ready.to_pylist()]
    except OverflowError as exc:
        raise UnencodableResult(f"a column holds a value JSON cannot carry ({exc}): cast it to VARCHAR in the SQL") from None


def dumps(document: Any) -> bytes:
    """Compact JSON of a document of JSON types (as `rows` and `json_value` make them): orjson,
    about 7× cheaper than the standard library here; the standard library for what orjson refuses
    (integers beyond 64 bits, from HUGEINT columns). Both give the same JSON values in the same
    order; orjson writes non-ASCII characters as UTF-8 where the standard library wrote \\u escapes."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def encode(table: pa.Table, fmt: str, meta: dict[str, Any]) -> bytes:
    """The table in `fmt`; UnencodableResult when a column cannot be carried by it."""
    if fmt == "json":
        return encode_json(table, meta)
    table = portable(table, fmt)
    try:
        return _encode_file(table, fmt)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UnencodableResult(f"the result cannot be written as {fmt} ({exc}): cast the column to VARCHAR in the "
                                "SQL, or ask for format=arrow") from None


def encode_json(table: pa.Table, meta: dict[str, Any]) -> bytes:
    """`{"data": rows, "meta": meta}` as `dumps` writes it. Column by column (`json_rows_fast`)
    when every column and the meta can be written so: the same bytes, without a Python dict per
    row; else the general way (`rows`, then `dumps`)."""
    meta_value = json_value(meta)
    ready = json_ready(table)
    try:
        meta_json = orjson.dumps(meta_value)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: the standard library writes it all
        meta_json = None
    data = _fast_rows(ready) if meta_json is not None else None
    if data is None:
        return dumps({"data": _ready_rows(ready), "meta": meta_value})
    return b"".join((b'{"data":', *data, b',"meta":', meta_json, b"}"))


def json_rows_fast(table: pa.Table) -> bytes | None:
    """The JSON array of `rows(table)`, byte for byte as orjson writes it, built column-wise with
    Arrow; None when a column is not one this writer can write so (then use `rows`)."""
    pieces = _fast_rows(json_ready(table))
    return None if pieces is None else b"".join(pieces)


# orjson's escapes: `"` and `\` by a backslash, control characters as \b \t \n \f \r or \u00XX
# (taken from orjson itself); every other character as it is, in UTF-8.
_CONTROLS = {chr(c): orjson.dumps(chr(c))[1:-1].decode() for c in range(0x20)}
_NO_ESCAPE = bytes(b for b in range(256) if b >= 0x20 and b not in b'"\\')  # deleted: what is left needs escaping
_NO_CONTROL = bytes(range(0x20, 256))


def _values(chunk: pa.Array) -> memoryview:
    """The UTF-8 bytes of a string array's values, end to end (int32 offsets)."""
    data = chunk.buffers()[2]
    if data is None:
        return memoryview(b"")
    offsets = memoryview(chunk.buffers()[1]).cast("i")  # in the machine's byte order, as Arrow keeps it
    return memoryview(data)[offsets[chunk.offset]:offsets[chunk.offset + len(chunk)]]


def _holds(column: pa.ChunkedArray, keep: bytes) -> bool:
    """Whether a value of the column holds a byte not in `keep` (null slots hold no bytes)."""
    return any(bytes(_values(chunk)).translate(None, keep) for chunk in column.chunks)


def _string_json(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, bool]:
    """The column's values JSON-escaped as orjson escapes them, and whether they still need
    their quotes (False: quoted already, null as null)."""
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())  # one offset type for every part of the row
    column.validate(full=True)  # ArrowInvalid on bytes that are not UTF-8 (the general path then decides)
    text = column
    if _holds(column, _NO_ESCAPE):
        text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        if _holds(column, _NO_CONTROL):
            for char, escaped in _CONTROLS.items():
                text = pc.replace_substring(text, char, escaped)
    if not column.null_count:
        return text, True
    return pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null"), False


def _column_json(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray | str, bool] | None:
    """Each value's JSON text (one str when every value is null) and whether it needs quotes
    around it; None when this column is not one `_fast_rows` writes."""
    kind, nulls = column.type, column.null_count
    if nulls == len(column):
        return "null", False
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _string_json(column)
    if pa.types.is_integer(kind):
        text = column.cast(pa.string())
    elif pa.types.is_boolean(kind):
        text = pc.if_else(column, "true", "false")
    elif (pa.types.is_float32(kind) or pa.types.is_float64(kind)) and pc.all(pc.is_finite(column)).as_py():
        # orjson's own float texts (Arrow's differ: "1" for 1.0); a float's text holds no comma
        text = pa.chunked_array([pa.array(orjson.dumps(column.to_pylist())[1:-1].decode().split(","), pa.string())])
    else:
        return None
    return (pc.fill_null(text, "null") if nulls else text), False


@functools.lru_cache(maxsize=4096)
def _literal(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.string())


_EMPTY = pa.scalar("", pa.string())


def _fast_rows(ready: pa.Table) -> list[bytes | memoryview] | None:
    """`json_rows_fast` of a table `json_ready` has already made, in pieces to join."""
    names = ready.column_names
    if not names or len(set(names)) != len(names):  # duplicate names: a row dict keeps the last value
        return None
    if ready.num_rows == 0:
        return [b"[]"]
    try:
        keys = [orjson.dumps(name).decode() for name in names]
    except orjson.JSONEncodeError:
        return None
    parts: list[Any] = []  # literal texts and columns, alternately: joined row by row
    literal = "{"
    try:
        for i, column in enumerate(ready.columns):
            literal += ("," if i else "") + keys[i] + ":"
            written = _column_json(column)
            if written is None:
                return None
            text, quote = written
            if isinstance(text, str):
                literal += text
                continue
            parts += [_literal(literal + ('"' if quote else "")), text]
            literal = '"' if quote else ""
        if not parts:  # every column null: the same row each time
            return [b"[", ",".join([literal + "}"] * ready.num_rows).encode(), b"]"]
        parts += [_literal(literal + "},"), _EMPTY]
        joined = pc.call_function("binary_join_element_wise", parts)
    except pa.ArrowException:  # bytes that are not UTF-8, a result too large for one string array
        return None
    pieces = [_values(chunk) for chunk in (joined.chunks if isinstance(joined, pa.ChunkedArray) else [joined])]
    pieces = [piece for piece in pieces if len(piece)]
    pieces[-1] = pieces[-1][:-1]  # without the last row's comma
    return [b"[", *pieces, b"]"]


def _encode_file(table: pa.Table, fmt: str) -> bytes:
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
