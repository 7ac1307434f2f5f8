"""`make run`: bring the whole local platform up and keep it running until Ctrl-C.

Checks Postgres and Redis (and says how to start them), creates the database when missing,
migrates, creates the admin user, starts the embedded broker, creates the Iceberg tables and
the Kafka topics, then runs the web server, a Celery worker and beat under honcho, loads the
sample data into Kafka, starts the consumers, and prints where everything is.

`--exit-when-ready` brings everything up, prints the summary and stops again (used by the
test suite to prove the run command works from a fresh clone).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
import redis

from k2portal.config import BASE_DIR, ConfigError, load

PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'


def say(message: str = "") -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    sys.stderr.write(f"\nK2 cannot start: {message}\n")
    raise SystemExit(1)


def manage(*args: str, env: dict[str, str], check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, text=True,
                            capture_output=capture)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else ""
        fail(f"`manage.py {' '.join(args)}` failed (exit {result.returncode}). {detail}")
    return result


def ensure_postgres(database_url: str) -> None:
    parsed = urlparse(database_url)
    name = parsed.path.lstrip("/") or "k2"
    admin_url = parsed._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
                say(f"  created database {name}")
    except psycopg.OperationalError as exc:
        fail(f"PostgreSQL at {parsed.hostname}:{parsed.port or 5432} is unreachable ({str(exc).strip()}).\n"
             f"Start it with:\n    {PG_START}\nor point DATABASE_URL at a running server.")


def ensure_redis(redis_url: str) -> None:
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        fail(f"Redis at {redis_url} is unreachable ({exc}).\nStart it with:\n    {REDIS_START}\n"
             "or point REDIS_URL at a running server.")


def ensure_admin(env: dict[str, str]) -> str:
    password = env.get("K2_ADMIN_PASSWORD") or ""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "U = get_user_model()\n"
        "import os, sys\n"
        "if U.objects.filter(username='admin').exists():\n"
        "    if os.environ.get('K2_ADMIN_PASSWORD'):\n"
        "        u = U.objects.get(username='admin'); u.set_password(os.environ['K2_ADMIN_PASSWORD']); u.save()\n"
        "    sys.stdout.write('exists')\n"
        "else:\n"
        "    U.objects.create_superuser('admin', 'admin@localhost', os.environ['K2_NEW_ADMIN_PASSWORD'])\n"
        "    sys.stdout.write('created')\n"
    )
    generated = password or secrets.token_urlsafe(12)
    result = manage("shell", "-c", code, env={**env, "K2_NEW_ADMIN_PASSWORD": generated}, capture=True)
    if "created" in result.stdout:
        if password:
            return "user `admin`, password from K2_ADMIN_PASSWORD"
        return f"user `admin`, password `{generated}` (printed once; set K2_ADMIN_PASSWORD to choose it)"
    if password:
        return "user `admin`, password from K2_ADMIN_PASSWORD"
    return "user `admin`, with the password printed on the first run (set K2_ADMIN_PASSWORD to reset it)"


def wait_healthy(base: str, timeout: float, processes: subprocess.Popen[bytes]) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        if processes.poll() is not None:
            fail("a platform process exited during start-up (its output is above)")
        try:
            response = httpx.get(f"{base}/healthz", timeout=5)
            last = response.json()
            if response.status_code == 200:
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    fail(f"the portal did not become healthy within {timeout:.0f}s; last /healthz: {last}")
    return last


def rows_written_metric(base: str) -> float | None:
    """The consumers' row counter as the portal's /metrics serves it (None when unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "k2_iceberg_rows_written" for sample in family.samples
               if sample.name == "k2_iceberg_rows_written_total")


