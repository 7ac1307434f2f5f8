"""Parsing and validating the producer's CSV files (data model, "CSV input") into Avro records.

Plain Python, no Django. One `RowParser` per file: the header is checked once (missing or
unknown columns stop the file before anything is produced), then each row becomes either a
record dict ready for Avro encoding or a `RowError` that names the line and what was wrong,
so the caller can keep it in the DLQ file and carry on with the good rows.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from catalog.engine.datatypes import SEQUENCE_COLUMN, spec
from catalog.engine.exchanges import ASX

REQUIRED = {
    "trades": ("symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue"),
    "quotes": ("symbol", "company_id", "exchange_timestamp", "bid_price", "bid_volume", "ask_price", "ask_volume"),
    "reference_data": ("company_id", "symbol", "company_name"),
}
OPTIONAL = {
    "trades": ("buyer_id", "sequence_number", "exchange"),
    "quotes": ("sequence_number", "exchange"),
    "reference_data": ("sector", "market_cap", "last_updated"),
}
# Exchange-local time for timestamps written without an offset (data model): the registry's time zone
# (catalog.models.Exchange) is passed in; this built-in one serves callers that pass none.
EXCHANGE_TZ = {ASX.code: ASX.timezone}

# A symbol: 1 to 12 of upper-case ASCII letters, digits and dots (BHP, CBA, BRK.B, 360): the one documented
# pattern. Lower case, spaces, control characters (NUL) and longer values are rejected with their line.
SYMBOL_PATTERN = re.compile(r"[A-Z0-9.]{1,12}")
LONG_MAX = 2**63 - 1  # Avro long / Iceberg long
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
# UTF-32 before UTF-16: the UTF-32 LE mark starts with the UTF-16 LE one.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_SNIFF_BYTES = 65_536

_MAX_UNSCALED = 10**18  # decimal(18,6): at most 18 digits in all
_SCALE = Decimal("0.000001")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HeaderError(ValueError):
    """The file's header cannot be used: a required column is missing, or a column is unknown."""


class FileEncodingError(ValueError):
    """The file is not UTF-8 text (UTF-16/32, binary): refused before anything is produced."""


def check_encoding(head: bytes) -> None:
    """FileEncodingError when the file's first bytes show it is not UTF-8 text (a UTF-8 BOM is fine)."""
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            raise FileEncodingError(
                f"the file is {name} text (it starts with a {name} byte order mark); K2 reads UTF-8 CSV files: convert it "
                f"first, e.g. `iconv -f {name} -t UTF-8 in.csv > out.csv`")
    head = head.removeprefix(codecs.BOM_UTF8)
    first = head.split(b"\n", 1)[0]
    if b"\x00" in first:
        raise FileEncodingError("the header (line 1) holds NUL bytes: the file is binary, or UTF-16/UTF-32 without a "
                                "byte order mark, not UTF-8 text; K2 reads UTF-8 CSV files")
    try:
        first.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(first) == len(head) == _SNIFF_BYTES and exc.start >= len(first) - 3:
            return  # a multi-byte character cut by the sniffing window, not a bad byte
        raise FileEncodingError(
            f"the header (line 1) is not UTF-8 text (byte 0x{first[exc.start]:02X} at offset {exc.start}): the file is "
            "binary or in another encoding; K2 reads UTF-8 CSV files") from None


def open_csv(path: Path) -> IO[str]:
    """The file as text for `csv.reader`, after `check_encoding` on its first bytes.

    A UTF-8 byte order mark is skipped. A byte that is not UTF-8 further on does not stop the file:
    it is decoded as a lone surrogate (surrogateescape), and the row holding it is rejected with its
    line (`RowParser.parse`, reason `bad_encoding`), so the other rows are still produced."""
    with open(path, "rb") as raw:
        check_encoding(raw.read(_SNIFF_BYTES))
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")  # noqa: SIM115 - the caller closes it


def undecodable(fields: list[str]) -> tuple[int, int] | None:
    """(field index, byte) of the first byte that was not UTF-8 (see `open_csv`), or None."""
    for i, value in enumerate(fields):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = ord(value[exc.start])
            return i, (char - 0xDC00 if 0xDC80 <= char <= 0xDCFF else char)
    return None


