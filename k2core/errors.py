"""The application errors of K2: one family, from engines to the Django shell.

An `ApplicationError` carries a message for the user (what was wrong and what to do next),
optionally the field it concerns, and the HTTP status and code it stands for. Services and
engines raise the subclass that says what kind of refusal it is; the shell maps the family
once to API responses (`queries.api.install`: status + `{"error", "message", "field"}`) and
once to admin messages (`k2portal.admin.K2AdminSite`). Plain Python, no Django import.
"""

from __future__ import annotations

from collections.abc import Mapping


class ApplicationError(Exception):
    """A request K2 refuses, with the message the user sees. `status`/`code` are the API's."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class Invalid(ApplicationError):
    """The input is wrong (400): a parameter, a form value, a command option."""


class Unauthenticated(ApplicationError):
    """No credentials, or credentials K2 does not accept (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(ApplicationError):
    """The caller is known but may not do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(ApplicationError):
    """What the request names does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(ApplicationError):
    """The request is valid but the current state does not allow it (409), e.g. starting a running consumer."""

    status = 409
    code = "conflict"


class Unprocessable(ApplicationError):
    """The request was understood but its result cannot be produced within the limits (422)."""

    status = 422
    code = "unprocessable"


class TooManyRequests(ApplicationError):
    """The caller is over a rate or concurrency limit (429); `headers` may carry Retry-After."""

    status = 429
    code = "rate_limited"


class Unavailable(ApplicationError):
    """A dependency K2 needs for this request is unreachable (503)."""

    status = 503
    code = "unavailable"


class Timeout(ApplicationError):
    """The work ran past its time limit and was interrupted (504)."""

    status = 504
    code = "timeout"


__all__ = ["ApplicationError", "Conflict", "Forbidden", "Invalid", "NotFound", "Timeout", "TooManyRequests",
           "Unauthenticated", "Unavailable", "Unprocessable"]
