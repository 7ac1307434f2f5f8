"""The embedded schema registry: subjects, versions and global ids in Postgres (ORM).

Implements `catalog.engine.registry.SchemaRegistry` in-process. Compatibility checks
(BACKWARD) are applied on register; the Confluent-compatible REST views call the same code.
"""

from __future__ import annotations

import hashlib
import json

from django.db import IntegrityError, transaction

from catalog.engine.registry import IncompatibleSchema, SchemaNotFound
from catalog.models import AvroSchema, SchemaSubject, SubjectVersion


def canonical(schema_text: str) -> str:
    """Canonical text: parsed and re-dumped without whitespace, so equal schemas share an id."""
    return json.dumps(json.loads(schema_text), separators=(",", ":"), sort_keys=False)


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddedRegistry:
    def register(self, subject: str, schema_text: str) -> int:
        from catalog import compatibility

        text = canonical(schema_text)
        for _ in range(3):
            try:
                with transaction.atomic():
                    subj, _ = SchemaSubject.objects.get_or_create(name=subject)
                    schema, _ = AvroSchema.objects.get_or_create(fingerprint=fingerprint(text), defaults={"schema": text})
                    if SubjectVersion.objects.filter(subject=subj, schema=schema).exists():
                        return schema.pk
                    latest = subj.versions.select_for_update().order_by("-version").first()
                    if latest is not None and subj.compatibility.upper().startswith("BACKWARD"):
                        problem = compatibility.backward_problem(new=text, old=latest.schema.schema)
                        if problem:
                            raise IncompatibleSchema(problem)
                    SubjectVersion.objects.create(subject=subj, schema=schema,
                                                  version=(latest.version + 1) if latest else 1)
                    return schema.pk
            except IntegrityError:  # a concurrent registration; look again
                continue
        raise RuntimeError(f"could not register a schema for {subject} after 3 attempts")

    def get_schema(self, schema_id: int) -> str:
        try:
            return AvroSchema.objects.get(pk=schema_id).schema
        except AvroSchema.DoesNotExist:
            raise SchemaNotFound(f"schema id {schema_id} is not in the registry") from None
