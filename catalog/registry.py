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


class SubjectSoftDeleted(LookupError):
    """Confluent 40404/40406: the subject or version is soft-deleted (permanent=true removes it)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NotSoftDeleted(LookupError):
    """Confluent 40405/40407: a permanent delete needs a soft delete first."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def validate(schema_text: str) -> str:
    """The canonical text of a valid Avro schema; InvalidSchema saying what is wrong otherwise."""
    try:
        parsed = json.loads(schema_text)
    except RecursionError:
        raise InvalidSchema("Invalid schema: the JSON is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise InvalidSchema(f"Invalid schema: not JSON ({exc})") from None
    try:
        fastavro.parse_schema(parsed)
        return json.dumps(parsed, separators=(",", ":"))
    except RecursionError:
        raise InvalidSchema("Invalid schema: the schema is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - fastavro raises several types for bad schemas
        raise InvalidSchema(f"Invalid schema: {exc}") from None


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
                    existing = SubjectVersion.objects.filter(subject=subj, schema=schema).first()
                    if existing is not None and not existing.deleted:
                        return schema.pk
                    versions = list(subj.versions.filter(deleted=False).select_related("schema").order_by("version"))
                    problem = _problem(subj, text, versions)
                    if problem:
                        raise IncompatibleSchema(problem)
                    if existing is not None:  # registered again after a soft delete: it comes back
                        existing.deleted = False
                        existing.save(update_fields=["deleted"])
                        return schema.pk
                    last = subj.versions.order_by("-version").values_list("version", flat=True).first()
                    SubjectVersion.objects.create(subject=subj, schema=schema, version=(last or 0) + 1)
                    return schema.pk
            except IntegrityError:  # a concurrent registration; look again
                continue
        raise RuntimeError(f"could not register a schema for {subject} after 3 attempts")

    def get_schema(self, schema_id: int) -> str:
        if not 0 < schema_id < 2**31:  # ids are Postgres integers: a larger one is simply not there
            raise SchemaNotFound(f"schema id {schema_id} is not in the registry")
        try:
            return AvroSchema.objects.get(pk=schema_id).schema
        except AvroSchema.DoesNotExist:
            raise SchemaNotFound(f"schema id {schema_id} is not in the registry") from None

    # --- the rest of the Confluent REST subset ---
    def subjects(self) -> list[str]:
        return list(SchemaSubject.objects.filter(versions__deleted=False).distinct().order_by("name")
                    .values_list("name", flat=True))

    def _subject(self, subject: str) -> SchemaSubject:
        try:
            return SchemaSubject.objects.get(name=subject)
        except SchemaSubject.DoesNotExist:
            raise SubjectNotFound(f"Subject '{subject}' not found.") from None

    def versions(self, subject: str) -> list[int]:
        found = list(self._subject(subject).versions.filter(deleted=False).order_by("version")
                     .values_list("version", flat=True))
        if not found:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        return found

    def version(self, subject: str, version: int | str) -> Version:
        """A version by number, or "latest" (also -1, as Confluent accepts)."""
        subj = self._subject(subject)
        rows = subj.versions.filter(deleted=False).select_related("schema")
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
        row = subj.versions.filter(deleted=False).select_related("schema").filter(schema__fingerprint=fingerprint(text)).first()
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
        rows = list(subj.versions.filter(deleted=False).select_related("schema").order_by("version"))
        if version not in ("latest", -1):
            chosen = [r for r in rows if r.version == version]
            if not chosen:
                raise VersionNotFound(f"Version {version} not found.")
            if not subj.compatibility.upper().endswith("_TRANSITIVE"):
                rows = chosen
        return _problem(subj, text, rows)

    def subjects_of(self, schema_id: int) -> list[str]:
        self.get_schema(schema_id)
        return list(SubjectVersion.objects.filter(schema_id=schema_id, deleted=False).order_by("subject__name")
                    .values_list("subject__name", flat=True))

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

    def delete_compatibility_level(self, subject: str) -> str:
        """Back to the default level; returns the level the subject had."""
        subj = self._subject(subject)
        previous = subj.compatibility.upper()
        subj.compatibility = DEFAULT_COMPATIBILITY
        subj.save(update_fields=["compatibility"])
        return previous

    @transaction.atomic
    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Confluent's DELETE /subjects/{s}: soft-delete every live version, or (permanent) remove
        the soft-deleted ones. Returns the version numbers deleted."""
        subj = SchemaSubject.objects.select_for_update().filter(name=subject).first()
        if subj is None:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        live = list(subj.versions.filter(deleted=False).order_by("version").values_list("version", flat=True))
        if permanent:
            if live:
                raise NotSoftDeleted(f"Subject '{subject}' was not deleted first before being permanently deleted", 40405)
            gone = list(subj.versions.order_by("version").values_list("version", flat=True))
            subj.delete()
            return gone
        if not live:
            if subj.versions.exists():
                raise SubjectSoftDeleted(f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
                                         40404)
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        subj.versions.filter(deleted=False).update(deleted=True)
        return live

    @transaction.atomic
    def delete_version(self, subject: str, version: int | str, *, permanent: bool = False) -> int:
        """Confluent's DELETE /subjects/{s}/versions/{v} (soft, or permanent after a soft delete)."""
        subj = SchemaSubject.objects.select_for_update().filter(name=subject).first()
        if subj is None:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        rows = subj.versions.all()
        if version in ("latest", -1):
            row = rows.filter(deleted=False).order_by("-version").first()
        else:
            row = rows.filter(version=version).first()
        if row is None:
            raise VersionNotFound(f"Version {version} not found.")
        if permanent:
            if not row.deleted:
                raise NotSoftDeleted(f"Subject '{subject}' Version {row.version} was not deleted first before "
                                     "being permanently deleted", 40407)
            row.delete()
        elif row.deleted:
            raise SubjectSoftDeleted(f"Subject '{subject}' Version {row.version} was soft deleted.Set permanent=true "
                                     "to delete permanently", 40406)
        else:
            row.deleted = True
            row.save(update_fields=["deleted"])
        return row.version
