"""manage.py refresh_watermarks: per-partition low/high offsets of every Topic, from the broker."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion import producer_services
from ingestion.engine.topics import TopicError


class Command(BaseCommand):
    help = "Read each topic's per-partition low/high watermarks from the broker and store them on its Topic row."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("topics", nargs="*", help="topic names (default: every Topic row)")
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default: 10)")

    def handle(self, *args: Any, topics: list[str], timeout: float, **options: Any) -> None:
        try:
            found = producer_services.refresh_watermarks(topic_names=topics or None, timeout=timeout)
        except TopicError as exc:
            raise CommandError(str(exc)) from None
        if not found:
            self.stdout.write("no topics recorded yet: run `manage.py create_topics` first")
        for name, marks in found.items():
            total = sum(high - low for low, high in marks.values())
            self.stdout.write(f"{name}: {len(marks)} partitions, {total} messages between the watermarks")
