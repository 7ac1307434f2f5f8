"""The query engine's errors: members of K2's one `ApplicationError` family (`k2core.errors`),
so the API maps them with every other application error, in one place (`queries.api.install`).
Each message says what was wrong and what to do instead."""

from __future__ import annotations

from k2core import errors


class QueryError(errors.ApplicationError):
    """Base of the engine's errors. Each subclass also derives from the `k2core.errors` kind it is,
    which gives it its HTTP status and (unless it names a narrower one) its code."""


class BadQuery(QueryError, errors.Invalid):
    """A parameter or a SQL text the engine refuses (400)."""


class SandboxViolation(BadQuery):
    """Saved SQL tried something outside the read-only sandbox (400)."""

    code = "sandbox_violation"


class NotFound(QueryError, errors.NotFound):
    """A table, snapshot or saved query that does not exist (404)."""


class ResourceLimit(QueryError, errors.Unprocessable):
    """A saved query needed more memory, or returned more bytes, than a run may (422)."""

    code = "resource_limit"


class TooManyRuns(QueryError, errors.TooManyRequests):
    """The caller already has the allowed number of saved-query runs in flight (429)."""

    code = "too_many_runs"


class QueryTimeout(QueryError, errors.Timeout):
    """The query ran past its time limit and was interrupted (504)."""
