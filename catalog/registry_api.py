"""The embedded registry over HTTP: the part of the Confluent Schema Registry REST API that
`confluent_kafka.schema_registry.SchemaRegistryClient` (and Kafka UI, and Confluent's own
AvroDeserializer) use, with Confluent's status codes and JSON error bodies.

Mounted at /schema-registry/, so outside tools use K2_SCHEMA_REGISTRY_URL=http://<portal>/schema-registry.
Thin views: every decision is in `catalog.registry.EmbeddedRegistry`.

Reads are open (Confluent's default). Writes (register, config, delete) need an API key with the
`schemas:write` scope — in `X-API-Key`, or as the password of HTTP Basic auth (what Confluent's
clients send with `basic.auth.user.info`) — or a staff session with `catalog.write_schemas` (and
the CSRF token); otherwise 401/403 with Confluent's error bodies.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from catalog.engine.registry import IncompatibleSchema, InvalidSchema, SchemaNotFound, SubjectNotFound, VersionNotFound
from catalog.registry import EmbeddedRegistry, NotSoftDeleted, SubjectSoftDeleted

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_BODY_TYPES = {"application/vnd.schemaregistry.v1+json", "application/vnd.schemaregistry+json",
                       "application/json", "application/octet-stream"}
MAX_VERSION = 2**31 - 1
MAX_SUBJECT_LENGTH = 255
WRITE_SCOPE = "schemas:write"
WRITE_PERMISSION = "catalog.write_schemas"


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
    except RecursionError:
        raise RegistryHttpError(400, 400, "Unrecognized JSON body: nested too deeply") from None
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


def _subject_name(subject: str) -> str:
    if len(subject) > MAX_SUBJECT_LENGTH or "\x00" in subject or not subject.strip():
        raise RegistryHttpError(422, 42208, f"Invalid subject: a subject name is 1–{MAX_SUBJECT_LENGTH} characters "
                                            "without NUL")
    return subject


def _api_key_of(request: HttpRequest) -> str | None:
    """The raw API key in X-API-Key, or the password of HTTP Basic auth (Confluent clients)."""
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise RegistryHttpError(401, 401, "Unauthorized: the Basic credentials are not base64 user:password") from None
    return decoded.partition(":")[2] or None


def _authorize_write(request: HttpRequest) -> None:
    """A write needs a `schemas:write` key or a staff session with catalog.write_schemas (CSRF-checked)."""
    from django.conf import settings
    from django.utils.module_loading import import_string
    from ninja.utils import check_csrf

    raw = _api_key_of(request)
    if raw:
        # API keys belong to the query app; settings name its check so this app does not import it.
        api_key_scopes = import_string(settings.K2_API_KEY_SCOPES)
        try:
            scopes = api_key_scopes(raw_key=raw)
        except PermissionError as exc:
            raise RegistryHttpError(401, 401, f"Unauthorized: {exc}") from None
        if WRITE_SCOPE not in scopes:
            raise RegistryHttpError(403, 403, f"Forbidden: this API key lacks the {WRITE_SCOPE!r} scope needed to "
                                              "register, reconfigure or delete schemas")
        return
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        raise RegistryHttpError(401, 401, "Unauthorized: registering, reconfiguring and deleting schemas needs an API "
                                          f"key with the {WRITE_SCOPE!r} scope (X-API-Key, or the password of Basic "
                                          "auth) or a staff session")
    if not user.has_perm(WRITE_PERMISSION):
        raise RegistryHttpError(403, 403, f"Forbidden: your user lacks the {WRITE_PERMISSION} permission")
    if check_csrf(request) is not None:
        raise RegistryHttpError(403, 403, "Forbidden: CSRF check failed for a session request; send the csrftoken "
                                          "or use an API key")


def _handled(methods: tuple[str, ...], writes: tuple[str, ...] = ()) -> Callable[[Callable[..., HttpResponse]],
                                                                               Callable[..., HttpResponse]]:
    """Allow these methods (JSON 405 otherwise), authorize the writing ones, check the subject
    name, and map registry errors to Confluent's status codes and error bodies, in one place."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    response = _error(405, 405, "HTTP 405 Method Not Allowed")
                    response["Allow"] = ", ".join(methods)
                    return response
                if request.method in writes:
                    _authorize_write(request)
                if kwargs.get("subject") is not None:
                    _subject_name(kwargs["subject"])
                return view(request, *args, **kwargs)
            except RegistryHttpError as exc:
                response = _error(exc.status, exc.error_code, exc.message)
                if exc.status == 401:
                    response["WWW-Authenticate"] = 'Basic realm="K2 schema registry"'
                return response
            except SubjectNotFound as exc:
                return _error(404, 40401, str(exc))
            except VersionNotFound as exc:
                return _error(404, 40402, str(exc))
            except SchemaNotFound as exc:
                return _error(404, 40403, str(exc) if "id" not in str(exc) else "Schema not found")
            except (SubjectSoftDeleted, NotSoftDeleted) as exc:
                return _error(404, exc.code, str(exc))
            except InvalidSchema as exc:
                return _error(422, 42201, str(exc))
            except IncompatibleSchema as exc:
                return _error(409, 409, f"Schema being registered is incompatible with an earlier schema for subject "
                                        f"\"{kwargs.get('subject', '')}\", details: [{exc}]")

        wrapper.__name__ = view.__name__
        wrapper.__doc__ = view.__doc__
        return csrf_exempt(wrapper)

    return decorate


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any path the registry does not serve: Confluent's JSON 404."""
    return _error(404, 404, "HTTP 404 Not Found")


