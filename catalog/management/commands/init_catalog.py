"""manage.py init_catalog: the Iceberg namespace and tables, created when missing (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.engine.iceberg import NAMESPACE, ensure_tables, load_catalog
from catalog.selectors import catalog_config


class Command(BaseCommand):
    help = ("Create the Iceberg namespace market_data and its tables trades, quotes and reference_data in the SQL "
            "catalog (K2_ICEBERG_CATALOG_URI, warehouse K2_WAREHOUSE) when they are missing. Safe to run again.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--namespace", default=NAMESPACE, help=f"namespace (default: {NAMESPACE})")

    def handle(self, *args: Any, **opts: Any) -> None:
        config = catalog_config(opts["namespace"])
        try:
            tables = ensure_tables(load_catalog(config), opts["namespace"])
        except Exception as exc:  # noqa: BLE001 - one clear line for an unreachable catalog
            raise CommandError(f"cannot initialise the Iceberg catalog at {config.uri} ({type(exc).__name__}: {exc}); "
                               "check K2_ICEBERG_CATALOG_URI / DATABASE_URL and that Postgres is running, and for an "
                               "s3:// warehouse K2_WAREHOUSE, K2_S3_ENDPOINT and the AWS_* credentials") from None
        for name, table in tables.items():
            snapshot = table.current_snapshot()
            self.stdout.write(f"{opts['namespace']}.{name}: ready ({'no snapshot yet' if snapshot is None else f'snapshot {snapshot.snapshot_id}'})")
