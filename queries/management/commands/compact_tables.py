"""`manage.py compact_tables`: rewrite small files of day partitions into symbol-sorted
files (one overwrite commit per day, safe while consumers append) and expire snapshots
older than the retention window."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from catalog.engine.maintenance import compact_days, compact_table, expire_snapshots
from catalog.selectors import get_catalog
from k2portal import metrics
from queries import selectors


class Command(BaseCommand):
    help = "Compact Iceberg day partitions and expire old snapshots."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--table", action="append", choices=["trades", "quotes"],
                            help="table(s) to compact (default: trades and quotes)")
        parser.add_argument("--day", action="append", type=dt.date.fromisoformat,
                            help="UTC day partition (YYYY-MM-DD); default: every day with --min-files or more files")
        parser.add_argument("--min-files", type=int, default=2)
        parser.add_argument("--expire", action="store_true", help="also expire snapshots older than --retention-days")
        parser.add_argument("--retention-days", type=float, default=7.0,
                            help="time-travel window kept by --expire (default 7 days)")

    def handle(self, *args: Any, **opts: Any) -> None:
        catalog, namespace = get_catalog(), selectors.namespace()
        for data_type in opts["table"] or ["trades", "quotes"]:
            identifier = f"{namespace}.{data_type}"

            def load(identifier: str = identifier) -> Any:
                return catalog.load_table(identifier)

            if opts["day"]:
                results = compact_days(load, opts["day"], min_files=opts["min_files"])
            else:
                results = compact_table(load, min_files=opts["min_files"])
            for r in results:
                if not r.skipped:
                    metrics.ICEBERG_COMPACTIONS.labels(table=data_type).inc()
                what = f"skipped ({r.skipped})" if r.skipped else f"{r.files_before} → {r.files_after} files, {r.rows} rows"
                self.stdout.write(f"{identifier} {r.day}: {what}")
            if opts["expire"]:
                expiry = expire_snapshots(load(), retention=dt.timedelta(days=opts["retention_days"]))
                self.stdout.write(f"{identifier}: expired {len(expiry.expired)} snapshot(s), kept {expiry.kept}")