not_found = csrf_exempt(not_found)


def _permanent(request: HttpRequest) -> bool:
    return request.GET.get("permanent", "").lower() == "true"


registry = EmbeddedRegistry()


@_handled(("GET",))
def root(request: HttpRequest) -> HttpResponse:
    return _json({})


@_handled(("GET",))
def subjects(request: HttpRequest) -> HttpResponse:
    return _json(registry.subjects())


@_handled(("GET", "POST"), writes=("POST",))
def subject_versions(request: HttpRequest, subject: str) -> HttpResponse:
    """GET: the subject's version numbers. POST: register a schema (idempotent) → {"id": n}."""
    if request.method == "GET":
        return _json(registry.versions(subject))
    schema = _schema_of(_body(request))
    return _json({"id": registry.register(subject, schema)})


@_handled(("POST", "DELETE"), writes=("DELETE",))
def subject_lookup(request: HttpRequest, subject: str) -> HttpResponse:
    """POST: is this schema registered under the subject? → its subject, version, id and schema.
    DELETE: soft-delete the subject (?permanent=true removes a soft-deleted one) → its versions."""
    if request.method == "DELETE":
        return _json(registry.delete_subject(subject, permanent=_permanent(request)))
    found = registry.lookup(subject, _schema_of(_body(request)))
    return _json({"subject": found.subject, "version": found.version, "id": found.schema_id, "schema": found.schema})


@_handled(("GET", "DELETE"), writes=("DELETE",))
def subject_version(request: HttpRequest, subject: str, version: str) -> HttpResponse:
    if request.method == "DELETE":
        return _json(registry.delete_version(subject, _version(version), permanent=_permanent(request)))
    found = registry.version(subject, _version(version))
    return _json({"subject": found.subject, "version": found.version, "id": found.schema_id, "schema": found.schema})


@_handled(("GET",))
def subject_version_schema(request: HttpRequest, subject: str, version: str) -> HttpResponse:
    found = registry.version(subject, _version(version))
    return HttpResponse(found.schema, content_type=CONTENT_TYPE)


@_handled(("GET",))
def schema_by_id(request: HttpRequest, schema_id: int) -> HttpResponse:
    return _json({"schema": registry.get_schema(schema_id)})


@_handled(("GET",))
def schema_by_id_raw(request: HttpRequest, schema_id: int) -> HttpResponse:
    return HttpResponse(registry.get_schema(schema_id), content_type=CONTENT_TYPE)


@_handled(("GET",))
def schema_subjects(request: HttpRequest, schema_id: int) -> HttpResponse:
    return _json(registry.subjects_of(schema_id))


@_handled(("GET",))
def schema_types(request: HttpRequest) -> HttpResponse:
    return _json(["AVRO"])


@_handled(("POST",))
def compatibility(request: HttpRequest, subject: str, version: str = "latest") -> HttpResponse:
    """{"is_compatible": bool}; with ?verbose=true also "messages" saying why not."""
    problem = registry.compatibility_problem(subject, _schema_of(_body(request)), _version(version))
    data: dict[str, Any] = {"is_compatible": problem is None}
    if request.GET.get("verbose", "").lower() == "true":
        data["messages"] = [] if problem is None else [problem]
    return _json(data)


@_handled(("GET", "PUT", "DELETE"), writes=("PUT", "DELETE"))
def config(request: HttpRequest, subject: str | None = None) -> HttpResponse:
    if request.method == "GET":
        return _json({"compatibilityLevel": registry.compatibility_level(subject)})
    if request.method == "DELETE":
        if subject is None:
            raise RegistryHttpError(422, 42203, "The global compatibility level of K2's registry is fixed at BACKWARD")
        return _json({"compatibilityLevel": registry.delete_compatibility_level(subject)})
    if subject is None:
        raise RegistryHttpError(422, 42203, "The global compatibility level of K2's registry is fixed at BACKWARD; set it per subject")
    level = _body(request).get("compatibility", "")
    try:
        return _json({"compatibility": registry.set_compatibility_level(subject, str(level))})
    except ValueError as exc:
        raise RegistryHttpError(422, 42203, str(exc)) from None
