"""Structured logging (ADR #008): structlog with a correlation id carried in contextvars.

JSON lines when stdout is not a terminal (or K2_LOG_JSON=1), readable console output on one.
Every line has `timestamp`, `level`, `event`, `logger` (and `component` where given) and the
`correlation_id` bound in the current context. Standard-library loggers (Django, Celery,
libraries) go through the same renderer, so one line format reaches the aggregator.

structlog is imported when something logs, not when this module is imported or `configure`
runs: importing it takes a fifth of a second (it loads rich), and a process that logs nothing
(`manage.py help`) need not pay it. Its configuration is applied the moment it is first
imported, by anyone, so code that uses structlog directly gets the same output.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

CORRELATION_ID = "correlation_id"

_lock = threading.Lock()
_json_output: bool | None = None  # what `configure` asked for; None: not configured


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def set_correlation_id(value: str | None = None) -> str:
    """Bind a correlation id (a new one when None) to this thread/task's context and return it."""
    from structlog.contextvars import bind_contextvars

    value = value or new_correlation_id()
    bind_contextvars(correlation_id=value)
    return value


def get_correlation_id() -> str | None:
    from structlog.contextvars import get_contextvars

    return get_contextvars().get(CORRELATION_ID)


def clear_correlation_id() -> None:
    from structlog.contextvars import unbind_contextvars

    unbind_contextvars(CORRELATION_ID)


def _shared_processors() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _apply_structlog_config() -> None:
    """structlog's half of `configure` (structlog is imported by now)."""
    import structlog

    if _json_output is None:
        return
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _processor_formatter(json_output: bool) -> logging.Formatter:
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_output else (lambda _l, _m, e: e),
            renderer,
        ],
    )


class _Formatter(logging.Formatter):
    """The root handler's formatter: structlog's ProcessorFormatter, built at the first record."""

    def __init__(self, json_output: bool) -> None:
        super().__init__()
        self._json_output = json_output
        self._inner: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._inner is None:
            self._inner = _processor_formatter(self._json_output)
        return self._inner.format(record)


class _ConfigureOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Applies the configuration right after structlog's first import, whoever imports it."""

    def __init__(self) -> None:
        self._loader: importlib.abc.Loader | None = None

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "structlog":
            return None
        _remove_hook()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec) if self._loader else None

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None
        module.__loader__ = module.__spec__.loader = self._loader  # structlog sees its own loader
        self._loader.exec_module(module)
        _apply_structlog_config()


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ConfigureOnImport)]


def configure(*, json_output: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog and the standard library's logging once per process.

    The standard library's side is set now; structlog's when structlog is first imported (at
    once if it already is)."""
    global _json_output
    if json_output is None:
        json_output = not sys.stdout.isatty()
    with _lock:
        _json_output = json_output
        if "structlog" in sys.modules:
            _apply_structlog_config()
        elif not any(isinstance(f, _ConfigureOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _ConfigureOnImport())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(json_output))
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


class _Logger:
    """What `get_logger` returns: structlog's bound logger, created at its first use (so a module
    that only defines a logger does not import structlog)."""

    def __init__(self, name: str, context: dict[str, Any]) -> None:
        self._name = name
        self._context = context
        self._bound: Any = None

    def __getattr__(self, attr: str) -> Any:
        bound = self._bound
        if bound is None:
            import structlog

            bound = self._bound = structlog.get_logger(self._name).bind(**self._context)
        return getattr(bound, attr)


def get_logger(name: str, **context: Any) -> Any:
    """A logger for `name` with default context (for example component="storage"): a structlog
    `BoundLogger`, bound at its first use."""
    return _Logger(name, context)


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
