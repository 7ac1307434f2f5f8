"""manage.py load_sample: the committed sample (or another generated set) into Kafka, after start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from ingestion.management.commands.generate_sample import SAMPLE_DIR


class Command(BaseCommand):
    help = ("Create the topics, register the schemas and produce reference_data.csv, quotes.csv and trades.csv from "
            "a sample directory (default: the committed ASX March 2014 sample). Used by `make run` after start-up.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dir", type=Path, default=SAMPLE_DIR, help="directory written by generate_sample")
        parser.add_argument("--exchange", default="asx")

    def handle(self, *args: Any, dir: Path, exchange: str, **options: Any) -> None:  # noqa: A002 - the option's name
        call_command("create_topics", stdout=self.stdout, stderr=self.stderr)
        call_command("register_schemas", stdout=self.stdout, stderr=self.stderr)
        for data_type in ("reference_data", "quotes", "trades"):
            path = dir / f"{data_type}.csv"
            if not path.is_file():
                raise CommandError(f"{path} is missing: run `manage.py generate_sample --out {dir}` first")
            call_command("produce", csv=path, data_type=data_type, exchange=exchange, no_progress=True,
                         stdout=self.stdout, stderr=self.stderr)
