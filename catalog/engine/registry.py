"""The schema registry seen by the engines: one small interface, two implementations.

- `ConfluentRegistry`: `confluent_kafka.schema_registry.SchemaRegistryClient` against a
  Confluent Schema Registry (production, K2_SCHEMA_REGISTRY_URL set).
- the embedded registry (`catalog.registry.EmbeddedRegistry`): K2's own, in Postgres,
  called in-process so `manage.py produce` and `consume` need no web server.

`CachedRegistry` wraps either: a schema id is looked up once per process.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol

import fastavro


class SchemaNotFound(LookupError):
    pass


class IncompatibleSchema(ValueError):
    pass


class SubjectNotFound(LookupError):
    pass


class VersionNotFound(LookupError):
    pass


class InvalidSchema(ValueError):
    """The text is not JSON or not a valid Avro schema."""


class SchemaRegistry(Protocol):
    def register(self, subject: str, schema_text: str) -> int:
        """Register (idempotently) and return the global schema id."""

    def get_schema(self, schema_id: int) -> str:
        """The schema text for a global id; SchemaNotFound when unknown."""


class ConfluentRegistry:
    def __init__(self, url: str, *, timeout: float = 10.0, basic_auth: str | None = None) -> None:
        """`basic_auth` is "user:password" (for K2's own registry: any user, an API key with
        `schemas:write` as the password)."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf: dict[str, Any] = {"url": url, "timeout": int(timeout)}
        if basic_auth:
            conf["basic.auth.user.info"] = basic_auth
        self.client = SchemaRegistryClient(conf)

    def register(self, subject: str, schema_text: str) -> int:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return self.client.register_schema(subject, Schema(schema_text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise IncompatibleSchema(str(exc)) from exc
            raise

    def get_schema(self, schema_id: int) -> str:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return self.client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaNotFound(f"schema id {schema_id} is not in the registry") from exc
            raise


class CachedRegistry:
    """Caches ids by (subject, schema) and parsed schemas by id, for the life of the process."""

    def __init__(self, inner: SchemaRegistry) -> None:
        self.inner = inner
        self._ids: dict[tuple[str, str], int] = {}
        self._parsed: dict[int, Any] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema_text: str) -> int:
        key = (subject, schema_text)
        if key not in self._ids:
            with self._lock:
                self._ids[key] = self.inner.register(subject, schema_text)
        return self._ids[key]

    def get_schema(self, schema_id: int) -> str:
        return self.inner.get_schema(schema_id)

    def parsed(self, schema_id: int) -> Any:
        """The fastavro-parsed writer schema for an id (SchemaNotFound when unknown)."""
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            parsed = fastavro.parse_schema(json.loads(self.inner.get_schema(schema_id)))
            with self._lock:
                self._parsed[schema_id] = parsed
        return parsed