def platform_env(env: dict[str, str], *, terminal: bool) -> dict[str, str]:
    """The environment of the processes honcho runs. Their stdout is honcho's pipe, so on their
    own they would log JSON; when `make run` is on a terminal (and K2_LOG_JSON is unset) they
    write readable console lines instead."""
    if terminal and not env.get("K2_LOG_JSON"):
        return {**env, "K2_LOG_JSON": "0"}
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bring the K2 platform up (Ctrl-C stops everything).")
    parser.add_argument("--exit-when-ready", action="store_true", help="stop again once everything is up")
    parser.add_argument("--no-sample", action="store_true", help="do not load the sample data")
    parser.add_argument("--web", default=None, help="host:port of the web server (default: K2_WEB_ADDR)")
    args = parser.parse_args(argv)

    try:
        cfg = load()
    except ConfigError as exc:
        fail(str(exc))
    metrics_dir = cfg.metrics_dir
    args.web = args.web or cfg.web_addr
    env = {**os.environ, "K2_WEB_ADDR": args.web, "K2_CONSUMER_SLOTS": str(cfg.consumer_slots), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "PYTHONUNBUFFERED": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    (BASE_DIR / "var").mkdir(exist_ok=True)
    say("K2: starting the platform")
    ensure_postgres(cfg.database_url)
    ensure_redis(cfg.redis_url)
    # Fresh multiprocess metric files per run (stale files from dead pids would be summed).
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    say("  migrating the database")
    manage("migrate", "--noinput", env=env, capture=True)
    login = ensure_admin(env)
    if cfg.uses_embedded_broker:
        manage("broker", "start", env=env)
    else:
        say(f"  using the Kafka cluster at {cfg.kafka_bootstrap}")
    manage("init_catalog", env=env)
    manage("create_topics", env=env)

    honcho = subprocess.Popen([str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile"],
                              cwd=BASE_DIR, env=platform_env(env, terminal=sys.stdout.isatty()))
    base = f"http://{args.web}"
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        wait_healthy(base, timeout=120, processes=honcho)
        summary_lines: list[str] = []
        manage("start_consumers", env=env)
        loaded = manage("run_summary", "--check-loaded", env=env, capture=True, check=False).returncode == 0
        if loaded and not args.no_sample:
            summary_lines.append("sample not loaded again: the tables already hold data from an earlier run "
                                 "(`manage.py load_sample` loads it anyway)")
        elif not args.no_sample:
            out = manage("load_sample", env=env, capture=True).stdout
            summary_lines += [f"sample → Kafka: {line.strip()}" for line in out.splitlines() if "rows read" in line]
        say("")
        say("=" * 72)
        say("K2 is up.")
        say(f"  Admin:     {base}/admin/   ({login})")
        say(f"  API docs:  {base}/api/v1/docs")
        say(f"  Metrics:   {base}/metrics")
        say(f"  Health:    {base}/healthz")
        say(f"  Kafka:     {cfg.bootstrap_servers}" + ("  (embedded Tansu: memory only, lost on restart)" if cfg.uses_embedded_broker else ""))
        say(f"  Warehouse: {cfg.warehouse}")
        for line in summary_lines:
            say(f"  {line}")
        out = manage("run_summary", "--base-url", base, env=env, capture=True, check=False).stdout.strip()
        for line in out.splitlines():
            if not line.startswith("{"):  # structured log lines went to the same stream
                say(f"  {line}")
        written = rows_written_metric(base)
        if written is not None:
            say(f"  /metrics: k2_iceberg_rows_written_total = {written:,.0f} "
                "(counted in the Celery worker processes, aggregated by the portal)")
        say("Ctrl-C stops everything.")
        say("=" * 72)
        if args.exit_when_ready:
            return 0
        while honcho.poll() is None and not stopping:
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGINT)
            try:
                honcho.wait(timeout=30)
            except subprocess.TimeoutExpired:
                honcho.kill()
        if cfg.uses_embedded_broker:
            manage("broker", "stop", env=env, check=False)
        say("K2 stopped.")


if __name__ == "__main__":
    raise SystemExit(main())
