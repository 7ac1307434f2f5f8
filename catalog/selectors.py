"""Reads of the catalog app: the Iceberg catalog built from settings, tables and snapshots."""

from __future__ import annotations

import datetime as dt
from functools import cache

from django.conf import settings
from pyiceberg.catalog.sql import SqlCatalog

from catalog.engine.iceberg import CatalogConfig, load_catalog
from catalog.engine.maintenance import SnapshotPolicy
from k2portal.config import K2Config


def catalog_config(namespace: str | None = None) -> CatalogConfig:
    k2 = settings.K2
    if namespace:
        return CatalogConfig(uri=k2.iceberg_catalog_uri, warehouse=k2.warehouse, namespace=namespace)
    return CatalogConfig(uri=k2.iceberg_catalog_uri, warehouse=k2.warehouse)


def snapshot_policy(k2: K2Config | None = None) -> SnapshotPolicy:
    """The snapshots a table keeps (K2_SNAPSHOT_*), applied by the maintenance task and by each
    consumer every K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS."""
    k2 = k2 or settings.K2
    return SnapshotPolicy(retention=dt.timedelta(hours=k2.snapshot_retention_hours),
                          full_detail=dt.timedelta(minutes=k2.snapshot_full_detail_minutes),
                          thin_interval=dt.timedelta(minutes=k2.snapshot_thin_minutes),
                          every_s=float(k2.consumer_snapshot_expiry_seconds))


@cache
def get_catalog() -> SqlCatalog:
    """One catalog per process (its SQLAlchemy engine pools connections)."""
    return load_catalog(catalog_config())


@cache
def get_registry():  # type: ignore[no-untyped-def]
    """The schema registry for this process: Confluent's when K2_SCHEMA_REGISTRY_URL is set, else
    the embedded one in Postgres; cached ids and parsed schemas either way."""
    from catalog.engine.registry import CachedRegistry, ConfluentRegistry

    url = settings.K2.schema_registry_url
    if url:
        return CachedRegistry(ConfluentRegistry(url, basic_auth=getattr(settings.K2, "schema_registry_basic_auth", None)))
    from catalog.registry import EmbeddedRegistry

    return CachedRegistry(EmbeddedRegistry())
