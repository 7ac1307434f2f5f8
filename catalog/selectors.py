"""Reads of the catalog app: the Iceberg catalog built from settings, tables and snapshots."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import TYPE_CHECKING

from django.conf import settings
from pyiceberg.catalog import Catalog

from catalog.engine.exchanges import ASX, Exchange, lookup
from catalog.engine.iceberg import CatalogConfig, load_catalog
from catalog.engine.maintenance import SnapshotPolicy

if TYPE_CHECKING:
    from k2portal.config import K2Config


def catalog_config(namespace: str | None = None) -> CatalogConfig:
    """The catalog from settings: K2_ICEBERG_CATALOG_URI (SQL or REST), K2_WAREHOUSE, the S3
    settings (K2_S3_*, AWS_*) when the warehouse is on S3, and K2_ICEBERG_NAMESPACE unless given."""
    k2 = settings.K2
    return CatalogConfig(uri=k2.iceberg_catalog_uri, warehouse=k2.warehouse, namespace=namespace or k2.iceberg_namespace,
                         s3=k2.s3)


def snapshot_policy(k2: K2Config | None = None) -> SnapshotPolicy:
    """The snapshots a table keeps (K2_SNAPSHOT_*), applied by the maintenance task and by each
    consumer every K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS."""
    k2 = k2 or settings.K2
    return SnapshotPolicy(retention=dt.timedelta(hours=k2.snapshot_retention_hours),
                          full_detail=dt.timedelta(minutes=k2.snapshot_full_detail_minutes),
                          thin_interval=dt.timedelta(minutes=k2.snapshot_thin_minutes),
                          every_s=float(k2.consumer_snapshot_expiry_seconds))


@cache
def get_catalog() -> Catalog:
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


def exchanges() -> dict[str, Exchange]:
    """The exchange registry (Postgres), code → plain value for the engines. Read on each call: a few rows.
    ASX is built in (the default exchange), so it is known even before the seeding migration ran."""
    from catalog.models import Exchange as ExchangeRow

    return {ASX.code: ASX} | {row.code: row.to_engine() for row in ExchangeRow.objects.all()}


def exchange(code: str) -> Exchange:
    """One registered exchange (any case); UnknownExchange naming the known codes otherwise."""
    return lookup(exchanges(), code)
