"""A real Celery worker (prefork) for the self-healing tests, run as a child process:
`python -m tests.consumer.celery_worker QUEUE HOSTNAME`. The only test-specific part: its
consumer tasks write to the test's own Iceberg namespace (K2_TEST_NAMESPACE), as the in-process
task test does with monkeypatch. Everything else (broker, Redis, Postgres) comes from the env."""

from __future__ import annotations

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "k2portal.settings")
django.setup()

from ingestion import consumer_services  # noqa: E402
from k2portal.celery import app  # noqa: E402

_real = consumer_services.consumer_config
_namespace = os.environ["K2_TEST_NAMESPACE"]
consumer_services.consumer_config = lambda **kw: _real(**kw, namespace=_namespace)

if __name__ == "__main__":
    queue, hostname = sys.argv[1], sys.argv[2]
    app.worker_main(["worker", "-Q", queue, "--hostname", hostname, "--concurrency", "1", "--pool", "prefork",
                     "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"])
