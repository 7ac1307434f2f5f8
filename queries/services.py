"""Writes and actions of the queries app: API keys (issue, revoke, authenticate, rate
limit), saved queries (validate, create, run) and the engine calls the API makes."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from k2core import metrics
from k2core.errors import Forbidden, TooManyRequests, Unauthenticated
from k2core.logging import get_logger
from queries import caches, selectors
from queries.engine import sandbox
from queries.engine.errors import BadQuery, QueryTimeout, TooManyRuns
from queries.models import ApiKey, SavedQuery

log = get_logger(__name__, component="queries")
KEY_PREFIX = "k2_"


class RateLimited(TooManyRequests):
    """Over the key's requests per minute (429, with Retry-After)."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"rate limit of {limit} requests per minute reached for this API key: retry in {retry_after} s",
                         headers={"Retry-After": str(retry_after)})
        self.limit = limit
        self.retry_after = retry_after


def _hash(raw: str) -> str:
    # API keys are 190+ bits of randomness: a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, name: str, scopes: Iterable[str], owner: Any = None,
                   rate_limit_per_minute: int = 600) -> tuple[ApiKey, str]:
    """Issue a key. Returns the row and the raw key, which is not stored and cannot be shown again."""
    scopes = sorted({str(getattr(s, "value", s)) for s in scopes})
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}: use {', '.join(ApiKey.Scope.values)}")
    prefix = secrets.token_hex(6)
    raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    key = ApiKey.objects.create(name=name, prefix=prefix, key_hash=_hash(raw), scopes=scopes, owner=owner,
                                rate_limit_per_minute=rate_limit_per_minute)
    log.info("api_key_issued", key_id=key.pk, prefix=prefix, scopes=scopes)
    return key, raw


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        log.info("api_key_revoked", key_id=api_key.pk, prefix=api_key.prefix)
    return api_key


class KeyRejected(Unauthenticated):
    """The key in the request is malformed, unknown or revoked (401); the message says which."""


class ScopeMissing(Forbidden):
    """A key without the endpoint's scope, or a user without its permission (403); the message says what."""


def _prefix_of(raw_key: str) -> str:
    parts = raw_key.split("_")
    if len(parts) < 3 or f"{parts[0]}_" != KEY_PREFIX:
        raise KeyRejected("the X-API-Key header does not hold a K2 API key (k2_<prefix>_<secret>): "
                          "copy the whole key an admin issued you")
    return parts[1]


def _usable(key: ApiKey | None, raw_key: str) -> ApiKey:
    """The key row if the raw key matches it and it may be used; KeyRejected saying why not."""
    if key is None or not hmac.compare_digest(key.key_hash, _hash(raw_key)):
        raise KeyRejected("this API key is not known: ask an admin to issue one (admin → API keys)")
    if key.revoked_at is not None:
        raise KeyRejected(f"this API key was revoked at {key.revoked_at.isoformat()}: ask an admin for a new one")
    if key.owner is not None and not key.owner.is_active:
        raise KeyRejected("this API key's owner is deactivated, so the key no longer works: ask an admin for a new one")
    return key


def api_key_scopes(*, raw_key: str) -> list[str]:
    """The scopes of a valid key (`api_key_authenticate`); PermissionError, saying why, for a
    rejected one. The schema registry (catalog) authorises writes with it through
    settings.K2_API_KEY_SCOPES, so the catalog app does not import this one."""
    try:
        return list(api_key_authenticate(raw_key=raw_key).scopes or [])
    except KeyRejected as exc:
        raise PermissionError(str(exc)) from None


