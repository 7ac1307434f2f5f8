"""Reads of the queries app: the query engine bound to the platform catalog, saved queries,
API keys."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.models import QuerySet

from catalog.engine.exchanges import Exchange, UnknownExchange, lookup
from queries import caches
from queries.engine.connection import EngineConfig
from queries.engine.errors import BadQuery, NotFound
from queries.engine.market import MarketQueries
from queries.engine.source import IcebergSource
from queries.models import ApiKey, SavedQuery

_engines: dict[tuple[int, str], MarketQueries] = {}
_lock = threading.Lock()


def namespace() -> str:
    """The Iceberg namespace queries read (K2_ICEBERG_NAMESPACE, default market_data)."""
    return settings.K2.iceberg_namespace


def engine_config() -> EngineConfig:
    """DuckDB threads and memory limit per query connection (K2_DUCKDB_THREADS, K2_DUCKDB_MEMORY_LIMIT)."""
    return EngineConfig(threads=settings.K2.duckdb_threads, memory_limit=settings.K2.duckdb_memory_limit)


class _LazyTail:
    """The fresh-read reader of settings.K2_STREAM_TAIL (ingestion's, so this app does not import
    that one), built on the first fresh read: the Kafka client and decoders are not made for
    queries that never ask."""

    def __init__(self) -> None:
        self._tail = None
        self._lock = threading.Lock()

    def _get(self):  # type: ignore[no-untyped-def]
        with self._lock:
            if self._tail is None:
                from django.utils.module_loading import import_string

                self._tail = import_string(settings.K2_STREAM_TAIL)()
            return self._tail

    @property
    def metadata_ttl_s(self) -> float:
        return self._get().metadata_ttl_s

    def read(self, data_type, table):  # type: ignore[no-untyped-def]
        return self._get().read(data_type, table)

    def close(self) -> None:
        with self._lock:
            if self._tail is not None:
                self._tail.close()
                self._tail = None


def close_fresh_readers() -> None:
    """Close the Kafka clients of this process's fresh reads (they are made again when asked)."""
    with _lock:
        for engine in _engines.values():
            if isinstance(engine.tail, _LazyTail):
                engine.tail.close()


def get_engine() -> MarketQueries:
    """One engine per (catalog, namespace) in this process; its DuckDB database is reused."""
    from catalog.selectors import get_catalog

    catalog = get_catalog()
    key = (id(catalog), namespace())
    with _lock:
        engine = _engines.get(key)
        if engine is None or getattr(engine.source, "catalog", None) is not catalog:  # ids can be reused after GC
            engine = _engines[key] = MarketQueries(IcebergSource(catalog, key[1]), engine_config(), tail=_LazyTail())
    return engine


def saved_query_list() -> QuerySet[SavedQuery]:
    return SavedQuery.objects.all()


def saved_query_get(*, slug: str) -> SavedQuery:
    try:
        return SavedQuery.objects.get(slug=slug)
    except SavedQuery.DoesNotExist:
        raise NotFound(f"no saved query with slug {slug!r}: list them at /api/v1/queries") from None


def api_key_by_prefix(*, prefix: str) -> ApiKey | None:
    return ApiKey.objects.filter(prefix=prefix).select_related("owner").first()


def _exchange_registry() -> dict[str, Exchange]:
    """The exchange registry, kept up to caches.EXCHANGES_CACHE_SECONDS (queries.caches says why)."""
    from catalog.selectors import exchanges

    cached = caches.exchanges[-1] if caches.exchanges else None
    if cached is not None and time.monotonic() - cached[0] < caches.EXCHANGES_CACHE_SECONDS:
        return cached[1]
    registry = exchanges()
    caches.exchanges[:] = [(time.monotonic(), registry)]
    return registry


def exchange(code: str) -> Exchange:
    """The registered exchange of an API request's `exchange=` (any case); 400 naming the known ones otherwise."""
    try:
        return lookup(_exchange_registry(), code)
    except UnknownExchange as exc:
        raise BadQuery(str(exc), field="exchange") from None
