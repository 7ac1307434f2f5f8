"""What the API keeps in the process between requests, and what makes a change take effect at once.

API keys.

Every API request needs its key's row (hash, scopes, revocation, owner, limit); reading it from
Postgres on each request cost about as much as the rest of the API's own work. So a process keeps
rows it read for up to KEY_CACHE_SECONDS. Revocation and deactivation still take effect at once:
any change to a key or a user (post_save/post_delete, connected in QueriesConfig.ready) drops this
process's rows and, once committed, increments a generation number in Redis; the rate-limit round
trip every request makes anyway reads that number, and a process that sees it changed reads the row
again before answering (queries.services.api_key_admit). Only a change that bypasses the model
signals (a queryset `.update()`, raw SQL) during a Redis outage, or a commit racing the read of a
row, falls back to the time bound: a cached row is never older than KEY_CACHE_SECONDS.

The exchange registry: a few rows that change when an admin adds or edits an exchange; every API
request needs it (the range's trading day, the engine's exchange), so a process keeps it for up to
EXCHANGES_CACHE_SECONDS (queries.selectors.exchange). A change in this process drops it at once
(post_save/post_delete on the Exchange model); other processes see it within that bound.

Kept free of heavy imports: it is loaded at start-up by every process, `manage.py help` included
(the signals are connected in QueriesConfig.ready).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

if TYPE_CHECKING:
    import redis

KEY_CACHE_SECONDS = 5.0
KEY_GENERATION = "k2:apikeys:generation"
rows: dict[str, tuple[Any, float, bytes | None]] = {}  # prefix → (ApiKey row, read at (monotonic), generation then)
EXCHANGES_CACHE_SECONDS = 5.0
exchanges: list[tuple[float, dict[str, Any]]] = []  # [(read at (monotonic), code → Exchange)]: 0 or 1 entry


@cache
def redis_client(url: str) -> redis.Redis:
    import redis  # here, not at the top: `manage.py help` would pay ~0.2 s for it

    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def keys_changed(update_fields: Any = None, **_signal: Any) -> None:
    """A key or a user changed: forget cached key rows here now, and in every process once committed.
    A save of only the last login or use (every admin login saves the user) changes nothing a key needs."""
    if update_fields is not None and set(update_fields) <= {"last_login", "last_used_at"}:
        return
    rows.clear()

    def bump() -> None:
        from redis import RedisError

        try:
            redis_client(settings.K2.redis_url).incr(KEY_GENERATION)
        except RedisError as exc:  # the time bound still holds
            from k2core.logging import get_logger

            get_logger(__name__, component="queries").warning("api_key_generation_unavailable", error=str(exc))

    transaction.on_commit(bump)


def exchanges_changed(**_signal: Any) -> None:
    """An exchange row changed: read the registry again at the next request."""
    exchanges.clear()
