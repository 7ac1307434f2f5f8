"""Reads of the catalog app: the Iceberg catalog built from settings, tables and snapshots."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from pyiceberg.catalog.sql import SqlCatalog

from catalog.engine.iceberg import CatalogConfig, load_catalog


def catalog_config(namespace: str | None = None) -> CatalogConfig:
    k2 = settings.K2
    if namespace:
        return CatalogConfig(uri=k2.iceberg_catalog_uri, warehouse=k2.warehouse, namespace=namespace)
    return CatalogConfig(uri=k2.iceberg_catalog_uri, warehouse=k2.warehouse)


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
        return CachedRegistry(ConfluentRegistry(url))
    from catalog.registry import EmbeddedRegistry

    return CachedRegistry(EmbeddedRegistry())
