"""The project package: settings, URLs, the Celery app, the /metrics view.

The Celery app (`k2portal.celery.app`) is not imported here: importing the package must not
load Celery, Django or set DJANGO_SETTINGS_MODULE (a `manage.py help` that sends no task stays
fast, issue #10). It is loaded where a task is sent or run: `celery -A k2portal` finds
`k2portal.celery`, the web process imports it from `k2portal.wsgi`, and Django code that sends
a task imports `settings.K2_CELERY_APP` first (`ingestion.consumer_services.celery_app`).
"""

from __future__ import annotations

from typing import Any

__all__ = ("celery_app",)


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        from k2portal.celery import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
