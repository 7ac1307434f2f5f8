"""`manage.py replay --to-topic T [--speed X]`: republish a time range of trades or quotes,
time-ordered across symbols and as of a snapshot, to a Kafka topic (backtests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from confluent_kafka import Producer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.engine import wire
from catalog.engine.schemas import parsed_schema, schema_text, subject_name
from catalog.selectors import get_registry
from k2core.kafka import PARTITIONER
from queries import selectors
from queries.api import parse_as_of
from queries.engine.errors import QueryError
from queries.engine.replay import paced, publish, replay_batches
from queries.engine.timeutil import make_range


class Command(BaseCommand):
    help = "Replay trades/quotes from Iceberg to a Kafka topic in event-time order, optionally paced."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to-topic", required=True, help="Kafka topic to publish to")
        parser.add_argument("--data-type", choices=["trades", "quotes"], default="trades")
        parser.add_argument("--date", type=dt.date.fromisoformat, help="exchange-local trading date (YYYY-MM-DD)")
        parser.add_argument("--end-date", type=dt.date.fromisoformat, help="last trading date, inclusive")
        parser.add_argument("--start", type=dt.datetime.fromisoformat, help="UTC instant, e.g. 2024-03-11T00:00:00+00:00")
        parser.add_argument("--end", type=dt.datetime.fromisoformat, help="UTC instant (exclusive)")
        parser.add_argument("--symbols", default="", help="comma-separated symbols (default: all)")
        parser.add_argument("--as-of", default=None, help="snapshot id or UTC instant (default: current)")
        parser.add_argument("--speed", type=float, default=0.0, help="event-time speed factor; 0 = as fast as possible")
        parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: settings)")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["speed"] < 0:
            raise CommandError("--speed must be 0 (as fast as possible) or a positive factor such as 1 or 60")
        try:
            rng = make_range(start=opts["start"], end=opts["end"], date=opts["date"], end_date=opts["end_date"])
            as_of = parse_as_of(opts["as_of"])
        except QueryError as exc:
            raise CommandError(exc.message) from None
        topic, data_type = opts["to_topic"], opts["data_type"]
        schema_id = get_registry().register(subject_name(topic), schema_text(data_type))
        schema = parsed_schema(data_type)
        producer = Producer({"bootstrap.servers": opts["bootstrap"] or settings.K2.bootstrap_servers,
                             "enable.idempotence": True, "linger.ms": 20, "partitioner": PARTITIONER})
        symbols = [s for s in opts["symbols"].split(",") if s] or None
        try:
            batches = replay_batches(selectors.get_engine(), data_type=data_type, rng=rng, symbols=symbols, as_of=as_of,
                                     on_day=lambda day: self.stderr.write(f"replaying {day:%Y-%m-%d} UTC"))
            sent = publish(paced(batches, speed=opts["speed"] or None), producer=producer, topic=topic,
                           data_type=data_type, encode=lambda record: wire.encode(schema_id, schema, record))
        except QueryError as exc:
            raise CommandError(exc.message) from None
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"replayed {sent} {data_type} to {topic}")
