"""manage.py start_consumers: create the default consumers and start them as Celery tasks (used by `make run`)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ingestion.consumer_services import start_default_consumers


class Command(BaseCommand):
    help = ("Create the default consumers (one per data type on the ASX topics) and start those not running, "
            "as Celery tasks on the `consumers` queue. A Celery worker must be running to pick them up.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--exchange", default="asx")
        parser.add_argument("--asset-class", default="equities")
        parser.add_argument("--data-types", default="trades,quotes,reference_data",
                            help="comma-separated data types to start (default: all three)")

    def handle(self, *args: Any, exchange: str, asset_class: str, data_types: str, **options: Any) -> None:
        wanted = tuple(d.strip() for d in data_types.split(",") if d.strip())
        for row in start_default_consumers(exchange=exchange, asset_class=asset_class, data_types=wanted):
            self.stdout.write(f"consumer {row.name}: {row.status} (group {row.group_id})")
