"""Confluent wire format: byte 0 = 0 (magic), bytes 1–4 = big-endian schema id, then the Avro body."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro

MAGIC = 0
HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    """The bytes are not a Confluent wire-format message."""


def encode(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()


def split(value: bytes | None) -> tuple[int, memoryview]:
    """(schema id, Avro body) of a message value; WireFormatError when it is not the wire format."""
    if value is None or len(value) < HEADER.size:
        raise WireFormatError(f"value of {0 if value is None else len(value)} bytes is shorter than the 5-byte header")
    magic, schema_id = HEADER.unpack_from(value)
    if magic != MAGIC:
        raise WireFormatError(f"magic byte is {magic}, expected 0")
    return schema_id, memoryview(value)[HEADER.size:]


def decode(parsed_schema: Any, value: bytes) -> dict[str, Any]:
    _, body = split(value)
    return fastavro.schemaless_reader(io.BytesIO(body), parsed_schema, None)
