"""manage.py consume: Kafka → Iceberg, one consumer process (ADR #003, #012, #013, #015, #016)."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog.engine.schemas import DATA_TYPES, parse_topic
from catalog.engine.writer import CatalogUnavailable, OffsetConflict
from ingestion import consumer_services
from ingestion.engine.consumer import ConsumerError, ConsumerStats
from ingestion.engine.limits import MAX_COMMIT_INTERVAL_MS


class Command(BaseCommand):
    help = ("Consume a Kafka topic (or every topic matching a pattern) into its Iceberg table. Runs until "
            "SIGTERM/SIGINT (daemon mode) or --max-messages; on a signal it finishes the batch in hand, writes it, "
            "commits the offsets, logs the final statistics and exits 0. Offsets are committed only after the "
            "Iceberg commit, and the table records them too, so a crash never loses or duplicates a message.")

    def add_arguments(self, parser: Any) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--topic", help="one topic, e.g. market.equities.trades.asx (the default mode, ADR #013)")
        which.add_argument("--topic-pattern", metavar="REGEX",
                           help=r"a regular expression of topic names, e.g. 'market\.equities\.trades\..*'")
        parser.add_argument("--data-type", choices=DATA_TYPES,
                            help="the table to write; default: taken from the topic name")
        parser.add_argument("--group", help="consumer group (default: k2-iceberg-writer-{data_type}, ADR #012)")
        parser.add_argument("--batch-size", type=int,
                            help="the most records per Iceberg commit: batches are sized from what is waiting, a few "
                                 "records at once when traffic is thin, up to this with a backlog "
                                 "(default: K2_CONSUMER_BATCH_SIZE)")
        parser.add_argument("--max-batch-ms", type=int,
                            help="flush a partial batch once its first message is this many ms old, from its Kafka "
                                 "timestamp (default: K2_CONSUMER_MAX_BATCH_MS, 500)")
        parser.add_argument("--min-commit-interval-ms", type=int, metavar="MS",
                            help="with thin traffic, commit at most this often: lower gives fresher data for more CPU "
                                 "per record and more snapshots; 0: whenever the last commit is done "
                                 "(default: K2_CONSUMER_MIN_COMMIT_INTERVAL_MS, 100)")
        parser.add_argument("--max-messages", type=int, help="stop after this many messages (batch mode); default: run until stopped")
        parser.add_argument("--from-beginning", action="store_true",
                            help="ignore the group's committed offsets and re-read each partition from its start; messages "
                                 "the table already holds are still skipped, so nothing is written twice")
        parser.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                            help="seconds between progress lines (default: 10)")
        parser.add_argument("--namespace", default=None, help="Iceberg namespace (default: K2_ICEBERG_NAMESPACE, market_data)")

    def handle(self, *args: Any, **opts: Any) -> None:
        data_type = opts["data_type"]
        if data_type is None:
            if not opts["topic"]:
                raise CommandError("--data-type is required with --topic-pattern (which table should the rows go to?)")
            try:
                data_type = parse_topic(opts["topic"])["data_type"]
            except ValueError as exc:
                raise CommandError(f"{exc}; pass --data-type to say which table to write") from None
        for name in ("batch_size", "max_batch_ms", "max_messages"):
            if opts[name] is not None and opts[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be a positive integer, got {opts[name]}")
        interval = opts["min_commit_interval_ms"]
        if interval is not None and not 0 <= interval <= MAX_COMMIT_INTERVAL_MS:
            raise CommandError(f"--min-commit-interval-ms must be an integer from 0 to {MAX_COMMIT_INTERVAL_MS} (ms), "
                               f"got {interval}")
        try:
            config = consumer_services.consumer_config(
                data_type=data_type, topics=(opts["topic"],) if opts["topic"] else None,
                topic_pattern=opts["topic_pattern"], group_id=opts["group"], batch_size=opts["batch_size"],
                max_batch_ms=opts["max_batch_ms"], min_commit_interval_ms=interval, max_messages=opts["max_messages"],
                from_beginning=opts["from_beginning"], namespace=opts["namespace"],
                progress_interval_s=opts["progress_interval"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        def progress(stats: ConsumerStats) -> None:
            lag = "?" if stats.lag is None else stats.lag
            self.stdout.write(f"consume {data_type}: {stats.messages} msgs ({stats.rate:,.0f} msg/s), "
                              f"{stats.rows_written} rows, lag {lag}, gaps {stats.gaps}, dlq {stats.dlq}")
            self.stdout.flush()

        try:
            engine = consumer_services.build_engine(config=config, heartbeat=progress)
        except Exception as exc:  # noqa: BLE001 - the catalog is opened first: one clear line
            raise CommandError(
                f"cannot reach the Iceberg catalog at {settings.K2.iceberg_catalog_uri} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); check K2_ICEBERG_CATALOG_URI (or DATABASE_URL) "
                "and that Postgres is running") from None
        try:
            with engine.signals_stop_gracefully():
                stats = engine.run()
        except (ConsumerError, CatalogUnavailable, OffsetConflict) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"consume {data_type} finished: {stats.messages} messages, {stats.rows_written} rows, "
                          f"{stats.batches} batches, {stats.gaps} gaps, {stats.dlq} to the DLQ, "
                          f"{stats.duplicates_skipped} duplicates skipped, {stats.duration:.1f} s")
        for what in stats.not_sent:  # a stop while the broker was down: nothing lost, but say so
            self.stdout.write(f"consume {data_type}: not sent: {what}")
        sys.stdout.flush()
