"""The embedded registry over HTTP: the part of the Confluent Schema Registry REST API that
`confluent_kafka.schema_registry.SchemaRegistryClient` (and Kafka UI, and Confluent's own
AvroDeserializer) use, with Confluent's status codes and JSON error bodies.

Mounted at /schema-registry/, so outside tools use K2_SCHEMA_REGISTRY_URL=http://<portal>/schema-registry.
Thin views: every decision is in `catalog.registry.EmbeddedRegistry`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from catalog.engine.registry import IncompatibleSchema, InvalidSchema, SchemaNotFound, SubjectNotFound, VersionNotFound
from catalog.registry import EmbeddedRegistry

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_BODY_TYPES = {"application/vnd.schemaregistry.v1+json", "application/vnd.schemaregistry+json",
                       "application/json", "application/octet-stream"}
MAX_VERSION = 2**31 - 1


class RegistryHttpError(Exception):
    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def _json(data: Any, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, safe=False, content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> JsonResponse:
    return _json({"error_code": code, "message": message}, status)


def _body(request: HttpRequest) -> dict[str, Any]:
    content_type = request.content_type or ""
    if content_type not in ACCEPTED_BODY_TYPES:
        raise RegistryHttpError(415, 415, "HTTP 415 Unsupported Media Type")
    try:
        body = json.loads(request.body or b"null")
    except ValueError as exc:
        raise RegistryHttpError(400, 400, f"Unrecognized JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise RegistryHttpError(422, 422, "Unrecognized body: expected a JSON object")
    return body


def _schema_of(body: dict[str, Any]) -> str:
    schema_type = body.get("schemaType", "AVRO") or "AVRO"
    if schema_type != "AVRO":
        raise RegistryHttpError(422, 42201, f"Invalid schema: schemaType {schema_type} is not supported by K2's registry (AVRO only)")
    if body.get("references"):
        raise RegistryHttpError(422, 42201, "Invalid schema: schema references are not supported by K2's registry")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise RegistryHttpError(422, 42201, "Invalid schema: the body needs a \"schema\" string")
    return schema


def _version(value: str) -> int | str:
    if value == "latest" or value == "-1":
        return "latest"
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_VERSION:
        raise RegistryHttpError(422, 42202, f"The specified version '{value}' is not a valid version id. "
                                            f"Allowed values are between [1, {MAX_VERSION}] and the string \"latest\"")
    return number


def _handled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Map registry errors to Confluent's status codes and error bodies, in one place."""

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except RegistryHttpError as exc:
            return _error(exc.status, exc.error_code, exc.message)
        except SubjectNotFound as exc:
            return _error(404, 40401, str(exc))
        except VersionNotFound as exc:
            return _error(404, 40402, str(exc))
        except SchemaNotFound as exc:
            return _error(404, 40403, str(exc) if "id" not in str(exc) else "Schema not found")
        except InvalidSchema as exc:
            return _error(422, 42201, str(exc))
        except IncompatibleSchema as exc:
            return _error(409, 409, f"Schema being registered is incompatible with an earlier schema for subject "
                                    f"\"{kwargs.get('subject', '')}\", details: [{exc}]")

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return csrf_exempt(wrapper)


registry = EmbeddedRegistry()


@_handled
@require_http_methods(["GET"])
def root(request: HttpRequest) -> HttpResponse:
    return _json({})


@_handled
@require_http_methods(["GET"])
def subjects(request: HttpRequest) -> HttpResponse:
    return _json(registry.subjects())


@_handled
@require_http_methods(["GET", "POST"])
def subject_versions(request: HttpRequest, subject: str) -> HttpResponse:
    """GET: the subject's version numbers. POST: register a schema (idempotent) → {"id": n}."""
    if request.method == "GET":
        return _json(registry.versions(subject))
    schema = _schema_of(_body(request))
    return _json({"id": registry.register(subject, schema)})


@_handled
@require_http_methods(["POST"])
def subject_lookup(request: HttpRequest, subject: str) -> HttpResponse:
    """Is this schema registered under the subject? → its subject, version, id and schema."""
    found = registry.lookup(subject, _schema_of(_body(request)))
    return _json({"subject": found.subject, "version": found.version, "id": found.schema_id, "schema": found.schema})


@_handled
@require_http_methods(["GET"])
def subject_version(request: HttpRequest, subject: str, version: str) -> HttpResponse:
    found = registry.version(subject, _version(version))
    return _json({"subject": found.subject, "version": found.version, "id": found.schema_id, "schema": found.schema})


@_handled
@require_http_methods(["GET"])
def subject_version_schema(request: HttpRequest, subject: str, version: str) -> HttpResponse:
    found = registry.version(subject, _version(version))
    return HttpResponse(found.schema, content_type=CONTENT_TYPE)


@_handled
@require_http_methods(["GET"])
def schema_by_id(request: HttpRequest, schema_id: int) -> HttpResponse:
    return _json({"schema": registry.get_schema(schema_id)})


@_handled
@require_http_methods(["GET"])
def schema_by_id_raw(request: HttpRequest, schema_id: int) -> HttpResponse:
    return HttpResponse(registry.get_schema(schema_id), content_type=CONTENT_TYPE)


@_handled
@require_http_methods(["GET"])
def schema_subjects(request: HttpRequest, schema_id: int) -> HttpResponse:
    return _json(registry.subjects_of(schema_id))


@_handled
@require_http_methods(["GET"])
def schema_types(request: HttpRequest) -> HttpResponse:
    return _json(["AVRO"])


@_handled
@require_http_methods(["POST"])
def compatibility(request: HttpRequest, subject: str, version: str = "latest") -> HttpResponse:
    """{"is_compatible": bool}; with ?verbose=true also "messages" saying why not."""
    problem = registry.compatibility_problem(subject, _schema_of(_body(request)), _version(version))
    data: dict[str, Any] = {"is_compatible": problem is None}
    if request.GET.get("verbose", "").lower() == "true":
        data["messages"] = [] if problem is None else [problem]
    return _json(data)


@_handled
@require_http_methods(["GET", "PUT"])
def config(request: HttpRequest, subject: str | None = None) -> HttpResponse:
    if request.method == "GET":
        return _json({"compatibilityLevel": registry.compatibility_level(subject)})
    if subject is None:
        raise RegistryHttpError(422, 42203, "The global compatibility level of K2's registry is fixed at BACKWARD; set it per subject")
    level = _body(request).get("compatibility", "")
    try:
        return _json({"compatibility": registry.set_compatibility_level(subject, str(level))})
    except ValueError as exc:
        raise RegistryHttpError(422, 42203, str(exc)) from None
