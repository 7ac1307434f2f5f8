"""Writes of the catalog app: the Iceberg tables created, and kept maintained (small files
compacted, snapshots expired and thinned, orphan files deleted), with this deployment's
settings. The Celery beat task (`catalog.tasks`) and the management commands (`init_catalog`,
`compact_tables`) are thin callers of these functions, so both apply the same rules.

A consumer commits a snapshot per batch, so a table collects thousands of small files and
snapshots a day; both slow every query (DuckDB reads every manifest entry) and every append
(pyiceberg rewrites the metadata per commit). Compaction is safe against concurrent appends
(see catalog.engine.maintenance).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.conf import settings
from pyiceberg.table import Table

from catalog.engine.datatypes import PARTITIONED_TYPES
from catalog.engine.iceberg import ensure_tables, load_catalog
from catalog.engine.maintenance import CompactionResult, ExpiryResult, OrphanResult, compact_days, compact_table
from catalog.engine.maintenance import remove_orphan_files as _remove_orphan_files
from catalog.selectors import catalog_config, get_catalog, snapshot_policy
from k2core import metrics
from k2core.errors import Invalid, Unavailable
from k2core.logging import get_logger

log = get_logger(__name__, component="maintenance")
MAINTAINED = PARTITIONED_TYPES  # reference_data (unpartitioned) is small and rewritten rarely: nothing to compact


def _namespace(namespace: str | None) -> str:
    return namespace or settings.K2.iceberg_namespace


def catalog_init(*, namespace: str | None = None) -> dict[str, Table]:
    """The namespace (K2_ICEBERG_NAMESPACE unless given) and its tables, created when missing
    (idempotent); Unavailable naming the settings to check when the catalog cannot be reached."""
    config = catalog_config(_namespace(namespace))
    try:
        return ensure_tables(load_catalog(config), config.namespace)
    except Exception as exc:  # noqa: BLE001 - one clear line for an unreachable catalog
        raise Unavailable(f"cannot initialise the Iceberg catalog at {config.uri} ({type(exc).__name__}: {exc}); "
                          "check K2_ICEBERG_CATALOG_URI / DATABASE_URL and that Postgres is running, and for an "
                          "s3:// warehouse K2_WAREHOUSE, K2_S3_ENDPOINT and the AWS_* credentials") from None


def _loader(identifier: str) -> Any:
    catalog = get_catalog()
    return lambda: catalog.load_table(identifier)


def table_compact(*, data_type: str, namespace: str | None = None, days: list[dt.date] | None = None,
                  min_files: int = 2) -> list[CompactionResult]:
    """Rewrite the day partitions (`days`, or every day with `min_files` or more files) into
    symbol-sorted files, one commit per pass; counted in k2_iceberg_compactions_total."""
    load = _loader(f"{_namespace(namespace)}.{data_type}")
    results = compact_days(load, days, min_files=min_files) if days else compact_table(load, min_files=min_files)
    for _ in (r for r in results if not r.skipped):
        metrics.ICEBERG_COMPACTIONS.labels(table=data_type).inc()
    return results


def table_expire_snapshots(*, data_type: str, namespace: str | None = None,
                           retention: dt.timedelta | None = None) -> ExpiryResult:
    """Expire snapshots older than the retention window (K2_SNAPSHOT_RETENTION_HOURS unless
    given) and thin older ones (K2_SNAPSHOT_FULL_DETAIL_MINUTES, K2_SNAPSHOT_THIN_MINUTES),
    keeping each group's offset snapshot: the policy each consumer applies to its own table."""
    if retention is not None and retention < dt.timedelta(0):
        raise Invalid("the retention window must not be negative", field="retention")
    policy = snapshot_policy()
    if retention is not None:
        policy = dataclasses.replace(policy, retention=retention)
    return policy.apply(_loader(f"{_namespace(namespace)}.{data_type}")())


def table_remove_orphans(*, data_type: str, namespace: str | None = None, older_than: dt.timedelta | None = None,
                         dry_run: bool = False) -> OrphanResult:
    """Delete the table's files nothing refers to any more once they are `older_than`
    (K2_ORPHAN_MIN_AGE_MINUTES unless given), so a commit still being written is never touched."""
    if older_than is None:
        older_than = dt.timedelta(minutes=settings.K2.orphan_min_age_minutes)
    if older_than < dt.timedelta(0):
        raise Invalid("the minimum orphan age must not be negative", field="older_than")
    return _remove_orphan_files(_loader(f"{_namespace(namespace)}.{data_type}")(), older_than=older_than,
                                dry_run=dry_run)


def tables_maintain(*, namespace: str | None = None, retention: dt.timedelta | None = None, min_files: int = 8,
                    data_types: tuple[str, ...] = MAINTAINED) -> dict[str, Any]:
    """The beat task's pass over each table: compact every day partition holding `min_files` or
    more files, expire and thin snapshots, then delete orphan files (all with the settings'
    windows unless given). Returns what was done per table."""
    report: dict[str, Any] = {}
    for data_type in data_types:
        compacted = [r for r in table_compact(data_type=data_type, namespace=namespace, min_files=min_files)
                     if not r.skipped]
        expiry = table_expire_snapshots(data_type=data_type, namespace=namespace, retention=retention)
        orphans = table_remove_orphans(data_type=data_type, namespace=namespace)
        report[data_type] = {"days_compacted": len(compacted), "snapshots_expired": len(expiry.expired),
                             "snapshots_kept": expiry.kept, "orphan_files_removed": len(orphans.orphans),
                             "orphan_bytes_freed": orphans.bytes_freed}
    log.info("tables_maintained", **{k: str(v) for k, v in report.items()})
    return report
