"""Decoding a batch of Confluent wire-format Avro messages into one Arrow table.

Why not fastavro per message: one `schemaless_reader` call per row costs ~7 µs of Python
(about 100-150k records/s on its own), which would cap the whole consumer. Instead, the
bodies sharing a schema id are wrapped into one Avro Object Container block (header with
the writer schema, record count, byte size, the bodies back to back, sync marker) and read
by DuckDB's `read_avro` in one call, straight into typed Arrow columns. Avro decimals come
out of DuckDB as raw big-endian bytes; they are turned into Decimal128 in SQL (no per-row
Python) and range-checked against decimal(18,6).

Anything that cannot go into the table is reported as a `Poison` (the consumer sends it to
the DLQ) instead of failing the batch: not the wire format, an unknown schema id, a writer
schema without the table's required columns, a body the schema cannot read, a value the
table cannot hold. When the fast path fails for a group, that group is decoded again one
message at a time with fastavro so the bad message is isolated and the good ones still flow.

Plain Python, no Django import.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog.engine.datatypes import LINEAGE_COLUMNS, SPECS, spec
from catalog.engine.registry import SchemaNotFound
from ingestion.engine.varint import zigzag
from k2core.duckdb_conn import DuckDBConfig, connect

LINEAGE = LINEAGE_COLUMNS  # filled from the Kafka message, not from the Avro record
INDEX_COLUMN = "_k2_index"
DECIMAL_COLUMNS = {name: s.decimal_columns for name, s in SPECS.items()}
_MAX_UNSCALED = 10**18  # decimal(18, 6) holds |unscaled| < 10^18


class SchemaSource(Protocol):
    def get_schema(self, schema_id: int) -> str:
        """The writer schema text for a global id; SchemaNotFound when unknown."""


from ingestion.engine.reasons import POISON_REASONS  # noqa: E402,F401 - re-exported: the reasons Poison takes


@dataclass(frozen=True)
class Poison:
    index: int
    reason: str  # one of POISON_REASONS
    error: str


@dataclass
class DecodedBatch:
    table: pa.Table  # the table's Arrow schema plus INDEX_COLUMN (position in the input list)
    poison: list[Poison] = field(default_factory=list)
    fast_rows: int = 0
    slow_rows: int = 0


_SYNC = b"K2-consumer-sync"  # 16 bytes; any value works inside a file we write ourselves


def container_block(schema_text: str, data: bytes, count: int) -> bytes:
    """An Avro Object Container file holding `count` record bodies (`data`, back to back) as one block."""
    meta = {b"avro.schema": schema_text.encode(), b"avro.codec": b"null"}
    head = bytearray(b"Obj\x01")
    head += zigzag(len(meta))
    for key, value in meta.items():
        head += zigzag(len(key)) + key + zigzag(len(value)) + value
    head += zigzag(0) + _SYNC
    return b"".join((bytes(head), zigzag(count), zigzag(len(data)), data, _SYNC))


def uniform_bodies(values: list[bytes | None]) -> tuple[int, bytes] | None:
    """(schema id, the bodies back to back) when every value is Confluent wire format with the
    same schema id, the usual case, checked and stripped with numpy over the joined values
    instead of a Python step per message; None otherwise (the caller then groups one by one)."""
    if not values:
        return None
    try:
        joined = b"".join(values)  # type: ignore[arg-type]
    except TypeError:  # a None value (tombstone)
        return None
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))  # type: ignore[arg-type]
    if int(lengths.min()) < 5 or joined[0] != 0:
        return None
    starts = np.zeros(len(values), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    buffer = np.frombuffer(joined, dtype=np.uint8)
    header_positions = (starts[:, None] + np.arange(5)).ravel()
    if not np.array_equal(buffer[header_positions].reshape(-1, 5),
                          np.broadcast_to(buffer[:5], (len(values), 5))):
        return None
    keep = np.ones(len(buffer), dtype=bool)
    keep[header_positions] = False
    return int.from_bytes(joined[1:5], "big"), buffer[keep].tobytes()


def _repeat(value: str | None, n: int) -> pa.Array:
    """`value` n times as a string column, without a Python list of n items."""
    if value is None:
        return pa.nulls(n, pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value], pa.string())).dictionary_decode()


@dataclass(frozen=True)
class _Where:
    """Where each message of a batch came from in Kafka: the lineage columns' values."""

    partitions: list[int]
    offsets: list[int]
    topics: Sequence[str] | str | None
    topic_ids: Mapping[str, str]

    def columns(self, idx: list[int]) -> dict[str, pa.Array]:
        """The lineage columns of the messages at `idx` (ascending positions)."""
        everything = len(idx) == len(self.offsets)  # idx ascends, so this means idx == range(len(offsets))

        def pick(values: Sequence[Any]) -> Sequence[Any]:
            return values if everything else [values[i] for i in idx]

        n = len(idx)
        if self.topics is None or isinstance(self.topics, str):
            topic = _repeat(self.topics, n)
            topic_id = _repeat(self.topic_ids.get(self.topics) if self.topics else None, n)
        else:
            encoded = pa.array(pick(self.topics), pa.string()).dictionary_encode()
            topic = encoded.dictionary_decode()
            ids = pa.array([self.topic_ids.get(t) for t in encoded.dictionary.to_pylist()], pa.string())
            topic_id = ids.take(encoded.indices)
        return {"source_partition": pa.array(pick(self.partitions), pa.int32()),
                "source_offset": pa.array(pick(self.offsets), pa.int64()),
                "source_topic": topic, "source_topic_id": topic_id}

    def row(self, i: int) -> dict[str, Any]:
        topic = self.topics if self.topics is None or isinstance(self.topics, str) else self.topics[i]
        return {"source_partition": self.partitions[i], "source_offset": self.offsets[i], "source_topic": topic,
                "source_topic_id": self.topic_ids.get(topic) if topic is not None else None}


