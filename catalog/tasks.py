"""Periodic table maintenance (Celery beat): compaction of small files and snapshot expiry.

A consumer commits a snapshot per batch, so a table collects thousands of small files and
snapshots a day; both slow every query (DuckDB reads every manifest entry) and every append
(pyiceberg copies the metadata per commit). This task keeps the tables maintained while the
consumers run: compaction is safe against concurrent appends (see catalog.engine.maintenance).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from celery import shared_task
from django.conf import settings

from catalog.engine.maintenance import compact_table, remove_orphan_files
from catalog.selectors import get_catalog, snapshot_policy
from k2core import metrics
from k2core.logging import get_logger

log = get_logger(__name__, component="maintenance")


def maintain_tables(*, namespace: str = "market_data", retention: dt.timedelta | None = None,
                    min_files: int = 8, data_types: tuple[str, ...] = ("trades", "quotes")) -> dict[str, Any]:
    """Compact every day partition holding `min_files` or more files, then expire snapshots older
    than the retention window (K2_SNAPSHOT_RETENTION_HOURS) and thin those older than
    K2_SNAPSHOT_FULL_DETAIL_MINUTES to one per K2_SNAPSHOT_THIN_MINUTES, keeping each group's
    offset snapshot; then delete the table's files nothing refers to any more once they are
    K2_ORPHAN_MIN_AGE_MINUTES old."""
    policy = snapshot_policy()
    if retention is not None:
        policy = dataclasses.replace(policy, retention=retention)
    orphan_age = dt.timedelta(minutes=settings.K2.orphan_min_age_minutes)
    catalog = get_catalog()
    report: dict[str, Any] = {}
    for data_type in data_types:
        identifier = f"{namespace}.{data_type}"
        results = compact_table(lambda identifier=identifier: catalog.load_table(identifier), min_files=min_files)
        compacted = [r for r in results if not r.skipped]
        for _ in compacted:
            metrics.ICEBERG_COMPACTIONS.labels(table=data_type).inc()
        expiry = policy.apply(catalog.load_table(identifier))
        orphans = remove_orphan_files(catalog.load_table(identifier), older_than=orphan_age)
        report[data_type] = {"days_compacted": len(compacted), "snapshots_expired": len(expiry.expired),
                             "snapshots_kept": expiry.kept, "orphan_files_removed": len(orphans.orphans),
                             "orphan_bytes_freed": orphans.bytes_freed}
    log.info("tables_maintained", **{k: str(v) for k, v in report.items()})
    return report


@shared_task(name="catalog.maintain_tables", ignore_result=True)
def maintain_tables_task() -> dict[str, Any]:
    return maintain_tables()
