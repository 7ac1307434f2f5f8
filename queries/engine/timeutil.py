"""Time ranges: UTC instants, or exchange-local dates turned into UTC ranges.

Iceberg partitions are UTC days; an ASX session (10:00–16:00 Sydney) spans two UTC dates,
so a trading date is the half-open UTC range [local midnight, next local midnight) in the
exchange's time zone. The exchange comes from the registry (`catalog.models.Exchange`) as a
plain `Exchange` value; ASX is the default.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from catalog.engine.exchanges import ASX, Exchange
from queries.engine.errors import BadQuery

DEFAULT_EXCHANGE = ASX


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC

    def days(self) -> list[tuple[dt.datetime, dt.datetime]]:
        """The range cut at UTC midnights: one piece per Iceberg day partition."""
        pieces = []
        cur = self.start
        while cur < self.end:
            nxt = min(dt.datetime.combine(cur.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC), self.end)
            pieces.append((cur, nxt))
            cur = nxt
        return pieces


def exchange_zone(exchange: Exchange = DEFAULT_EXCHANGE) -> ZoneInfo:
    return exchange.zone


def local_date_range(day: dt.date, exchange: Exchange = DEFAULT_EXCHANGE, days: int = 1) -> TimeRange:
    zone = exchange_zone(exchange)
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=days), dt.time(), tzinfo=zone)
    return TimeRange(start.astimezone(dt.UTC), end.astimezone(dt.UTC))


def utc(value: dt.datetime, field: str) -> dt.datetime:
    if value.tzinfo is None:
        raise BadQuery(f"{field}={value.isoformat()} has no UTC offset: send a UTC instant such as "
                       f"{value.isoformat()}Z, or use date= for an exchange-local trading date", field=field)
    return value.astimezone(dt.UTC)


def make_range(*, start: dt.datetime | None = None, end: dt.datetime | None = None,
               date: dt.date | None = None, end_date: dt.date | None = None,
               exchange: Exchange = DEFAULT_EXCHANGE, max_days: int | None = None) -> TimeRange:
    """The UTC range of a request: `start`/`end` UTC instants, or `date` [..`end_date`]
    exchange-local trading dates (inclusive). Exactly one of the two forms."""
    if date is not None:
        if start is not None or end is not None:
            raise BadQuery("send either date (an exchange-local trading date) or start/end (UTC instants), not both",
                           field="date")
        last = end_date or date
        if last < date:
            raise BadQuery(f"end_date {last} is before date {date}", field="end_date")
        rng = local_date_range(date, exchange, (last - date).days + 1)
    else:
        if start is None or end is None:
            raise BadQuery("a time range is required: send date=YYYY-MM-DD (exchange-local trading date) "
                           "or both start and end as UTC instants", field="start" if start is None else "end")
        rng = TimeRange(utc(start, "start"), utc(end, "end"))
        if rng.end <= rng.start:
            raise BadQuery(f"end ({rng.end.isoformat()}) must be after start ({rng.start.isoformat()})", field="end")
    if max_days is not None and rng.end - rng.start > dt.timedelta(days=max_days):
        raise BadQuery(f"the range spans more than {max_days} days: split it into smaller ranges", field="end")
    return rng


def sql_instant(value: dt.datetime) -> str:
    """A TIMESTAMPTZ literal of a validated datetime (never user text), so DuckDB can prune
    Iceberg day partitions at plan time."""
    return f"TIMESTAMPTZ '{value.astimezone(dt.UTC).isoformat(sep=' ')}'"