class _ShortReadTracker(io.BytesIO):
    """A body for fastavro that remembers the first read the body could not satisfy
    (position, bytes wanted, bytes there): a truncated record, said as such."""

    short: tuple[int, int, int] | None = None

    def read(self, size: int | None = -1) -> bytes:
        at = self.tell()
        data = super().read(size)
        if size is not None and size > 0 and len(data) < size and self.short is None:
            self.short = (at, size, len(data))
        return data


def avro_decimals(raw: pa.Array, type_: pa.DataType) -> pa.Array:
    """Avro decimal values (big-endian two's complement bytes, as read_avro returns them) as a
    decimal128 array of `type_` (its scale is the writer's: the schema check guarantees it), in
    a few numpy passes instead of per-row SQL string work (hex, casts: a third of the decode).
    Null where the value is longer than 8 bytes or its unscaled value reaches 10^18 (beyond
    decimal(18, s)): the caller makes those rows poison."""
    if raw.type != pa.binary():
        raw = raw.cast(pa.binary())
    n = len(raw)
    bufs = raw.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=raw.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and n else np.zeros(1, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets)
    fits = lengths <= 8
    width = np.where(fits, lengths, 0)
    value = np.zeros(n, dtype=np.uint64)
    for j in range(int(width.max()) if n else 0):
        has = width > j
        value[has] = (value[has] << np.uint64(8)) | data[starts[has] + j].astype(np.uint64)
    signed = value.view(np.int64)  # right as is for 8 bytes and for non-negative values
    negative = (width > 0) & (width < 8)
    negative[negative] = data[starts[negative]] >= 0x80
    signed[negative] -= np.left_shift(np.int64(1), (8 * width[negative]).astype(np.int64))
    valid = fits & (signed > -_MAX_UNSCALED) & (signed < _MAX_UNSCALED)  # not abs(): -2**63 has none
    if raw.null_count:
        valid &= raw.is_valid().to_numpy(zero_copy_only=False)
    words = np.empty((n, 2), dtype=np.int64)  # decimal128: little-endian low word, then the sign
    words[:, 0] = signed
    words[:, 1] = signed >> 63
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(type_, n, [bitmap, pa.py_buffer(words)])


