"""A consumer task sent from any thread reaches the configured Redis broker, even when that thread
looked Celery's current app up before the project's app was imported (Celery then makes a fallback
app with the default amqp:// broker; a RabbitMQ on the host took such tasks and no worker saw them)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import redis
from django.conf import settings

from k2core.paths import BASE_DIR

SCRIPT = textwrap.dedent("""
    import os, sys, threading
    os.environ["DJANGO_SETTINGS_MODULE"] = "k2portal.settings"
    import django
    django.setup()
    from celery import current_app
    current_app.main  # a look-up before the project's app exists: Celery's amqp fallback app
    from ingestion import consumer_services
    from ingestion.tasks import run_consumer

    other = threading.Thread(target=consumer_services.celery_app)  # the app imported in another thread
    other.start(); other.join()
    consumer_services.celery_app()
    run_consumer.apply_async(args=[0], queue=sys.argv[1])
    print(run_consumer.app.conf.broker_url)
""")


def test_a_task_sent_from_a_thread_that_looked_up_celery_first_reaches_the_configured_broker() -> None:
    queue = f"test-threads-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.K2.redis_url)
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, queue], cwd=BASE_DIR, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "K2_LOG_LEVEL": "WARNING"})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1].startswith("redis://")
        assert client.llen(queue) == 1  # the message is in the Redis queue the consumers worker reads
    finally:
        client.delete(queue)
