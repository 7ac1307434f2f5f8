"""Avro BACKWARD compatibility: can a reader with the new schema read data written with the old?"""

from __future__ import annotations

import io
import json

import fastavro
from fastavro.schema import SchemaParseException


def backward_problem(*, new: str, old: str) -> str | None:
    """None when `new` can read `old`'s data, else the reason (a field with no default, a type change)."""
    new_schema, old_schema = json.loads(new), json.loads(old)
    if new_schema.get("type") == "record" and old_schema.get("type") == "record":
        old_fields = {f["name"]: f for f in old_schema.get("fields", [])}
        for field in new_schema.get("fields", []):
            if field["name"] not in old_fields and "default" not in field:
                return (f"READER_FIELD_MISSING_DEFAULT_VALUE: field {field['name']!r} is new in this version "
                        f"and has no default, so data written with the previous version cannot be read")
    # Let fastavro's schema resolution decide the rest (type promotions, unions, enums).
    try:
        parsed_old = fastavro.parse_schema(old_schema)
        parsed_new = fastavro.parse_schema(new_schema)
        buf = io.BytesIO()
        fastavro.writer(buf, parsed_old, [], codec="null")
        buf.seek(0)
        list(fastavro.reader(buf, reader_schema=parsed_new))
    except (SchemaParseException, fastavro.read.SchemaResolutionError) as exc:
        return f"TYPE_MISMATCH: {exc}"
    return None
