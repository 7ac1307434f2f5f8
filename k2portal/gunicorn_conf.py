"""Gunicorn settings for the portal's web service (docker-compose.yml):
`gunicorn -c python:k2portal.gunicorn_conf k2portal.wsgi`. WEB_CONCURRENCY sets the worker count."""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("K2_WEB_ADDR", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
timeout = 120  # a long DuckDB query (the saved-query timeout is shorter) must not be killed mid-way
accesslog = "-"
forwarded_allow_ips = "*"


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges (consumers_running and the like) stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
