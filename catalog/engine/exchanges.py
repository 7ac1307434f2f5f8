"""Exchanges: code, time zone and trading-calendar basics, as plain values for the engines.

The registry lives in Postgres (`catalog.models.Exchange`, seeded with asx, chix and nzx);
the Django shell reads it (`catalog.selectors.exchange`) and hands an `Exchange` to the
engines, which never import Django. `ASX` is the built-in default of engine callers that pass
none (ASX was the only exchange before the registry).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

CODE_PATTERN = re.compile(r"[a-z0-9]{1,16}")  # lower case in topics and the registry; upper case in records


class UnknownExchange(ValueError):
    """An exchange code that is not in the registry."""


@dataclass(frozen=True)
class Exchange:
    """One exchange: `code` (lower case, as in topic names), its IANA time zone, and the local
    times of its regular session and its weekend days (ISO weekdays, Monday = 1)."""

    code: str
    name: str
    timezone: str
    session_open: dt.time = dt.time(10, 0)
    session_close: dt.time = dt.time(16, 0)
    weekend_days: tuple[int, ...] = (6, 7)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if CODE_PATTERN.fullmatch(self.code) is None:
            raise ValueError(f"exchange code {self.code!r} is not 1 to 16 lower-case letters or digits")
        object.__setattr__(self, "zone", ZoneInfo(self.timezone))  # ZoneInfoNotFoundError for an unknown zone

    @property
    def record_code(self) -> str:
        """The code as written in records' `exchange` field (upper case: "ASX", "NZX")."""
        return self.code.upper()

    def is_trading_day(self, day: dt.date) -> bool:
        """A weekday of this exchange (public holidays are not modelled)."""
        return day.isoweekday() not in self.weekend_days

    def session(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The regular session of a local date as UTC instants [open, close)."""
        return (dt.datetime.combine(day, self.session_open, tzinfo=self.zone).astimezone(dt.UTC),
                dt.datetime.combine(day, self.session_close, tzinfo=self.zone).astimezone(dt.UTC))


ASX = Exchange(code="asx", name="Australian Securities Exchange", timezone="Australia/Sydney")


def lookup(registry: dict[str, Exchange], code: str) -> Exchange:
    """The registry's exchange of `code` (any case); UnknownExchange naming the known codes."""
    found = registry.get(code.strip().lower())
    if found is None:
        known = ", ".join(sorted(registry)) or "none"
        raise UnknownExchange(f"unknown exchange {code!r}: known exchanges are {known} (Admin → Exchanges adds one)")
    return found
