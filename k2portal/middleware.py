"""Request correlation ids (ADR #008)."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from k2core.logging import clear_correlation_id, get_logger, set_correlation_id

HEADER = "X-Correlation-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = get_logger(__name__, component="http")


def _who(request: HttpRequest) -> dict[str, str]:
    """Who made the request, for the log line: the API key's prefix (and its owner) or the session user."""
    who: dict[str, str] = {}
    prefix = getattr(request, "k2_api_key_prefix", None)
    if prefix:
        who["api_key"] = prefix
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        who["user"] = user.get_username()
    elif getattr(request, "k2_api_key_owner", ""):
        who["user"] = request.k2_api_key_owner  # type: ignore[attr-defined]
    return who


class CorrelationIdMiddleware:
    """Take X-Correlation-ID from the request (or make one), bind it, return it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        correlation_id = set_correlation_id(incoming if _VALID.match(incoming) else None)
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
            log.info("request_finished", method=request.method, path=request.path,
                     status=response.status_code, **_who(request))
            response[HEADER] = correlation_id
            return response
        finally:
            clear_correlation_id()


class ApiJsonErrorsMiddleware:
    """Under /api/v1/, an error Django or django-ninja answers outside the API's own handlers
    (unknown path, wrong method, a request Django refuses) still has the documented JSON shape
    `{error, message}`; the API's own errors are mapped in `queries.api.install`."""

    PREFIX = "/api/v1/"
    CODES = {400: ("bad_request", "the request is not valid"),
             403: ("forbidden", "the request was refused"),
             404: ("not_found", "no such endpoint: the API's endpoints are listed at /api/v1/docs"),
             405: ("method_not_allowed", "this endpoint does not take {method}: use {allowed}"),
             413: ("payload_too_large", "the request body is too large")}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.http import JsonResponse

        response = self.get_response(request)
        if (not request.path.startswith(self.PREFIX) or response.status_code < 400
                or response.get("Content-Type", "").startswith("application/json")):
            return response
        code, message = self.CODES.get(response.status_code, ("error", "the request failed"))
        allowed = response.get("Allow", "")
        body = JsonResponse({"error": code, "message": message.format(method=request.method, allowed=allowed)},
                            status=response.status_code)
        if allowed:
            body["Allow"] = allowed
        return body
