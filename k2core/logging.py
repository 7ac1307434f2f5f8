"""Structured logging (ADR #008): structlog with a correlation id carried in contextvars.

JSON lines when stdout is not a terminal (or K2_LOG_JSON=1), readable console output on one.
Every line has `timestamp`, `level`, `event`, `logger` (and `component` where given) and the
`correlation_id` bound in the current context. Standard-library loggers (Django, Celery,
libraries) go through the same renderer, so one line format reaches the aggregator.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, get_contextvars, unbind_contextvars

CORRELATION_ID = "correlation_id"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def set_correlation_id(value: str | None = None) -> str:
    """Bind a correlation id (a new one when None) to this thread/task's context and return it."""
    value = value or new_correlation_id()
    bind_contextvars(correlation_id=value)
    return value


def get_correlation_id() -> str | None:
    return get_contextvars().get(CORRELATION_ID)


def clear_correlation_id() -> None:
    unbind_contextvars(CORRELATION_ID)


def configure(*, json_output: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog and the standard library's logging once per process."""
    if json_output is None:
        json_output = not sys.stdout.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_output else (lambda _l, _m, e: e),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # runserver's access line would repeat the middleware's `request_finished`: one line per request
    server = logging.getLogger("django.server")
    server.handlers, server.propagate = [logging.NullHandler()], False
    # Django's "Not Found: /x" warning repeats it too; server errors (with their traceback) stay
    logging.getLogger("django.request").setLevel(max(logging.ERROR, logging.getLevelName(level)))
    # Celery's routine bookkeeping (beat's "Sending due task", the worker's task received/succeeded)
    # every few seconds would bury what matters; failures are still logged at ERROR.
    for chatty in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for noisy in ("kafka", "urllib3", "pyiceberg", "botocore", "fsspec"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger for `name` with default context (for example component="storage")."""
    return structlog.get_logger(name).bind(**context)


@contextmanager
def timer(logger: Any, operation: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Log an operation's duration: DEBUG at start, INFO on completion, ERROR on failure.

    Yields a dict the caller may add fields to (they are logged with the completion line).
    """
    extra: dict[str, Any] = {}
    logger.debug("operation_started", operation=operation, **fields)
    start = time.perf_counter()
    try:
        yield extra
    except Exception:
        logger.error("operation_failed", operation=operation,
                     duration_ms=round((time.perf_counter() - start) * 1000, 3), **fields, **extra)
        raise
    logger.info("operation_completed", operation=operation,
                duration_ms=round((time.perf_counter() - start) * 1000, 3), **fields, **extra)
