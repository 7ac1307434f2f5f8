"""Avro BACKWARD compatibility: can a reader with the new schema read data written with the old?

Follows the Avro specification's schema-resolution rules (what Confluent Schema Registry's
checker applies): a reader field missing from the writer needs a default; a field the
reader drops is simply skipped (so removing a field is BACKWARD compatible); types must
match or be a permitted promotion (int→long→float→double, string↔bytes); every branch of a
writer union must be readable; enums may only lose symbols if the reader has a default.
The answer is None or the first problem, phrased like Confluent's messages.
"""

from __future__ import annotations

import json
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


class _Names:
    """Named types (records, enums, fixed) seen while walking one schema, by full name."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def collect(self, schema: Any, namespace: str = "") -> None:
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                ns = schema.get("namespace", namespace)
                name = schema["name"]
                full = name if "." in name else (f"{ns}.{name}" if ns else name)
                self.types[full] = schema
                self.types.setdefault(name, schema)
                for field in schema.get("fields", []):
                    self.collect(field["type"], ns)
            elif kind == "array":
                self.collect(schema["items"], namespace)
            elif kind == "map":
                self.collect(schema["values"], namespace)
            elif isinstance(kind, dict | list):
                self.collect(kind, namespace)

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return self.types.get(schema, schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] not in (
                "record", "error", "enum", "fixed", "array", "map") and schema["type"] not in PRIMITIVES:
            return self.types.get(schema["type"], schema)
        return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    kind = schema.get("type")
    if isinstance(kind, dict | list):
        return _kind(kind)
    return "record" if kind == "error" else kind


def _plain(schema: Any) -> Any:
    """`{"type": "long", "logicalType": …}` → "long"; nested `{"type": {...}}` unwrapped."""
    if isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] in PRIMITIVES:
        return schema["type"]
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        return schema["type"]
    return schema


def _describe(schema: Any) -> str:
    return json.dumps(schema, separators=(",", ":"))[:120]


def _check(reader: Any, writer: Any, rn: _Names, wn: _Names, path: str) -> str | None:
    reader, writer = _plain(rn.resolve(reader)), _plain(wn.resolve(writer))
    rk, wk = _kind(reader), _kind(writer)
    if wk == "union":
        for branch in writer:
            problem = _check(reader, branch, rn, wn, path)
            if problem:
                return problem
        return None
    if rk == "union":
        if any(_check(branch, writer, rn, wn, path) is None for branch in reader):
            return None
        return f"TYPE_MISMATCH at {path}: the reader's union {_describe(reader)} has no branch that reads the writer's {_describe(writer)}"
    if wk in PRIMITIVES or rk in PRIMITIVES:
        if rk in PROMOTIONS.get(wk, {wk}):
            return None
        return f"TYPE_MISMATCH at {path}: reader type {rk} cannot read writer type {wk}"
    if rk != wk:
        return f"TYPE_MISMATCH at {path}: reader type {rk} cannot read writer type {wk}"
    if rk == "record":
        if reader["name"].split(".")[-1] != writer["name"].split(".")[-1] and writer["name"] not in reader.get("aliases", []):
            return f"NAME_MISMATCH at {path}: reader record {reader['name']} cannot read writer record {writer['name']}"
        writer_fields = {f["name"]: f for f in writer.get("fields", [])}
        for field in reader.get("fields", []):
            source = writer_fields.get(field["name"]) or next(
                (writer_fields[a] for a in field.get("aliases", []) if a in writer_fields), None)
            where = f"{path}/{field['name']}"
            if source is None:
                if "default" not in field:
                    return (f"READER_FIELD_MISSING_DEFAULT_VALUE at {where}: field {field['name']!r} is new in this version "
                            f"and has no default, so data written with the previous version cannot be read")
                continue
            problem = _check(field["type"], source["type"], rn, wn, where)
            if problem:
                return problem
        return None
    if rk == "enum":
        missing = [s for s in writer.get("symbols", []) if s not in reader.get("symbols", [])]
        if missing and "default" not in reader:
            return f"MISSING_ENUM_SYMBOLS at {path}: the reader's enum lacks {', '.join(missing)}"
        return None
    if rk == "fixed":
        if reader.get("size") != writer.get("size"):
            return f"FIXED_SIZE_MISMATCH at {path}: reader size {reader.get('size')}, writer size {writer.get('size')}"
        return None
    if rk == "array":
        return _check(reader["items"], writer["items"], rn, wn, f"{path}/items")
    if rk == "map":
        return _check(reader["values"], writer["values"], rn, wn, f"{path}/values")
    return f"TYPE_MISMATCH at {path}: unsupported type {rk}"


def backward_problem(*, new: str, old: str) -> str | None:
    """None when `new` can read `old`'s data, else the reason (a field with no default, a type change)."""
    new_schema, old_schema = json.loads(new), json.loads(old)
    try:
        fastavro.parse_schema(new_schema)
        fastavro.parse_schema(old_schema)
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        return f"INVALID_SCHEMA: {exc}"
    rn, wn = _Names(), _Names()
    rn.collect(new_schema)
    wn.collect(old_schema)
    return _check(new_schema, old_schema, rn, wn, "")
