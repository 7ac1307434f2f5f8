"""`manage.py compact_tables`: rewrite small files of day partitions into symbol-sorted
files (one overwrite commit per day, safe while consumers append), (--expire) expire and thin
snapshots as the maintenance task does, and (--remove-orphans) delete files nothing refers to.
The work is `catalog.services`'; the windows default to the settings the beat task uses."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.engine.datatypes import PARTITIONED_TYPES


class Command(BaseCommand):
    help = "Compact Iceberg day partitions and expire old snapshots."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--table", action="append", choices=list(PARTITIONED_TYPES),
                            help="table(s) to compact (default: trades and quotes)")
        parser.add_argument("--day", action="append", type=dt.date.fromisoformat,
                            help="UTC day partition (YYYY-MM-DD); default: every day with --min-files or more files")
        parser.add_argument("--min-files", type=int, default=2)
        parser.add_argument("--expire", action="store_true",
                            help="also expire snapshots older than --retention-days and thin older ones "
                                 "(K2_SNAPSHOT_FULL_DETAIL_MINUTES, K2_SNAPSHOT_THIN_MINUTES)")
        parser.add_argument("--retention-days", type=float, default=None,
                            help="time-travel window kept by --expire (default: K2_SNAPSHOT_RETENTION_HOURS, 7 days)")
        parser.add_argument("--remove-orphans", action="store_true",
                            help="then delete table files nothing refers to, older than --orphan-min-age-minutes")
        parser.add_argument("--orphan-min-age-minutes", type=float, default=None,
                            help="never delete a file younger than this (a commit may be writing it; "
                                 "default: K2_ORPHAN_MIN_AGE_MINUTES, 60)")
        parser.add_argument("--dry-run", action="store_true", help="with --remove-orphans: list, do not delete")

    def handle(self, *args: Any, **opts: Any) -> None:
        from catalog import services
        from k2core.errors import ApplicationError

        retention = dt.timedelta(days=opts["retention_days"]) if opts["retention_days"] is not None else None
        orphan_age = (dt.timedelta(minutes=opts["orphan_min_age_minutes"])
                      if opts["orphan_min_age_minutes"] is not None else None)
        if orphan_age is not None and orphan_age < dt.timedelta(0):
            raise CommandError("--orphan-min-age-minutes must not be negative")
        if retention is not None and retention < dt.timedelta(0):
            raise CommandError("--retention-days must not be negative")
        try:
            for data_type in opts["table"] or list(services.MAINTAINED):
                self._one(services, data_type, opts, retention, orphan_age)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None

    def _one(self, services: Any, data_type: str, opts: dict[str, Any], retention: dt.timedelta | None,
             orphan_age: dt.timedelta | None) -> None:
        from django.conf import settings

        identifier = f"{settings.K2.iceberg_namespace}.{data_type}"
        for r in services.table_compact(data_type=data_type, days=opts["day"], min_files=opts["min_files"]):
            what = f"skipped ({r.skipped})" if r.skipped else f"{r.files_before} → {r.files_after} files, {r.rows} rows"
            self.stdout.write(f"{identifier} {r.day}: {what}")
        if opts["expire"]:
            expiry = services.table_expire_snapshots(data_type=data_type, retention=retention)
            self.stdout.write(f"{identifier}: expired {len(expiry.expired)} snapshot(s), kept {expiry.kept}")
        if opts["remove_orphans"]:
            orphans = services.table_remove_orphans(data_type=data_type, older_than=orphan_age, dry_run=opts["dry_run"])
            verb = "would delete" if opts["dry_run"] else "deleted"
            self.stdout.write(f"{identifier}: {verb} {len(orphans.orphans)} orphan file(s), "
                              f"{orphans.bytes_freed:,} bytes; {orphans.too_young} unreferenced but too young")
            for path in orphans.orphans if opts["dry_run"] else []:
                self.stdout.write(f"  {path}")