class BatchDecoder:
    """Decodes batches for one data type (one decoder per consumer; not thread-safe)."""

    def __init__(self, *, data_type: str, registry: SchemaSource, scratch_dir: str | None = None,
                 con: duckdb.DuckDBPyConnection | None = None) -> None:
        """`con`: a DuckDB connection from `k2core.duckdb_conn.connect` to share (the
        consumer also reads the table through it); by default the decoder opens its own."""
        self.data_type = data_type
        self.registry = registry
        self.spec = spec(data_type)
        self.arrow_schema = self.spec.arrow_schema()
        self.decimals = self.spec.decimal_columns
        self._schemas: dict[int, tuple[str, Any, str | None]] = {}  # id -> (text, parsed, problem)
        self._scratch = Path(scratch_dir or ("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()))
        self._counter = itertools.count()
        self._owns_con = con is None
        self._con = con if con is not None else connect(DuckDBConfig(threads=1))
        # Each batch is a new scratch file: DuckDB's external file cache would keep every one of them
        # (measured: RSS +0.85 MB per 20,000-message batch, without bound).
        self._con.execute("SET enable_external_file_cache=false")

    def close(self) -> None:
        if self._owns_con:
            self._con.close()

    # --- schema lookups -------------------------------------------------------------------
    def _schema(self, schema_id: int) -> tuple[str, Any, str | None]:
        """(text, parsed, problem); SchemaNotFound propagates. Other registry errors raise (not poison)."""
        cached = self._schemas.get(schema_id)
        if cached is None:
            text = self.registry.get_schema(schema_id)
            parsed = fastavro.parse_schema(json.loads(text))
            cached = (text, parsed, self._compatibility_problem(json.loads(text)))
            self._schemas[schema_id] = cached
        return cached

    def _compatibility_problem(self, schema: Any) -> str | None:
        """Why records of this writer schema cannot fill the table, or None."""
        if not isinstance(schema, dict) or schema.get("type") != "record":
            return "writer schema is not an Avro record"
        names = {f["name"] for f in schema.get("fields", [])}
        missing = [f.name for f in self.arrow_schema if f.name not in LINEAGE and not f.nullable and f.name not in names]
        if missing:
            return f"writer schema {schema.get('name')!r} lacks required column(s) {', '.join(missing)}"
        return None

    # --- public ---------------------------------------------------------------------------
    def decode(self, values: list[bytes | None], partitions: list[int], offsets: list[int], *,
               topics: Sequence[str] | str | None = None,
               topic_ids: Mapping[str, str] | None = None) -> DecodedBatch:
        """Decode `values` (Kafka message values) into the table's Arrow schema. Lineage per
        message: `partitions`, `offsets`, and `topics` (one per message, or one name for all);
        `topic_ids` maps a topic name to its Kafka topic id (a broker without ids: leave it out,
        `source_topic_id` is then NULL). Without `topics`, `source_topic` is NULL as well."""
        if not isinstance(topics, str | None) and len(topics) != len(values):
            raise ValueError(f"{len(topics)} topics for {len(values)} messages: give one per message or one for all")
        where = _Where(partitions, offsets, topics, topic_ids or {})
        poison: list[Poison] = []
        groups: dict[int, list[int]] = {}
        joined: dict[int, bytes] = {}  # schema id -> bodies back to back, when already built
        uniform = uniform_bodies(values)
        if uniform is not None:
            groups[uniform[0]] = list(range(len(values)))
            joined[uniform[0]] = uniform[1]
        by_header: dict[bytes, list[int]] = {}
        for i, value in enumerate(values if uniform is None else ()):  # a 5-byte slice and a dict hit
            try:
                by_header.setdefault(value[:5], []).append(i)  # type: ignore[index]
            except TypeError:  # a None value (tombstone)
                poison.append(Poison(i, "not_wire_format", "value is empty (null): not Confluent wire format"))
        for header, idx in by_header.items():
            if len(header) < 5 or header[0] != 0:
                poison.extend(Poison(i, "not_wire_format",
                                     f"value of {len(values[i] or b'')} bytes is not Confluent wire format "
                                     f"(magic byte 0 + 4-byte schema id)") for i in idx)
                continue
            groups.setdefault(int.from_bytes(header[1:5], "big"), []).extend(idx)

        tables: list[pa.Table] = []
        result = DecodedBatch(table=pa.table({}), poison=poison)
        for schema_id, idx in groups.items():
            try:
                text, parsed, problem = self._schema(schema_id)
            except SchemaNotFound as exc:
                poison.extend(Poison(i, "unknown_schema", str(exc)) for i in idx)
                continue
            if problem:
                poison.extend(Poison(i, "schema_mismatch", f"schema id {schema_id}: {problem}") for i in idx)
                continue
            data = joined.get(schema_id)
            if data is None:
                data = b"".join([values[i][5:] for i in idx])  # type: ignore[index]
            try:
                table, bad = self._fast(text, data, idx, where, values[idx[0]][5:])  # type: ignore[index]
                result.fast_rows += table.num_rows
            except (duckdb.Error, pa.ArrowException, ValueError):
                bodies = [values[i][5:] for i in idx]  # type: ignore[index]
                table, bad = self._slow(parsed, bodies, idx, where)
                result.slow_rows += table.num_rows
            poison.extend(bad)
            tables.append(table)
        full = self.arrow_schema.append(pa.field(INDEX_COLUMN, pa.int32(), nullable=False))
        result.table = pa.concat_tables(tables) if tables else full.empty_table()
        return result

    # --- fast path: one container block per schema id, read by DuckDB --------------------
    def _fast(self, text: str, data: bytes, idx: list[int], where: _Where, first_body: bytes
              ) -> tuple[pa.Table, list[Poison]]:
        """`first_body`: the group's first body, written once more after the others as a sentinel
        record. DuckDB's reader ignores bytes left over after the last record of a block, so a
        last body with trailing bytes would otherwise pass as good (elsewhere in the block it
        shifts the records after it and the group fails): when the bodies do not end exactly at
        record boundaries, the sentinel is read from the wrong place and differs from the first
        row (or the count differs), and the group goes to the per-message path, which names the
        bad body."""
        writer_fields = {f["name"] for f in json.loads(text)["fields"]}
        path = self._scratch / f"k2-decode-{os.getpid()}-{next(self._counter)}.avro"
        path.write_bytes(container_block(text, data + first_body, len(idx) + 1))
        try:
            selects = []
            for f in self.arrow_schema:
                if f.name in LINEAGE:
                    continue
                if f.name not in writer_fields:
                    selects.append(f'NULL AS "{f.name}"')
                else:  # decimals as their raw Avro bytes: `avro_decimals` converts them in numpy
                    selects.append(f'"{f.name}"')
            sql = f"SELECT {', '.join(selects)} FROM read_avro('{path}')"
            decoded = self._con.execute(sql).to_arrow_table()
        finally:
            path.unlink(missing_ok=True)
        if decoded.num_rows != len(idx) + 1:
            raise ValueError(f"container block decoded to {decoded.num_rows} rows, expected {len(idx) + 1}")
        if not decoded.slice(len(idx), 1).equals(decoded.slice(0, 1)):
            raise ValueError("the sentinel record after the last body decoded differently: the bodies do not end "
                             "at record boundaries")
        return self._to_table(decoded.slice(0, len(idx)), idx, where)

    def _to_table(self, decoded: pa.Table, idx: list[int], where: _Where) -> tuple[pa.Table, list[Poison]]:
        columns: list[pa.Array] = []
        bad_mask = None
        lineage = where.columns(idx)
        for f in self.arrow_schema:
            if f.name in lineage:
                columns.append(lineage[f.name])
                continue
            col = decoded.column(f.name).combine_chunks()
            if f.name in self.decimals:
                col = avro_decimals(col, f.type)
                nulls = col.is_null()
                bad_mask = nulls if bad_mask is None else pc.or_(bad_mask, nulls)
            else:
                col = pc.cast(col, f.type) if col.type != f.type else col
                if not f.nullable and col.null_count:
                    nulls = col.is_null()
                    bad_mask = nulls if bad_mask is None else pc.or_(bad_mask, nulls)
            columns.append(col)
        columns.append(pa.array(idx, pa.int32()))
        names = [*self.arrow_schema.names, INDEX_COLUMN]
        table = pa.Table.from_arrays(columns, names=names)
        poison: list[Poison] = []
        if bad_mask is not None and pc.any(bad_mask).as_py():
            bad_rows = table.filter(bad_mask)
            for i in bad_rows.column(INDEX_COLUMN).to_pylist():
                poison.append(Poison(i, "value_out_of_range",
                                     "a required value is missing or a decimal exceeds decimal(18,6)"))
            table = table.filter(pc.invert(bad_mask))
        schema = self.arrow_schema.append(pa.field(INDEX_COLUMN, pa.int32(), nullable=False))
        return table.cast(schema), poison

    # --- slow path: one message at a time, isolating the bad ones ------------------------
    def _slow(self, parsed: Any, bodies: list[bytes], idx: list[int], where: _Where) -> tuple[pa.Table, list[Poison]]:
        schema = self.arrow_schema.append(pa.field(INDEX_COLUMN, pa.int32(), nullable=False))
        rows: list[dict[str, Any]] = []
        poison: list[Poison] = []
        for body, i in zip(bodies, idx, strict=True):
            buf = _ShortReadTracker(body)
            try:
                record = fastavro.schemaless_reader(buf, parsed, None)
                if buf.short is None and buf.tell() != len(body):
                    raise ValueError(f"{len(body) - buf.tell()} trailing bytes after the record")
            except Exception as exc:  # noqa: BLE001 - any reader error means this body is unreadable
                if buf.short is None:
                    poison.append(Poison(i, "undecodable", f"Avro body cannot be read with its schema: {exc}"))
                    continue
            if buf.short is not None:  # the body ends inside a value (also when the reader did not notice)
                at, wanted, got = buf.short
                poison.append(Poison(i, "undecodable",
                                     f"truncated record: expected {wanted} bytes at byte {at} of the Avro body, "
                                     f"found {got} (the body is {len(body)} bytes; cut short)"))
                continue
            row = {name: record.get(name) for name in self.arrow_schema.names}
            row.update(where.row(i))
            row[INDEX_COLUMN] = i
            try:
                pa.Table.from_pylist([row], schema=schema)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                poison.append(Poison(i, "value_out_of_range", f"a value does not fit the table: {exc}"))
                continue
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema), poison
