"""manage.py produce: one CSV file → its Kafka topic, Avro in the Confluent wire format (ADR #009, #010)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from k2core.datatypes import DATA_TYPES
from k2core.paths import BASE_DIR

LONG_FILE_BYTES = 5_000_000  # show a progress bar from about 50,000 rows


class Command(BaseCommand):
    help = ("Produce a CSV file of trades, quotes or reference data to market.{asset_class}.{data_type}.{exchange}. "
            "Rows are validated first; a bad row is rejected with its line number and reason, written to the DLQ "
            "file and counted, and the other rows are still produced. Ends with one summary line. Exit status: 0 when "
            "every row was acknowledged by the broker, 1 when any row was rejected or not acknowledged, 2 when the "
            "file could not be produced at all (not UTF-8 text, bad header, unknown exchange, broker unreachable, missing topic).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--csv", required=True, type=Path, metavar="FILE",
                            help="the CSV file; header row required, columns as in the data model (docs: data-model.md)")
        parser.add_argument("--data-type", required=True, choices=DATA_TYPES, help="which kind of rows the file holds")
        parser.add_argument("--exchange", required=True, help="exchange code from the exchange registry, e.g. asx or nzx (its time zone "
                                 "applies to timestamps without an offset; an unknown code exits 2)")
        parser.add_argument("--asset-class", default="equities", help="asset class in the topic name (default: equities)")
        parser.add_argument("--dlq-file", type=Path, metavar="PATH", default=None,
                            help="JSON-lines file for rejected rows (line, reason, error, original row) and undelivered "
                                 "messages (default: var/dlq/<file>-<data type>-<UTC time>.jsonl, created only if needed)")
        parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                            help="delivery timeout: a message the broker has not acknowledged by then is counted as failed (default: 30)")
        parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                            help="how long to wait for the broker to answer before giving up (default: 10)")
        parser.add_argument("--workers", type=int, default=1,
                            help="producer processes; rows are split by symbol, so each symbol keeps its order (default: 1; "
                                 "2 on a 2-core machine for large files, see docs/benchmarks.md)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on long files")

    def handle(self, *args: Any, csv: Path, data_type: str, exchange: str, asset_class: str, dlq_file: Path | None,
               timeout: float, connect_timeout: float, no_progress: bool, workers: int, **options: Any) -> None:
        # imported here, not at the top: `produce --help` needs none of the producer (issue #10)
        from tqdm import tqdm

        from ingestion import producer_services
        from ingestion.engine.producer import ProduceError

        if workers < 1:
            raise CommandError("--workers must be at least 1", returncode=2)
        if not csv.is_file():
            raise CommandError(f"--csv {csv}: no such file", returncode=2)
        if timeout <= 0 or connect_timeout <= 0:
            raise CommandError("--timeout and --connect-timeout must be positive", returncode=2)
        if dlq_file is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            dlq_file = BASE_DIR / "var" / "dlq" / f"{csv.stem}-{data_type}-{stamp}.jsonl"
        size = csv.stat().st_size
        bar = None
        if not no_progress and size >= LONG_FILE_BYTES:
            bar = tqdm(total=size, unit="B", unit_scale=True, desc=csv.name, file=self.stderr._out, disable=None)

        def progress(position: int) -> None:
            if bar is not None:
                bar.update(position - bar.n)

        try:
            result = producer_services.produce_file(
                csv_path=csv, data_type=data_type, exchange=exchange, asset_class=asset_class, dlq_path=dlq_file,
                delivery_timeout_ms=int(timeout * 1000), connect_timeout_s=connect_timeout, on_progress=progress,
                workers=workers)
        except ProduceError as exc:
            raise CommandError(f"{csv}: {exc}", returncode=2) from None
        finally:
            if bar is not None:
                bar.update(size - bar.n)
                bar.close()
        self.stdout.write(result.summary())
        problems = []
        if result.rejected:
            reasons = ", ".join(f"{reason} {n}" for reason, n in result.reject_reasons.most_common())
            problems.append(f"{result.rejected} row(s) rejected ({reasons})")
        if result.failed:
            errors = ", ".join(f"{name} {n}" for name, n in result.delivery_errors.most_common())
            problems.append(f"{result.failed} message(s) not acknowledged by the broker ({errors})")
        if problems:
            raise CommandError(f"{'; '.join(problems)}; details in {result.dlq_path}", returncode=1)
