"""`make run`'s entry point brings the platform up from nothing (a database that does not exist
yet) and stops it again cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from k2portal.config import BASE_DIR
from tests.conftest import PG_ADMIN, free_port


@pytest.mark.slow
def test_run_command_brings_the_platform_up_lands_the_sample_and_stops(unique: str) -> None:
    """The whole path a new user sees: sample → Kafka → consumers (Celery tasks) → Iceberg, the
    injected gaps in Postgres, a working API key, and consumers stopped cleanly on shutdown."""
    database = f"k2_run_{unique}"
    web = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": "redis://127.0.0.1:6379/6",
        "K2_EMBEDDED_BROKER_PORT": str(free_port()),
        "K2_WAREHOUSE": str(BASE_DIR / "var" / f"warehouse-{unique}"),
        "K2_ICEBERG_CATALOG_URI": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
    }
    env.pop("K2_KAFKA_BOOTSTRAP", None)
    env.pop("K2_ADMIN_PASSWORD", None)
    try:
        result = subprocess.run([sys.executable, "-m", "k2portal.run", "--exit-when-ready", "--web", web],
                                cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=400)
        out = result.stdout
        assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
        assert f"created database {database}" in out
        assert "K2 is up." in out
        assert f"http://{web}/admin/" in out and "password `" in out  # first run prints it once
        assert "K2 stopped." in out
        manifest = json.loads((BASE_DIR / "data/sample/asx-2014-03/manifest.json").read_text())
        rows = manifest["rows"]
        summary = "\n".join(line for line in out.splitlines() if "Iceberg rows" in line or "sample →" in line
                             or "consumer" in line.lower() and ("error" in line.lower() or "failed" in line.lower()))
        assert (f"trades {rows['trades']:,}/{rows['trades']:,} · quotes {rows['quotes']:,}/{rows['quotes']:,} · "
                f"reference_data {rows['reference_data']:,}/{rows['reference_data']:,}") in out, summary[-4000:]
        # Worker-process metrics reach the portal's /metrics (prometheus_client multiprocess mode).
        assert f"k2_iceberg_rows_written_total = {sum(rows.values()):,}" in out
        injected = {(a["symbol"], a["expected_sequence"]) for a in manifest["anomalies"] if a["kind"] == "gap"}
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
            assert conn.execute("SELECT count(*) FROM auth_user WHERE username='admin' AND is_superuser").fetchone()[0] == 1
            open_gaps = set(conn.execute(
                "SELECT symbol, expected_sequence FROM ingestion_sequencegap WHERE state = 'open'").fetchall())
            assert open_gaps == injected
            statuses = dict(conn.execute("SELECT name, status FROM ingestion_consumer").fetchall())
            assert statuses == {"trades-asx": "stopped", "quotes-asx": "stopped", "reference_data-asx": "stopped"}
        curl = next(line for line in out.splitlines() if "curl -s -H 'X-API-Key: k2_" in line)
        assert "/api/v1/ohlcv?symbol=BHP" in curl
    finally:
        shutil.rmtree(BASE_DIR / "var" / f"warehouse-{unique}", ignore_errors=True)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_run_command_says_how_to_start_an_unreachable_postgres() -> None:
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/k2"}
    result = subprocess.run([sys.executable, "-m", "k2portal.run", "--exit-when-ready"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "PostgreSQL at 127.0.0.1" in result.stderr and "pg_ctlcluster" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_command_says_how_to_start_an_unreachable_redis() -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = subprocess.run([sys.executable, "-m", "k2portal.run", "--exit-when-ready"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Redis at" in result.stderr and "redis-server --daemonize yes" in result.stderr
