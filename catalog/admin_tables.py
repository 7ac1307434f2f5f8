"""An admin page listing the Iceberg tables: current snapshot, rows, data files, snapshots, manifests.

The tables live in the Iceberg catalog, not in Django models, so this is a plain staff-only
view inside the admin layout rather than a ModelAdmin. Wire it in `k2portal/urls.py`, before
the admin's own URLs:

    path("admin/catalog/iceberg-tables/", admin.site.admin_view(iceberg_tables_view), name="iceberg-tables"),
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from catalog.engine.iceberg import NAMESPACE


@dataclass(frozen=True)
class TableSummary:
    identifier: str
    snapshot_id: int | None
    committed_at: datetime | None
    rows: int
    data_files: int
    snapshots: int
    manifests: int = 0  # in the current snapshot: every commit rewrites their list, every query opens them
    error: str = ""


def table_summaries(*, catalog: object, namespace: str = NAMESPACE) -> list[TableSummary]:
    """Read from snapshot summaries (total-records, total-data-files) and the current manifest
    list: no data file is opened. Snapshots and manifests are what each commit's cost and each
    query's planning grow with; maintenance keeps both down."""
    found: list[TableSummary] = []
    try:
        identifiers = catalog.list_tables(namespace)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - shown on the page
        return [TableSummary(namespace, None, None, 0, 0, 0, f"{type(exc).__name__}: {exc}; run `manage.py init_catalog`")]
    for ident in sorted(identifiers):
        name = ".".join(ident)
        try:
            table = catalog.load_table(name)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001
            found.append(TableSummary(name, None, None, 0, 0, 0, f"{type(exc).__name__}: {exc}"))
            continue
        snap = table.current_snapshot()
        summary = snap.summary.additional_properties if snap and snap.summary else {}
        found.append(TableSummary(
            identifier=name, snapshot_id=snap.snapshot_id if snap else None,
            committed_at=datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC) if snap else None,
            rows=int(summary.get("total-records", 0)), data_files=int(summary.get("total-data-files", 0)),
            snapshots=len(table.metadata.snapshots), manifests=len(snap.manifests(table.io)) if snap else 0))
    return found


def iceberg_tables_view(request: HttpRequest) -> TemplateResponse:
    from catalog.selectors import get_catalog

    namespace = settings.K2.iceberg_namespace
    try:
        tables = table_summaries(catalog=get_catalog(), namespace=namespace)
    except Exception as exc:  # noqa: BLE001 - the catalog database itself is unreachable: say so on the page
        tables = [TableSummary(namespace, None, None, 0, 0, 0,
                               f"the Iceberg catalog is unreachable ({type(exc).__name__}: {exc}); check "
                               "K2_ICEBERG_CATALOG_URI (or DATABASE_URL) and that its database is running")]
    context = {**admin.site.each_context(request), "title": "Iceberg tables", "tables": tables}
    return TemplateResponse(request, "admin/catalog/iceberg_tables.html", context)
