"""Platform-level Celery tasks."""

from __future__ import annotations

from celery import shared_task

from k2core.logging import get_correlation_id, get_logger

log = get_logger(__name__, component="platform")


@shared_task(name="k2portal.echo_correlation_id")
def echo_correlation_id() -> str | None:
    """Return the correlation id the worker bound for this task (used to check propagation)."""
    log.info("echo_correlation_id")
    return get_correlation_id()