def _touch(key: ApiKey) -> None:
    """Note when the key was last used, at most once a minute (a write per request would cost more
    than the rest of the authentication)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > dt.timedelta(seconds=60):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def api_key_authenticate(*, raw_key: str) -> ApiKey:
    """The key row for a raw key, read from Postgres (no cache); KeyRejected when it may not be used."""
    key = _usable(selectors.api_key_by_prefix(prefix=_prefix_of(raw_key)), raw_key)
    _touch(key)
    return key


# --- The API's hot path: key rows cached in the process (queries.caches says how revocation and
# deactivation still take effect at once), one Redis round trip per request ---------------------------


def _count_request(prefix: str, now: float) -> tuple[int | None, bytes | None]:
    """Count one request in the key's one-minute window and read the key generation, in one round
    trip (a non-transactional pipeline: INCR, EXPIRE, GET). (None, None) when Redis is unreachable:
    an outage of the limiter must not take the API down; it is logged and counted."""
    name = f"k2:ratelimit:{prefix}:{int(now // 60)}"  # the random prefix: unique even across databases
    try:
        pipe = _redis(settings.K2.redis_url).pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, 120)
        pipe.get(caches.KEY_GENERATION)
        count, _, generation = pipe.execute()
    except redis.RedisError as exc:
        log.warning("rate_limiter_unavailable", error=str(exc))
        metrics.ERRORS.labels(component="api", error="rate_limiter_unavailable").inc()
        return None, None
    return int(count), generation


def _enforce_limit(key: ApiKey, count: int | None, now: float) -> int:
    if count is None:
        return 0
    if count > key.rate_limit_per_minute:
        metrics.API_RATE_LIMITED.inc()
        raise RateLimited(key.rate_limit_per_minute, 60 - int(now % 60))
    return count


def api_key_admit(*, raw_key: str, scope: str, now: float | None = None) -> ApiKey:
    """An API request's key: known, matching, not revoked, owner active, holding `scope`, and within
    its rate limit (the request is counted). KeyRejected, ScopeMissing or RateLimited otherwise.
    Postgres is read only when this process has no row for the key younger than
    caches.KEY_CACHE_SECONDS or keys changed since (queries.caches); Redis once."""
    now = time.time() if now is None else now
    prefix = _prefix_of(raw_key)
    entry = caches.rows.get(prefix)
    from_cache = entry is not None and time.monotonic() - entry[1] < caches.KEY_CACHE_SECONDS
    key = entry[0] if from_cache else selectors.api_key_by_prefix(prefix=prefix)  # type: ignore[index]
    _has_scope(_usable(key, raw_key), scope)
    count, generation = _count_request(prefix, now)
    if from_cache and generation is not None and generation != entry[2]:  # type: ignore[index]
        key = selectors.api_key_by_prefix(prefix=prefix)  # keys changed somewhere: read the row again
        _has_scope(_usable(key, raw_key), scope)
        from_cache = False
    if not from_cache:
        caches.rows[prefix] = (key, time.monotonic(), generation)  # type: ignore[assignment]
    _enforce_limit(key, count, now)  # type: ignore[arg-type]
    _touch(key)  # type: ignore[arg-type]
    return key  # type: ignore[return-value]


def _has_scope(key: ApiKey, scope: str) -> None:
    if scope not in (key.scopes or []):
        raise ScopeMissing(f"this API key lacks the {scope!r} scope (it has: "
                           f"{', '.join(key.scopes) or 'none'}): ask an admin for a key with {scope!r}")


_redis = caches.redis_client


def rate_limit_check(*, api_key: ApiKey, now: float | None = None) -> int:
    """Count one request in the key's current one-minute window (Redis); RateLimited when over.
    If Redis is unreachable the request is let through and the failure is logged and counted:
    an outage of the limiter must not take the API down."""
    now = time.time() if now is None else now
    count, _ = _count_request(api_key.prefix, now)
    return _enforce_limit(api_key, count, now)


MAX_TIMEOUT_SECONDS = 600.0


def saved_query_validate(*, sql: str, parameters: Mapping[str, Any], row_limit: int | None = None,
                         timeout_seconds: float | None = None) -> None:
    """BadQuery/SandboxViolation when the SQL would be refused at run time (save-time check),
    or the row limit / timeout is outside what a run allows."""
    if row_limit is not None and not 1 <= row_limit <= sandbox.ROW_CAP:
        raise BadQuery(f"row_limit must be between 1 and {sandbox.ROW_CAP:,}", field="row_limit")
    if timeout_seconds is not None and not 0 < timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise BadQuery(f"timeout_seconds must be above 0 and at most {MAX_TIMEOUT_SECONDS:g}", field="timeout_seconds")
    sandbox.validate(sql, parameters or {})


@transaction.atomic
def saved_query_create(*, slug: str, name: str, sql: str, parameters: Mapping[str, Any] | None = None,
                       description: str = "", row_limit: int = 10_000, timeout_seconds: float = 30.0,
                       owner: Any = None) -> SavedQuery:
    saved_query_validate(sql=sql, parameters=parameters or {}, row_limit=row_limit, timeout_seconds=timeout_seconds)
    return SavedQuery.objects.create(slug=slug, name=name, sql=sql, parameters=dict(parameters or {}),
                                     description=description, row_limit=row_limit, timeout_seconds=timeout_seconds,
                                     owner=owner)


SAVED_QUERY_FIELDS = ("slug", "name", "sql", "parameters", "description", "row_limit", "timeout_seconds", "owner")


@transaction.atomic
def saved_query_update(*, saved_query: SavedQuery, **changes: Any) -> SavedQuery:
    """Change a saved query's fields; the result is validated as `saved_query_create` validates a
    new one (SQL in the sandbox, row limit, timeout), and nothing is written when it fails."""
    unknown = set(changes) - set(SAVED_QUERY_FIELDS)
    if unknown:
        raise BadQuery(f"not a field of a saved query: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    merged = {name: changes.get(name, getattr(saved_query, name)) for name in ("sql", "parameters", "row_limit",
                                                                               "timeout_seconds")}
    saved_query_validate(sql=merged["sql"], parameters=merged["parameters"] or {}, row_limit=merged["row_limit"],
                         timeout_seconds=merged["timeout_seconds"])
    for name, value in changes.items():
        setattr(saved_query, name, dict(value or {}) if name == "parameters" else value)
    saved_query.save()
    return saved_query


def runner_of(principal: Any) -> str:
    """Whose runs are counted together: an API key's prefix, or a session user's id."""
    if isinstance(principal, ApiKey):
        return f"key:{principal.prefix}"
    return f"user:{getattr(principal, 'pk', None)}"


class _RunSlot:
    """One of the runner's K2_QUERY_MAX_CONCURRENT_RUNS slots, counted in Redis for the life of a
    run (the key expires after the run's timeout, so a crashed process frees its slot). If Redis is
    unreachable the run goes ahead, logged and counted, as with the rate limiter."""

    def __init__(self, runner: str, limit: int, ttl: int) -> None:
        self.name, self.limit, self.ttl, self.held = f"k2:runs:{runner}", limit, ttl, False

    def __enter__(self) -> _RunSlot:
        try:
            client = _redis(settings.K2.redis_url)
            pipe = client.pipeline()
            pipe.incr(self.name)
            pipe.expire(self.name, self.ttl)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            log.warning("run_limiter_unavailable", error=str(exc))
            metrics.ERRORS.labels(component="api", error="run_limiter_unavailable").inc()
            return self
        self.held = True
        if count > self.limit:
            self.__exit__()
            raise TooManyRuns(f"{self.limit} saved-query run(s) of yours are already in flight: wait for one to finish "
                              "(K2_QUERY_MAX_CONCURRENT_RUNS)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            try:
                _redis(settings.K2.redis_url).decr(self.name)
            except redis.RedisError as error:
                log.warning("run_limiter_unavailable", error=str(error))


def _run(saved_query: SavedQuery, params: Mapping[str, Any] | None, as_of: int | dt.datetime | None,
         row_limit: int | None) -> sandbox.SandboxResult:
    engine = selectors.get_engine()
    limit = min(saved_query.row_limit, row_limit) if row_limit else saved_query.row_limit
    k2 = settings.K2
    started = time.perf_counter()
    try:
        result = sandbox.run(source=engine.source, sql=saved_query.sql, declarations=saved_query.parameters or {},
                             params=params, row_limit=limit, timeout_s=_timeout(saved_query), as_of=as_of,
                             config=engine.config, memory_limit=k2.query_memory_limit,
                             max_result_bytes=k2.query_max_result_bytes)
    except Exception as exc:
        metrics.QUERY_ERRORS.labels(query_type="saved", error=getattr(exc, "code", type(exc).__name__)).inc()
        raise
    metrics.QUERY_DURATION.labels(query_type="saved").observe(time.perf_counter() - started)
    metrics.QUERY_ROWS.labels(query_type="saved").inc(result.table.num_rows)
    log.info("saved_query_run", slug=saved_query.slug, rows=result.table.num_rows, truncated=result.truncated)
    return result


def _timeout(saved_query: SavedQuery) -> float:
    return min(float(saved_query.timeout_seconds), MAX_TIMEOUT_SECONDS)


def _slot(saved_query: SavedQuery, runner: str | None) -> _RunSlot:
    return _RunSlot(runner or "anonymous", settings.K2.query_max_concurrent_runs, int(_timeout(saved_query)) + 60)


def saved_query_run(*, saved_query: SavedQuery, params: Mapping[str, Any] | None = None,
                    as_of: int | dt.datetime | None = None, row_limit: int | None = None,
                    runner: str | None = None) -> sandbox.SandboxResult:
    """Run a saved query in the sandbox with the configured bounds (memory, result bytes, timeout,
    one of the `runner`'s concurrent-run slots)."""
    with _slot(saved_query, runner):
        return _run(saved_query, params, as_of, row_limit)


def saved_query_answer(*, saved_query: SavedQuery, encode: Callable[[sandbox.SandboxResult], bytes],
                       params: Mapping[str, Any] | None = None, as_of: int | dt.datetime | None = None,
                       row_limit: int | None = None, runner: str | None = None) -> tuple[sandbox.SandboxResult, bytes]:
    """Run and encode within the saved query's timeout: the encoding runs on a thread, and a
    caller whose result is not encoded by the deadline gets QueryTimeout. The run's slot is held
    until the encoding has finished, even when the caller has given up on it."""
    slot = _slot(saved_query, runner).__enter__()
    try:
        result = _run(saved_query, params, as_of, row_limit)
    except BaseException:
        slot.__exit__()
        raise
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["body"] = encode(result)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
        finally:
            slot.__exit__()

    worker = threading.Thread(target=work, name=f"encode-{saved_query.slug}", daemon=True)
    worker.start()
    worker.join(max(result.deadline - time.monotonic(), 0.0))
    if worker.is_alive():
        metrics.QUERY_ERRORS.labels(query_type="saved", error="timeout").inc()
        raise QueryTimeout(f"the query and the encoding of its {result.table.num_rows:,} rows took longer than its "
                           f"{_timeout(saved_query):g} s timeout: select fewer rows or columns, or ask for parquet/arrow")
    if "error" in box:
        raise box["error"]
    return result, box["body"]
