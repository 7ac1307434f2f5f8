"""manage.py create_topics: the declared market-data topics (and their .dlq topics), idempotently."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion import producer_services
from ingestion.engine.topics import TopicError


class Command(BaseCommand):
    help = ("Create K2's Kafka topics (market.{asset_class}.{data_type}.{exchange} and their .dlq topics) on the "
            "configured broker, and record them in the Topic table. Safe to run again: existing topics are kept as they are.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--partitions", type=int, default=None,
                            help="partitions per market-data topic (default: 30 for ASX, ADR #009). Existing topics are not changed.")
        parser.add_argument("--exchange", action="append", dest="exchanges", metavar="EXCHANGE",
                            help="exchange code, repeatable (default: asx)")
        parser.add_argument("--asset-class", default="equities", help="asset class in the topic name (default: equities)")
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default: 10)")

    def handle(self, *args: Any, partitions: int | None, exchanges: list[str] | None, asset_class: str,
               timeout: float, **options: Any) -> None:
        if partitions is not None and partitions < 1:
            raise CommandError("--partitions must be a positive integer")
        try:
            outcome = producer_services.create_topics(partitions=partitions, exchanges=tuple(e.lower() for e in exchanges or ["asx"]),
                                                      asset_class=asset_class.lower(), timeout=timeout)
        except TopicError as exc:
            raise CommandError(str(exc)) from None
        for name, state in outcome.items():
            self.stdout.write(f"{name}: {state}")