def printable(text: str) -> str:
    """Text as read (`open_csv`), with each byte that was not UTF-8 shown as \\xNN: fit for a JSON DLQ line."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class RowError(Exception):
    """One rejected row: its line in the file, a short reason code (a metric label) and the message."""

    line: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class _Bad(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_header(data_type: str, header: list[str]) -> dict[str, int]:
    """Column name → index. HeaderError naming every missing, unknown or repeated column."""
    if data_type not in REQUIRED:
        raise HeaderError(f"unknown data type {data_type!r}: expected trades, quotes or reference_data")
    names = [h.strip() for h in header]
    allowed = set(REQUIRED[data_type]) | set(OPTIONAL[data_type])
    problems = []
    missing = [c for c in REQUIRED[data_type] if c not in names]
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    unknown = [c for c in names if c not in allowed]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        expected = ",".join(REQUIRED[data_type]) + "".join(f"[,{c}]" for c in OPTIONAL[data_type])
        raise HeaderError(f"{'; '.join(problems)}. A {data_type} file has the header {expected} (any order)")
    return {name: i for i, name in enumerate(names)}


def _text(value: str, column: str, reason: str) -> str:
    if not value.strip():
        raise _Bad(reason, f"{column} is empty")
    return value


def _symbol(value: str) -> str:
    if not value.strip():
        raise _Bad("empty_symbol", "symbol is empty")
    if SYMBOL_PATTERN.fullmatch(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise _Bad("bad_symbol", f"symbol {shown!r} is not 1 to 12 upper-case letters, digits or dots "
                                 f"(pattern ^[A-Z0-9.]{{1,12}}$)")
    return value


def _int(value: str, column: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _Bad("bad_integer", f"{column} {value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        reason = "negative_volume" if "volume" in column else "out_of_range"
        raise _Bad(reason, f"{column} {number} is below {minimum}")
    if maximum is not None and number > maximum:
        raise _Bad("out_of_range", f"{column} {number} is above {maximum}")
    return number


def _price(value: str, column: str) -> Decimal:
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise _Bad("bad_price", f"{column} {value!r} is not a decimal number") from None
    if not price.is_finite():
        raise _Bad("bad_price", f"{column} {value!r} is not a finite number")
    if price <= 0:
        raise _Bad("bad_price", f"{column} {value} is not positive")
    if price.as_tuple().exponent < -6:  # type: ignore[operator]
        raise _Bad("bad_price", f"{column} {value} has more than 6 decimal places (prices are decimal(18,6))")
    if price * 1_000_000 >= _MAX_UNSCALED:
        raise _Bad("bad_price", f"{column} {value} does not fit decimal(18,6)")
    return price.quantize(_SCALE)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp(value: str, column: str, tz: ZoneInfo) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad("bad_timestamp", f"{column} {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return to_micros(moment)


class RowParser:
    """Turns the rows of one CSV file into Avro-ready records for one exchange.

    Timestamps become UTC microseconds, prices Decimals quantized to 6 places. When the file
    has no `sequence_number` column, numbers are assigned per stream (exchange, data type,
    symbol) in file order, starting at `first_sequence`, counting accepted rows only, so a
    rejected row does not look like a gap downstream.
    """

    def __init__(self, *, data_type: str, exchange: str, header: list[str], first_sequence: int = 1,
                 now_micros: Callable[[], int] | None = None, timezone: str | None = None) -> None:
        self.data_type = data_type
        self.exchange = exchange.upper()
        self.columns = check_header(data_type, header)
        self.width = len(header)
        self.names = [h.strip() for h in header]
        zone = timezone or EXCHANGE_TZ.get(exchange.lower())
        if zone is None:
            raise HeaderError(f"no time zone known for exchange {exchange!r}: pass the exchange registry's "
                              f"(built in: {', '.join(EXCHANGE_TZ)})")
        self.tz = ZoneInfo(zone)
        self.assign_sequence = spec(data_type).sequenced and SEQUENCE_COLUMN not in self.columns
        self.first_sequence = first_sequence
        self.next_sequence: dict[str, int] = {}
        self._now = now_micros or (lambda: to_micros(datetime.now(UTC)))
        self._parse: Callable[[list[str]], dict[str, Any]] = {
            "trades": self._trade, "quotes": self._quote, "reference_data": self._reference,
        }[data_type]

    def parse(self, fields: list[str], line: int) -> dict[str, Any]:
        """The record for one row; RowError(line, reason, message) when the row is unusable."""
        bad_byte = undecodable(fields)
        if bad_byte is not None:
            index, byte = bad_byte
            where = f"field {index + 1}" + (f" ({self.names[index]})" if index < len(self.names) else "")
            raise RowError(line, "bad_encoding", f"{where} holds byte 0x{byte:02X}, which is not UTF-8 (files are read as UTF-8)")
        if len(fields) != self.width:
            reason = "missing_column" if len(fields) < self.width else "extra_column"
            raise RowError(line, reason, f"has {len(fields)} field(s), the header has {self.width}")
        try:
            record = self._parse(fields)
        except _Bad as bad:
            raise RowError(line, bad.reason, bad.message) from None
        if self.assign_sequence:
            symbol = record["symbol"]
            seq = self.next_sequence.get(symbol, self.first_sequence)
            record["sequence_number"] = seq
            self.next_sequence[symbol] = seq + 1
        return record

    def _get(self, fields: list[str], column: str) -> str | None:
        index = self.columns.get(column)
        return None if index is None else fields[index]

    def _exchange(self, fields: list[str]) -> str:
        value = self._get(fields, "exchange")
        if value is None or value == "":
            return self.exchange
        if value.upper() != self.exchange:
            raise _Bad("wrong_exchange", f"exchange {value!r} does not match --exchange {self.exchange.lower()}")
        return self.exchange

    def _sequence(self, fields: list[str]) -> int | None:
        value = self._get(fields, "sequence_number")
        return None if value is None else _int(value, "sequence_number", minimum=0, maximum=LONG_MAX)

    def _tick_head(self, f: list[str]) -> dict[str, Any]:
        """The columns every tick row (a trade, a quote) starts with."""
        c = self.columns
        return {
            "symbol": _symbol(f[c["symbol"]]),
            "company_id": _int(f[c["company_id"]], "company_id", minimum=INT_MIN, maximum=INT_MAX),
            "exchange": self._exchange(f),
            "exchange_timestamp": _timestamp(f[c["exchange_timestamp"]], "exchange_timestamp", self.tz),
        }

    def _trade(self, f: list[str]) -> dict[str, Any]:
        c = self.columns
        buyer = self._get(f, "buyer_id")
        return {
            **self._tick_head(f),
            "price": _price(f[c["price"]], "price"),
            "volume": _int(f[c["volume"]], "volume", minimum=0, maximum=LONG_MAX),
            "qualifiers": _int(f[c["qualifiers"]], "qualifiers", minimum=INT_MIN, maximum=INT_MAX),
            "venue": f[c["venue"]],
            "buyer_id": buyer or None,
            "ingestion_timestamp": self._now(),
            "sequence_number": self._sequence(f),
        }

    def _quote(self, f: list[str]) -> dict[str, Any]:
        c = self.columns
        bid = _price(f[c["bid_price"]], "bid_price")
        ask = _price(f[c["ask_price"]], "ask_price")
        if bid > ask:
            raise _Bad("crossed_quote", f"bid_price {bid.normalize()} is above ask_price {ask.normalize()}")
        return {
            **self._tick_head(f),
            "bid_price": bid,
            "bid_volume": _int(f[c["bid_volume"]], "bid_volume", minimum=0, maximum=LONG_MAX),
            "ask_price": ask,
            "ask_volume": _int(f[c["ask_volume"]], "ask_volume", minimum=0, maximum=LONG_MAX),
            "ingestion_timestamp": self._now(),
            "sequence_number": self._sequence(f),
        }

    def _reference(self, f: list[str]) -> dict[str, Any]:
        c = self.columns
        market_cap = self._get(f, "market_cap")
        updated = self._get(f, "last_updated")
        return {
            "company_id": _int(f[c["company_id"]], "company_id", minimum=INT_MIN, maximum=INT_MAX),
            "symbol": _symbol(f[c["symbol"]]),
            "company_name": _text(f[c["company_name"]], "company_name", "empty_name"),
            "sector": self._get(f, "sector") or None,
            "market_cap": _int(market_cap, "market_cap", minimum=0, maximum=LONG_MAX) if market_cap else None,
            "last_updated": _timestamp(updated, "last_updated", self.tz) if updated else self._now(),
        }


def key_of(data_type: str, record: dict[str, Any]) -> bytes:
    """The message key (ADR #009): the data type's key field (symbol; company_id for reference data)."""
    return spec(data_type).key_of(record)
