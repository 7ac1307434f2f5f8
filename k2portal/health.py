"""/healthz: one check per dependency, 200 when all pass, 503 naming the failing ones."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from k2core.metrics import HEALTH_CHECK_FAILURES

TIMEOUT_S = 2.0


def check_database() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    return "ok"


def check_redis() -> str:
    import redis

    client = redis.Redis.from_url(settings.K2.redis_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_kafka() -> str:
    from confluent_kafka.admin import AdminClient

    address = settings.K2.bootstrap_servers
    md = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": int(TIMEOUT_S * 1000)}).list_topics(timeout=TIMEOUT_S)
    return f"ok ({len(md.brokers)} broker(s) at {address})"


def check_catalog() -> str:
    from catalog.selectors import get_catalog

    namespaces = get_catalog().list_namespaces()
    return f"ok ({len(namespaces)} namespace(s))"


def check_warehouse() -> str:
    """A local warehouse: write and delete a probe file. Elsewhere (s3://): write, stat and delete
    a probe object through pyiceberg's FileIO with the settings the writers use (endpoint,
    region, path style, credentials), so a missing bucket, a wrong key or an unreachable endpoint all fail here."""
    warehouse = settings.K2.warehouse
    parsed = urlparse(warehouse)
    if parsed.scheme != "file":
        from pyiceberg.io import load_file_io

        s3 = getattr(settings.K2, "s3", None)
        io = load_file_io(s3.fileio_properties() if s3 else {}, warehouse)
        probe_uri = f"{warehouse.rstrip('/')}/.healthz-{uuid.uuid4().hex}"
        with io.new_output(probe_uri).create(overwrite=True) as out:
            out.write(b"ok")
        if not io.new_input(probe_uri).exists():
            raise OSError(f"wrote {probe_uri} but cannot read it back")
        io.delete(probe_uri)
        return "ok"
    path = Path(parsed.path)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".healthz-{uuid.uuid4().hex}"
    probe.write_bytes(b"ok")
    probe.unlink()
    return "ok"


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "redis": check_redis,
    "kafka": check_kafka,
    "iceberg_catalog": check_catalog,
    "warehouse": check_warehouse,
}


def healthz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    failing: list[str] = []
    for name, check in CHECKS.items():
        start = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception as exc:  # noqa: BLE001 - each failure is reported, not raised
            detail, ok = f"{type(exc).__name__}: {exc}", False
            failing.append(name)
            HEALTH_CHECK_FAILURES.labels(dependency=name).inc()
        results[name] = {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - start) * 1000, 1)}
    body = {"status": "ok" if not failing else "failing", "failing": failing, "checks": results}
    return JsonResponse(body, status=200 if not failing else 503)
