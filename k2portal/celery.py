"""The Celery app. Tasks carry the caller's correlation id in their headers (ADR #008)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "k2portal.settings")

HEADER = "k2_correlation_id"
app = Celery("k2portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _keep_k2_logging(**_: Any) -> None:
    """Logging is configured by the settings module (structlog); stop Celery replacing it."""
    from django.conf import settings

    settings.LOGGING_CONFIG  # noqa: B018 - importing settings configures logging


@before_task_publish.connect
def _send_correlation_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    from k2core.logging import get_correlation_id

    # Not "correlation_id": Celery already uses that name for the task id.
    if headers is not None and HEADER not in headers:
        headers[HEADER] = get_correlation_id()


@task_prerun.connect
def _bind_correlation_id(task: Any = None, **_: Any) -> None:
    from k2core.logging import set_correlation_id

    request = getattr(task, "request", None)
    incoming = getattr(request, HEADER, None) if request else None
    if incoming is None and request is not None:
        incoming = (getattr(request, "headers", None) or {}).get(HEADER)
    set_correlation_id(incoming)


@task_postrun.connect
def _unbind_correlation_id(**_: Any) -> None:
    from k2core.logging import clear_correlation_id

    clear_correlation_id()
