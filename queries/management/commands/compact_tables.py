"""`manage.py compact_tables`: rewrite small files of day partitions into symbol-sorted
files (one overwrite commit per day, safe while consumers append) and expire snapshots
older than the retention window, and (--remove-orphans) delete files nothing refers to."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.engine.maintenance import compact_days, compact_table, expire_snapshots, remove_orphan_files
from catalog.selectors import get_catalog
from k2core import metrics
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
        parser.add_argument("--remove-orphans", action="store_true",
                            help="then delete table files nothing refers to, older than --orphan-min-age-minutes")
        parser.add_argument("--orphan-min-age-minutes", type=float, default=60.0,
                            help="never delete a file younger than this (a commit may be writing it; default 60)")
        parser.add_argument("--dry-run", action="store_true", help="with --remove-orphans: list, do not delete")

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
            if opts["remove_orphans"]:
                if opts["orphan_min_age_minutes"] < 0:
                    raise CommandError("--orphan-min-age-minutes must not be negative")
                orphans = remove_orphan_files(load(), older_than=dt.timedelta(minutes=opts["orphan_min_age_minutes"]),
                                              dry_run=opts["dry_run"])
                verb = "would delete" if opts["dry_run"] else "deleted"
                self.stdout.write(f"{identifier}: {verb} {len(orphans.orphans)} orphan file(s), "
                                  f"{orphans.bytes_freed:,} bytes; {orphans.too_young} unreferenced but too young")
                for path in orphans.orphans if opts["dry_run"] else []:
                    self.stdout.write(f"  {path}")
