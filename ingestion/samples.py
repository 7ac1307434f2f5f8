"""The last hour of each consumer's lag and rows/s, for the dashboard's sparklines.

Kept in Redis (a sorted set per consumer, scored by time): a sample is written at each
heartbeat, samples older than the window are pruned on every write, and the key expires when a
consumer stops reporting. Losing it loses an hour of sparkline, nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from django.conf import settings

from k2core.logging import get_logger

WINDOW_S = 3600
log = get_logger(__name__, component="dashboard")


def _prefix() -> str:
    """Per database, so two portals (or a test run) sharing one Redis never mix their consumers' samples."""
    default = f"k2:consumer-samples:{settings.DATABASES['default']['NAME']}:"
    return getattr(settings, "K2_SAMPLES_KEY_PREFIX", default)


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.K2.redis_url, socket_timeout=2, socket_connect_timeout=2)


def record(*, consumer_id: int, stats: Mapping[str, Any], now: float | None = None,
           client: redis.Redis | None = None) -> None:
    """Store one sample (lag, rows/s, messages) and prune what is older than the window.
    Never raises: a Redis outage must not stop a consumer."""
    now = time.time() if now is None else now
    sample = {"t": round(now, 3), "lag": stats.get("lag"), "rate": stats.get("rate"),
              "messages": stats.get("messages"), "rows": stats.get("rows_written")}
    key = f"{_prefix()}{consumer_id}"
    try:
        pipe = (client or _client()).pipeline(transaction=False)
        pipe.zadd(key, {json.dumps(sample, separators=(",", ":")): now})
        pipe.zremrangebyscore(key, "-inf", now - WINDOW_S)
        pipe.expire(key, WINDOW_S * 2)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("consumer_sample_not_stored", consumer_id=consumer_id, error=str(exc))


def series(*, consumer_ids: Iterable[int], now: float | None = None,
           client: redis.Redis | None = None) -> dict[int, list[dict[str, Any]]]:
    """The samples of the last hour per consumer, oldest first ({} for a consumer with none)."""
    now = time.time() if now is None else now
    ids = list(consumer_ids)
    if not ids:
        return {}
    pipe = (client or _client()).pipeline(transaction=False)
    for cid in ids:
        pipe.zrangebyscore(f"{_prefix()}{cid}", now - WINDOW_S, "+inf")
    return {cid: [json.loads(raw) for raw in rows] for cid, rows in zip(ids, pipe.execute(), strict=True)}
