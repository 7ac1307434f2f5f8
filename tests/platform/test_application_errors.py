"""One ApplicationError family (k2core.errors): mapped once to API responses (status, JSON body,
headers) and once to admin messages (k2portal.admin_site.K2AdminSite)."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.admin import site
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory
from ninja import NinjaAPI
from ninja.testing import TestClient

from ingestion.consumer_services import ConsumerTransitionError
from ingestion.engine.offset_reset import OffsetResetError
from ingestion.gaps import GapAcknowledgeError
from k2core import errors
from queries.api import MissingCredentials, ScopeMissing, map_errors
from queries.engine.errors import BadQuery, NotFound, QueryTimeout, ResourceLimit, SandboxViolation, TooManyRuns
from queries.engine.formats import UnencodableResult
from queries.services import KeyRejected, RateLimited


@pytest.mark.parametrize(("error", "family"), [
    (ConsumerTransitionError("x"), errors.Conflict), (OffsetResetError("x"), errors.Conflict),
    (GapAcknowledgeError("x"), errors.Invalid), (KeyRejected("x"), errors.Unauthenticated),
    (MissingCredentials("x"), errors.Unauthenticated), (ScopeMissing("x"), errors.Forbidden),
    (RateLimited(10, 5), errors.TooManyRequests), (BadQuery("x"), errors.Invalid), (NotFound("x"), errors.NotFound),
    (TooManyRuns("x"), errors.TooManyRequests), (QueryTimeout("x"), errors.Timeout),
    (ResourceLimit("x"), errors.Unprocessable), (SandboxViolation("x"), errors.Invalid),
    (UnencodableResult("x"), errors.Unprocessable),
])
def test_every_shell_and_engine_refusal_is_an_application_error_of_its_kind(error: Exception, family: type) -> None:
    assert isinstance(error, family) and isinstance(error, errors.ApplicationError)
    assert error.status == family.status  # type: ignore[attr-defined]


def _api_raising(exc: Exception) -> TestClient:
    api = NinjaAPI(urls_namespace=f"errors-{uuid.uuid4().hex}")

    @api.get("/boom")
    def boom(request):  # type: ignore[no-untyped-def]
        raise exc

    map_errors(api)
    return TestClient(api)


@pytest.mark.parametrize(("exc", "status", "body"), [
    (errors.Conflict("consumer trades is running: stop it first", field="status"), 409,
     {"error": "conflict", "message": "consumer trades is running: stop it first", "field": "status"}),
    (errors.NotFound("no such thing"), 404, {"error": "not_found", "message": "no such thing"}),
    (errors.Unavailable("the catalog is unreachable"), 503, {"error": "unavailable", "message": "the catalog is unreachable"}),
    (ConsumerTransitionError("only a stopped or failed consumer can be started"), 409,
     {"error": "conflict", "message": "only a stopped or failed consumer can be started"}),
    (UnencodableResult("a column holds a value JSON cannot carry"), 422,
     {"error": "unencodable_result", "message": "a column holds a value JSON cannot carry", "field": "format"}),
])
def test_an_application_error_becomes_its_status_and_json_body(exc: Exception, status: int, body: dict) -> None:
    response = _api_raising(exc).get("/boom")
    assert response.status_code == status
    assert response.json() == body


def test_an_application_errors_headers_reach_the_response() -> None:
    response = _api_raising(RateLimited(60, 17)).get("/boom")
    assert response.status_code == 429 and response["Retry-After"] == "17"
    assert response.json()["error"] == "rate_limited"


def _admin_request(method: str, path: str, **extra: str):  # type: ignore[no-untyped-def]
    request = getattr(RequestFactory(), method)(path, **extra)
    request.user = get_user_model().objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", is_staff=True)
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    request._dont_enforce_csrf_checks = True
    return request


@pytest.mark.django_db
def test_an_admin_post_refused_by_a_service_returns_to_the_page_with_the_message() -> None:
    def view(request):  # type: ignore[no-untyped-def]
        raise ConsumerTransitionError("consumer trades is running: only a stopped or failed consumer can be started")

    request = _admin_request("post", "/admin/ingestion/consumer/?status=running")
    response = site.admin_view(view)(request)
    assert response.status_code == 302 and response["Location"] == "/admin/ingestion/consumer/?status=running"
    assert [(m.level_tag, str(m)) for m in get_messages(request)] == [
        ("error", "consumer trades is running: only a stopped or failed consumer can be started")]


@pytest.mark.django_db
def test_an_admin_page_refused_on_get_goes_back_to_where_the_user_came_from() -> None:
    def view(request):  # type: ignore[no-untyped-def]
        raise errors.NotFound("no consumer 42: it was deleted")

    came_from = _admin_request("get", "/admin/ingestion/consumer/42/offsets/", HTTP_REFERER="http://testserver/admin/ingestion/")
    response = site.admin_view(view)(came_from)
    assert response.status_code == 302 and response["Location"] == "http://testserver/admin/ingestion/"
    assert [str(m) for m in get_messages(came_from)] == ["no consumer 42: it was deleted"]

    direct = _admin_request("get", "/admin/ingestion/consumer/42/offsets/", HTTP_REFERER="https://evil.example/")
    response = site.admin_view(view)(direct)
    assert response.status_code == 302 and response["Location"] == "/admin/"  # never off-site
