"""manage.py init_catalog: the Iceberg namespace and tables, created when missing (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = ("Create the Iceberg namespace (K2_ICEBERG_NAMESPACE, default market_data) and its tables trades, quotes "
            "and reference_data in the catalog (K2_ICEBERG_CATALOG_URI, warehouse K2_WAREHOUSE) when they are "
            "missing. Safe to run again.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--namespace", default=None, help="namespace (default: K2_ICEBERG_NAMESPACE, market_data)")

    def handle(self, *args: Any, **opts: Any) -> None:
        from django.conf import settings

        from catalog.services import catalog_init
        from k2core.errors import ApplicationError

        try:
            tables = catalog_init(namespace=opts["namespace"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        namespace = opts["namespace"] or settings.K2.iceberg_namespace
        for name, table in tables.items():
            snapshot = table.current_snapshot()
            ready = "no snapshot yet" if snapshot is None else f"snapshot {snapshot.snapshot_id}"
            self.stdout.write(f"{namespace}.{name}: ready ({ready})")
