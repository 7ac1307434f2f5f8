"""manage.py register_schemas: every data type's Avro schema under its `{topic}-value` subject."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.engine.registry import IncompatibleSchema
from ingestion import producer_services


class Command(BaseCommand):
    help = ("Register the trade, quote and reference_data schemas (catalog/schemas/*.avsc) with the schema registry "
            "(K2_SCHEMA_REGISTRY_URL, or the embedded one). Idempotent: an unchanged schema keeps its id.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--exchange", action="append", dest="exchanges", metavar="EXCHANGE", help="repeatable (default: asx)")
        parser.add_argument("--asset-class", default="equities")

    def handle(self, *args: Any, exchanges: list[str] | None, asset_class: str, **options: Any) -> None:
        try:
            ids = producer_services.register_schemas(asset_class=asset_class.lower(),
                                                     exchanges=tuple(e.lower() for e in exchanges or ["asx"]))
        except IncompatibleSchema as exc:
            raise CommandError(f"the registry refused a schema as incompatible with the registered one: {exc}") from None
        for subject, schema_id in ids.items():
            self.stdout.write(f"{subject}: schema id {schema_id}")
