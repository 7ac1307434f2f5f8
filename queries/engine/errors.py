"""The query engine's errors. Each maps to one HTTP status in the API (in one place,
`queries.api.install`), and each message says what was wrong and what to do instead."""

from __future__ import annotations


class QueryError(Exception):
    """Base of the engine's errors; `status` is the HTTP status the API answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadQuery(QueryError):
    """A parameter or a SQL text the engine refuses (400)."""


class SandboxViolation(BadQuery):
    """Saved SQL tried something outside the read-only sandbox (400)."""

    code = "sandbox_violation"


class NotFound(QueryError):
    """A table, snapshot or saved query that does not exist (404)."""

    status = 404
    code = "not_found"


class ResourceLimit(QueryError):
    """A saved query needed more memory, or returned more bytes, than a run may (422)."""

    status = 422
    code = "resource_limit"


class TooManyRuns(QueryError):
    """The caller already has the allowed number of saved-query runs in flight (429)."""

    status = 429
    code = "too_many_runs"


class QueryTimeout(QueryError):
    """The query ran past its time limit and was interrupted (504)."""

    status = 504
    code = "timeout"
