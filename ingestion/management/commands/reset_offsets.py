"""manage.py reset_offsets: move a stopped consumer's group offsets (dry run unless --execute)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion.models import Consumer
from ingestion.offset_services import (
    OffsetResetError,
    describe_plans,
    parse_partition_offsets,
    plan_consumer_reset,
    reset_consumer_offsets,
)


class Command(BaseCommand):
    help = ("Reset a stopped consumer's Kafka group offsets: to the earliest or latest offset, to a time, or to "
            "an offset per partition. Prints per partition what would be re-read or skipped; changes nothing "
            "without --execute. A target behind what the Iceberg table already holds is refused (it would "
            "write rows twice) unless --rewrite: then those rows are deleted from the table and read again.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("consumer", help="the consumer's name (admin: Consumers)")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--to-earliest", action="store_true")
        target.add_argument("--to-latest", action="store_true")
        target.add_argument("--to-datetime", metavar="ISO8601", help="e.g. 2026-03-10T10:00:00+00:00 (a zone is required)")
        target.add_argument("--to-offset", metavar="P:O[,P:O…]", help="partition:offset pairs, e.g. 0:1200,1:980")
        parser.add_argument("--execute", action="store_true", help="commit the offsets (default: show the plan only)")
        parser.add_argument("--rewrite", action="store_true",
                            help="allow a target behind what the table holds: delete the table's rows from the "
                                 "target on and write them again from Kafka (each row once)")

    def handle(self, *args: Any, consumer: str, to_earliest: bool, to_latest: bool, to_datetime: str | None,
               to_offset: str | None, execute: bool, rewrite: bool, **options: Any) -> None:
        try:
            row = Consumer.objects.get(name=consumer)
        except Consumer.DoesNotExist:
            raise CommandError(f"no consumer named {consumer!r}") from None
        timestamp = None
        if to_datetime:
            try:
                timestamp = dt.datetime.fromisoformat(to_datetime)
            except ValueError:
                raise CommandError(f"--to-datetime {to_datetime!r} is not an ISO 8601 instant") from None
        mode = "earliest" if to_earliest else "latest" if to_latest else "timestamp" if to_datetime else "offsets"
        try:
            offsets = parse_partition_offsets(to_offset) if to_offset else None
            if execute:
                plans = reset_consumer_offsets(consumer=row, mode=mode, timestamp=timestamp, offsets=offsets,
                                               rewrite=rewrite)
            else:
                plans = plan_consumer_reset(consumer=row, mode=mode, timestamp=timestamp, offsets=offsets, rewrite=rewrite)
        except OffsetResetError as exc:
            raise CommandError(f"nothing changed: {exc}") from None
        self.stdout.write(f"{'partition':<40} {'committed':>10} {'in table':>10} {'target':>10}  effect")
        for p in plans:
            self.stdout.write(f"{p.topic + '[' + str(p.partition) + ']':<40} {_n(p.committed):>10} {_n(p.in_table):>10} "
                              f"{p.target:>10}  {p.effect}")
        if any(p.refused for p in plans):
            raise CommandError("nothing changed: " + describe_plans([p for p in plans if p.refused]))
        self.stdout.write("offsets committed" if execute else "dry run: nothing changed (add --execute to apply)")


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)
