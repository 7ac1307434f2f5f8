"""The embedded broker command starts Tansu, which answers metadata requests, and stops it."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka.admin import AdminClient

from k2portal.config import BASE_DIR
from tests.conftest import free_port


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)


def test_broker_command_starts_answers_metadata_and_stops() -> None:
    import os

    port = free_port()
    env = {**os.environ, "K2_EMBEDDED_BROKER_PORT": str(port)}
    env.pop("K2_KAFKA_BOOTSTRAP", None)
    started = _manage("broker", "start", env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        assert "memory" in started.stdout.lower()
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert len(metadata.brokers) == 1
        status = _manage("broker", "status", env=env)
        assert status.returncode == 0 and "answering" in status.stdout
    finally:
        stopped = _manage("broker", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    after = _manage("broker", "status", env=env)
    assert after.returncode == 3 and "not running" in after.stdout
