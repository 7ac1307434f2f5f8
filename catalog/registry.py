"""The embedded schema registry: subjects, versions and global ids in Postgres (ORM).

Implements `catalog.engine.registry.SchemaRegistry` in-process. Compatibility checks
(BACKWARD) are applied on register; the Confluent-compatible REST views
(`catalog.registry_api`) call the same code, so in-process and HTTP users see one registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import fastavro
from django.db import IntegrityError, transaction

from catalog.engine.registry import IncompatibleSchema, InvalidSchema, SchemaNotFound, SubjectNotFound, VersionNotFound
from catalog.models import AvroSchema, SchemaSubject, SubjectVersion

DEFAULT_COMPATIBILITY = "BACKWARD"
COMPATIBILITY_LEVELS = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE")


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def validate(schema_text: str) -> str:
    """The canonical text of a valid Avro schema; InvalidSchema saying what is wrong otherwise."""
    try:
        parsed = json.loads(schema_text)
    except (TypeError, ValueError) as exc:
        raise InvalidSchema(f"Invalid schema: not JSON ({exc})") from None
    try:
        fastavro.parse_schema(parsed)
    except Exception as exc:  # noqa: BLE001 - fastavro raises several types for bad schemas
        raise InvalidSchema(f"Invalid schema: {exc}") from None
    return json.dumps(parsed, separators=(",", ":"))


@dataclass(frozen=True)
class Version:
    subject: str
    version: int
    schema_id: int
    schema: str


def _problem(subject: SchemaSubject, text: str, against: list[SubjectVersion]) -> str | None:
    """Why `text` may not follow these versions under the subject's compatibility level (None: it may)."""
    from catalog import compatibility

    level = subject.compatibility.upper()
    if level == "NONE" or not against:
        return None
    targets = against if level.endswith("_TRANSITIVE") else against[-1:]
    for old in targets:
        checks = []
        if level.startswith(("BACKWARD", "FULL")):
            checks.append(compatibility.backward_problem(new=text, old=old.schema.schema))
        if level.startswith(("FORWARD", "FULL")):
            checks.append(compatibility.backward_problem(new=old.schema.schema, old=text))
        for problem in checks:
            if problem:
                return f"{problem} (checked against version {old.version}, compatibility {level})"
    return None


class EmbeddedRegistry:
    def register(self, subject: str, schema_text: str) -> int:
        text = validate(schema_text)
        for _ in range(3):
            try:
                with transaction.atomic():
                    subj, _ = SchemaSubject.objects.get_or_create(name=subject)
                    subj = SchemaSubject.objects.select_for_update().get(pk=subj.pk)
                    schema, _ = AvroSchema.objects.get_or_create(fingerprint=fingerprint(text), defaults={"schema": text})
                    if SubjectVersion.objects.filter(subject=subj, schema=schema).exists():
                        return schema.pk
                    versions = list(subj.versions.select_related("schema").order_by("version"))
                    problem = _problem(subj, text, versions)
                    if problem:
                        raise IncompatibleSchema(problem)
                    SubjectVersion.objects.create(subject=subj, schema=schema,
                                                  version=(versions[-1].version + 1) if versions else 1)
                    return schema.pk
            except IntegrityError:  # a concurrent registration; look again
                continue
        raise RuntimeError(f"could not register a schema for {subject} after 3 attempts")

    def get_schema(self, schema_id: int) -> str:
        try:
            return AvroSchema.objects.get(pk=schema_id).schema
        except AvroSchema.DoesNotExist:
            raise SchemaNotFound(f"schema id {schema_id} is not in the registry") from None

    # --- the rest of the Confluent REST subset ---
    def subjects(self) -> list[str]:
        return list(SchemaSubject.objects.filter(versions__isnull=False).distinct().order_by("name").values_list("name", flat=True))

    def _subject(self, subject: str) -> SchemaSubject:
        try:
            return SchemaSubject.objects.get(name=subject)
        except SchemaSubject.DoesNotExist:
            raise SubjectNotFound(f"Subject '{subject}' not found.") from None

    def versions(self, subject: str) -> list[int]:
        found = list(self._subject(subject).versions.order_by("version").values_list("version", flat=True))
        if not found:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        return found

    def version(self, subject: str, version: int | str) -> Version:
        """A version by number, or "latest" (also -1, as Confluent accepts)."""
        subj = self._subject(subject)
        rows = subj.versions.select_related("schema")
        row = rows.order_by("-version").first() if version in ("latest", -1) else rows.filter(version=version).first()
        if row is None:
            if not rows.exists():
                raise SubjectNotFound(f"Subject '{subject}' not found.")
            raise VersionNotFound(f"Version {version} not found.")
        return Version(subject=subject, version=row.version, schema_id=row.schema_id, schema=row.schema.schema)

    def lookup(self, subject: str, schema_text: str) -> Version:
        """The version under which this exact schema is registered in the subject."""
        text = validate(schema_text)
        subj = self._subject(subject)
        row = subj.versions.select_related("schema").filter(schema__fingerprint=fingerprint(text)).first()
        if row is None:
            raise SchemaNotFound("Schema not found")
        return Version(subject=subject, version=row.version, schema_id=row.schema_id, schema=row.schema.schema)

    def compatibility_problem(self, subject: str, schema_text: str, version: int | str = "latest") -> str | None:
        """Would `schema_text` be accepted after this version? None when compatible, else the reason."""
        text = validate(schema_text)
        try:
            subj = SchemaSubject.objects.get(name=subject)
        except SchemaSubject.DoesNotExist:
            raise SubjectNotFound(f"Subject '{subject}' not found.") from None
        rows = list(subj.versions.select_related("schema").order_by("version"))
        if version not in ("latest", -1):
            chosen = [r for r in rows if r.version == version]
            if not chosen:
                raise VersionNotFound(f"Version {version} not found.")
            if not subj.compatibility.upper().endswith("_TRANSITIVE"):
                rows = chosen
        return _problem(subj, text, rows)

    def subjects_of(self, schema_id: int) -> list[str]:
        self.get_schema(schema_id)
        return list(SubjectVersion.objects.filter(schema_id=schema_id).order_by("subject__name").values_list("subject__name", flat=True))

    def compatibility_level(self, subject: str | None = None) -> str:
        if subject is None:
            return DEFAULT_COMPATIBILITY
        return self._subject(subject).compatibility.upper()

    def set_compatibility_level(self, subject: str, level: str) -> str:
        """Set a subject's level (creating the subject, as Confluent does); ValueError for an unknown level."""
        level = level.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise ValueError(f"Invalid compatibility level. Valid values are {', '.join(COMPATIBILITY_LEVELS)}")
        SchemaSubject.objects.update_or_create(name=subject, defaults={"compatibility": level})
        return level
