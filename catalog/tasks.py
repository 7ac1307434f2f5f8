"""Periodic table maintenance (Celery beat, every K2_MAINTENANCE_INTERVAL_MINUTES): a thin
task around `catalog.services.tables_maintain`, the same pass `manage.py compact_tables` runs by hand."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="catalog.maintain_tables", ignore_result=True)
def maintain_tables_task() -> dict[str, Any]:
    from catalog.services import tables_maintain

    return tables_maintain()
