"""Trades, quotes, OHLCV bars, snapshots and tables: DuckDB `iceberg_scan` over the
table's metadata location, pinned to one snapshot (ADR #001; time travel on every query).

Partition pruning: the time range is written into the SQL as TIMESTAMPTZ literals built
from validated datetimes, so DuckDB prunes Iceberg day partitions when it plans the scan
(the pruning tests read `Total Files Read` from EXPLAIN ANALYZE). Symbols are validated
against a strict pattern before they are quoted into the SQL; a symbol filter lets DuckDB
skip the row groups of other symbols in symbol-sorted files.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import pyarrow as pa

from catalog.engine.exchanges import Exchange
from catalog.engine.storage import s3_options_of
from k2core.duckdb_conn import connect, scan_sql
from queries.engine.connection import EngineConfig
from queries.engine.errors import BadQuery, QueryError
from queries.engine.source import ResolvedTable, SnapshotInfo, StreamTail, TableSource
from queries.engine.timeutil import DEFAULT_EXCHANGE, TimeRange, exchange_zone, sql_instant

SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,31}$")
MAX_SYMBOLS = 200
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
TICK_ORDER = ("exchange_timestamp", "symbol", "source_partition", "source_offset")
PRICE_TYPE = pa.decimal128(18, 6)
OHLCV_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("bar_start", pa.timestamp("us", tz="UTC")),
    ("open", PRICE_TYPE), ("high", PRICE_TYPE), ("low", PRICE_TYPE), ("close", PRICE_TYPE),
    ("volume", pa.int64()), ("vwap", PRICE_TYPE), ("trade_count", pa.int64()),
])


@dataclass
class QueryResult:
    """Rows as Arrow, the snapshot they were read from, and the cursor of the next page."""

    table: pa.Table
    data_type: str
    snapshot_id: int | None
    next_cursor: str | None = None
    truncated: bool = False
    fresh: dict | None = None  # a fresh read: what it read beyond the snapshot (`TailRead.describe`)


def check_symbols(symbols: Sequence[str]) -> list[str]:
    if not symbols:
        raise BadQuery("at least one symbol is required, e.g. symbol=BHP", field="symbol")
    if len(symbols) > MAX_SYMBOLS:
        raise BadQuery(f"{len(symbols)} symbols requested; at most {MAX_SYMBOLS} per query", field="symbol")
    for s in symbols:
        if not SYMBOL_RE.match(s):
            raise BadQuery(f"symbol {s!r} is not valid: letters, digits, '.', '_' or '-', up to 32 characters",
                           field="symbol")
    return list(dict.fromkeys(symbols))


def check_company_ids(company_ids: Sequence[int]) -> list[int]:
    if len(company_ids) > MAX_SYMBOLS:
        raise BadQuery(f"{len(company_ids)} company ids requested; at most {MAX_SYMBOLS} per query", field="company_id")
    for company_id in company_ids:
        if not isinstance(company_id, int) or isinstance(company_id, bool) or not -2**31 <= company_id < 2**31:
            raise BadQuery(f"company_id {company_id!r} is not a 32-bit integer", field="company_id")
    return list(dict.fromkeys(company_ids))


def symbol_clause(symbols: Sequence[str] | None) -> str:
    if not symbols:
        return ""
    quoted = ", ".join(f"'{s}'" for s in check_symbols(symbols))
    return f" AND symbol IN ({quoted})"


def exchange_clause(exchange: Exchange | None) -> str:
    """Rows of one exchange (records carry the code in upper case); the code is a registry value
    matching [a-z0-9]{1,16}, never request text, so it is safe to quote."""
    if exchange is None:
        return ""
    return f" AND exchange = '{exchange.record_code}'"


def encode_cursor(payload: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        payload["t"] = dt.datetime.fromisoformat(payload["t"])
        if payload["t"].tzinfo is None:
            raise ValueError("no offset")
        payload["t"] = payload["t"].astimezone(dt.UTC)  # OverflowError for 0001-01-01+14:00 and the like
        for key in ("p", "o"):
            payload[key] = int(payload[key])
        if not isinstance(payload["s"], str) or not SYMBOL_RE.match(payload["s"]) or payload.get("d") not in ("asc", "desc"):
            raise ValueError("bad fields")
        if payload.get("snap") is not None:
            payload["snap"] = int(payload["snap"])
        payload["f"] = bool(payload.get("f"))
        return payload
    except (ValueError, KeyError, TypeError, OverflowError, json.JSONDecodeError):
        raise BadQuery("cursor is not valid: pass the next_cursor value of the previous page unchanged",
                       field="cursor") from None


TAIL_VIEW = "k2_fresh_tail"  # a fresh read's rows, registered on the query's cursor


def scan_expr(resolved: ResolvedTable, tail_columns: Sequence[str] | None = None) -> str:
    """The table pinned to its snapshot; with `tail_columns`, plus the rows of a fresh read
    (`TAIL_VIEW`), matched by column name (a column the tail lacks reads NULL)."""
    scan = scan_sql(resolved.metadata_location, resolved.snapshot_id)
    if tail_columns is None:
        return scan
    columns = ", ".join(f'"{c}"' for c in tail_columns)
    if resolved.snapshot_id is None:
        return f"(SELECT {columns} FROM {TAIL_VIEW})"
    return f"(SELECT * FROM {scan} UNION ALL BY NAME SELECT {columns} FROM {TAIL_VIEW})"


def range_clause(rng: TimeRange) -> str:
    return f"exchange_timestamp >= {sql_instant(rng.start)} AND exchange_timestamp < {sql_instant(rng.end)}"


class MarketQueries:
    """The engine behind /trades, /quotes, /ohlcv, /snapshots and /tables.

    One in-memory DuckDB database per engine (extensions loaded once); each query runs on
    its own cursor, so one engine serves many threads.
    """

    def __init__(self, source: TableSource, config: EngineConfig | None = None, tail: StreamTail | None = None) -> None:
        """`tail`: what reads a data type's topics beyond a snapshot, for `fresh=True` (None: this
        engine refuses fresh reads)."""
        self.source = source
        self.tail = tail
        config = config or EngineConfig()
        if config.s3 is None and hasattr(source, "catalog"):  # an s3:// warehouse: read it as the catalog writes it
            config = replace(config, s3=s3_options_of(source.catalog))
        self.config = config
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._db is None:
                self._db = connect(self.config)
            cur = self._db.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    def _arrow(self, sql: str, tail: pa.Table | None = None) -> pa.Table:
        cur = self.cursor()
        try:
            if tail is not None:
                cur.register(TAIL_VIEW, tail)
            return cur.execute(sql).to_arrow_table()
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise QueryError(f"the query engine failed: {exc}") from exc
        finally:
            cur.close()

    def resolve(self, data_type: str, as_of: int | dt.datetime | None = None, *, fresh: bool = False) -> ResolvedTable:
        """The snapshot a query reads; for a fresh read, the table as known within the tail's
        `metadata_ttl_s` (the stream beyond it supplies what came later: same rows, no catalog
        round trip)."""
        if fresh and self.tail is not None:
            return self.source.resolve(data_type, as_of, max_age_s=self.tail.metadata_ttl_s)
        return self.source.resolve(data_type, as_of)

    def _fresh(self, data_type: str, resolved: ResolvedTable) -> tuple[Any, list[str]]:
        """A fresh read beyond `resolved` (pinned to the current snapshot) and the columns of it
        the table has."""
        if self.tail is None:
            raise BadQuery("fresh reads are not available on this server (no Kafka broker configured for queries)",
                           field="fresh")
        read = self.tail.read(data_type, resolved.table)
        columns = read.table.column_names
        if resolved.table is not None:
            known = {f.name for f in resolved.table.schema().fields}
            columns = [c for c in columns if c in known]
        return read, columns

    @staticmethod
    def _check_fresh(fresh: bool, as_of: int | dt.datetime | None) -> None:
        if fresh and as_of is not None:
            raise BadQuery("fresh=true reads the current snapshot and the stream beyond it; it cannot be combined "
                           "with as_of (time travel reads a snapshot alone)", field="fresh")

    def _limit(self, limit: int | None) -> int:
        limit = self.config.default_limit if limit is None else limit
        if limit < 1 or limit > self.config.max_limit:
            raise BadQuery(f"limit={limit} is out of range: 1 to {self.config.max_limit}", field="limit")
        return limit

    # trades and quotes -------------------------------------------------------------------

    def tick_sql(self, data_type: str, *, rng: TimeRange, symbols: Sequence[str] | None, limit: int,
                 cursor: dict | None, resolved: ResolvedTable, order: str = "asc", exchange: Exchange | None = None,
                 tail_columns: Sequence[str] | None = None) -> str:
        where = range_clause(rng) + symbol_clause(symbols) + exchange_clause(exchange)
        op = ">" if order == "asc" else "<"
        if cursor:
            where += (f" AND (exchange_timestamp, symbol, source_partition, source_offset) {op} "
                      f"({sql_instant(cursor['t'])}, '{cursor['s']}', {cursor['p']}, {cursor['o']})")
        direction = "ASC" if order == "asc" else "DESC"
        order_by = ", ".join(f"{c} {direction}" for c in TICK_ORDER)
        return f"SELECT * FROM {scan_expr(resolved, tail_columns)} WHERE {where} ORDER BY {order_by} LIMIT {limit + 1}"

    def ticks(self, data_type: str, *, rng: TimeRange, symbols: Sequence[str] | None = None, limit: int | None = None,
              cursor: str | None = None, as_of: int | dt.datetime | None = None, order: str = "asc",
              exchange: Exchange | None = None, fresh: bool = False) -> QueryResult:
        """One page of trades or quotes in (exchange_timestamp, symbol, partition, offset) order, of one
        exchange when given (else all); the cursor carries the snapshot, so later pages read the same table state.
        `fresh`: the current snapshot and what is on the topics beyond it; later pages of a fresh
        read are fresh reads too, continuing after the cursor's position (rows never repeat)."""
        if data_type not in ("trades", "quotes"):
            raise BadQuery(f"ticks are trades or quotes, not {data_type!r}", field="data_type")
        if order not in ("asc", "desc"):
            raise BadQuery("order must be asc (oldest first) or desc (newest first)", field="order")
        limit = self._limit(limit)
        self._check_fresh(fresh, as_of)
        position = decode_cursor(cursor) if cursor else None
        if position:
            if position["d"] != order:
                raise BadQuery("the cursor was made for the other order: keep order= the same across pages", field="cursor")
            if position["f"] != fresh:
                raise BadQuery(f"the cursor was made for a {'fresh' if position['f'] else 'snapshot'} read: keep fresh= "
                               "the same across pages", field="cursor")
            if as_of is None and position.get("snap") and not fresh:
                as_of = position["snap"]
        resolved = self.resolve(data_type, as_of, fresh=fresh)
        read, tail_columns = self._fresh(data_type, resolved) if fresh else (None, None)
        if resolved.snapshot_id is None and (read is None or read.table.num_rows == 0):
            return QueryResult(pa.Table.from_batches([], schema=_empty_schema(resolved)), data_type, None,
                               fresh=read.describe() if read else None)
        sql = self.tick_sql(data_type, rng=rng, symbols=symbols, limit=limit, cursor=position, resolved=resolved, order=order,
                            exchange=exchange, tail_columns=tail_columns)
        table = self._arrow(sql, read.table if read else None)
        next_cursor = None
        if table.num_rows > limit:
            table = table.slice(0, limit)
            last = table.slice(limit - 1, 1).to_pylist()[0]
            next_cursor = encode_cursor({"t": last["exchange_timestamp"].isoformat(), "s": last["symbol"],
                                         "p": last["source_partition"], "o": last["source_offset"], "d": order,
                                         "snap": resolved.snapshot_id, **({"f": 1} if fresh else {})})
        return QueryResult(table, data_type, resolved.snapshot_id, next_cursor, fresh=read.describe() if read else None)

    def trades(self, **kwargs) -> QueryResult:  # type: ignore[no-untyped-def]
        return self.ticks("trades", **kwargs)

    def quotes(self, **kwargs) -> QueryResult:  # type: ignore[no-untyped-def]
        return self.ticks("quotes", **kwargs)

    # OHLCV --------------------------------------------------------------------------------

    def ohlcv_sql(self, *, interval: str, rng: TimeRange, symbols: Sequence[str] | None, resolved: ResolvedTable,
                  exchange: Exchange | None = None, tail_columns: Sequence[str] | None = None) -> str:
        if interval not in INTERVALS:
            raise BadQuery(f"interval {interval!r} is not supported: use one of {', '.join(INTERVALS)}", field="interval")
        if interval == "1d":
            zone = exchange_zone(exchange or DEFAULT_EXCHANGE).key
            bucket = f"timezone('{zone}', date_trunc('day', timezone('{zone}', exchange_timestamp)))"
        else:
            bucket = f"time_bucket(INTERVAL '{INTERVALS[interval]} seconds', exchange_timestamp)"
        # Open/close: first/last by exchange_timestamp then sequence_number. VWAP stays exact:
        # the notional sum is a DECIMAL, divided in integer micro-units (round half up) and
        # scaled back to DECIMAL(18,6), because DuckDB's DECIMAL division returns a DOUBLE.
        return f"""
            WITH t AS (
                SELECT symbol, {bucket} AS bar_start, price, volume,
                       {{'t': exchange_timestamp, 's': coalesce(sequence_number, -1)}} AS k
                FROM {scan_expr(resolved, tail_columns)}
                WHERE {range_clause(rng)}{symbol_clause(symbols)}{exchange_clause(exchange)}
            ), b AS (
                SELECT symbol, bar_start, arg_min(price, k) AS open, max(price) AS high, min(price) AS low,
                       arg_max(price, k) AS close, sum(volume)::BIGINT AS volume,
                       sum(price * volume) AS notional, count(*)::BIGINT AS trade_count
                FROM t GROUP BY symbol, bar_start
            )
            SELECT symbol, bar_start, open, high, low, close, volume,
                   CASE WHEN volume > 0 THEN
                     ((CAST(notional * 1000000 AS HUGEINT) * 2 + volume) // (2 * volume))::DECIMAL(38,0) * 0.000001::DECIMAL(18,6)
                   END::DECIMAL(18,6) AS vwap,
                   trade_count
            FROM b ORDER BY symbol, bar_start
            LIMIT {self.config.max_bars + 1}
        """

    def ohlcv(self, *, interval: str, rng: TimeRange, symbols: Sequence[str] | None = None,
              as_of: int | dt.datetime | None = None, exchange: Exchange | None = None, fresh: bool = False) -> QueryResult:
        """Bars with at least one trade (empty bars are absent, not zero-filled). Intraday bars
        are aligned to UTC clock boundaries; 1d bars are trading days in the exchange's time zone.
        Given an exchange, only its trades count; without one, all trades, with ASX days.
        `fresh`: the current snapshot's trades and those on the topics beyond it."""
        self._check_fresh(fresh, as_of)
        resolved = self.resolve("trades", as_of, fresh=fresh)
        read, tail_columns = self._fresh("trades", resolved) if fresh else (None, None)
        if resolved.snapshot_id is None and (read is None or read.table.num_rows == 0):
            return QueryResult(OHLCV_SCHEMA.empty_table(), "trades", None, fresh=read.describe() if read else None)
        table = self._arrow(self.ohlcv_sql(interval=interval, rng=rng, symbols=symbols, resolved=resolved, exchange=exchange,
                                           tail_columns=tail_columns), read.table if read else None)
        truncated = table.num_rows > self.config.max_bars
        if truncated:
            table = table.slice(0, self.config.max_bars)
        return QueryResult(table.cast(OHLCV_SCHEMA), "trades", resolved.snapshot_id, truncated=truncated,
                           fresh=read.describe() if read else None)

    # reference data -----------------------------------------------------------------------

    def reference_sql(self, *, resolved: ResolvedTable, company_ids: Sequence[int] | None,
                      symbols: Sequence[str] | None, limit: int) -> str:
        """Each company's latest record (greatest last_updated; for equal times the one consumed
        last), then filtered on that record's company id or symbol."""
        where = ""
        if company_ids:
            where += f" AND company_id IN ({', '.join(str(i) for i in check_company_ids(company_ids))})"
        where += symbol_clause(symbols)
        return f"""
            SELECT * EXCLUDE (rn) FROM (
                SELECT *, row_number() OVER (PARTITION BY company_id
                                             ORDER BY last_updated DESC, source_partition DESC, source_offset DESC) AS rn
                FROM {scan_expr(resolved)}
            ) WHERE rn = 1{where}
            ORDER BY company_id LIMIT {limit + 1}
        """

    def reference_data(self, *, company_ids: Sequence[int] | None = None, symbols: Sequence[str] | None = None,
                       as_of: int | dt.datetime | None = None, limit: int | None = None) -> QueryResult:
        """The latest reference record per company, as the table stood at `as_of` (a snapshot id
        or an instant; the current snapshot when None)."""
        limit = self._limit(limit)
        if symbols:
            check_symbols(symbols)  # bad filters are refused even on an empty table
        if company_ids:
            check_company_ids(company_ids)
        resolved = self.source.resolve("reference_data", as_of)
        if resolved.snapshot_id is None:
            return QueryResult(pa.Table.from_batches([], schema=_empty_schema(resolved)), "reference_data", None)
        table = self._arrow(self.reference_sql(resolved=resolved, company_ids=company_ids, symbols=symbols, limit=limit))
        truncated = table.num_rows > limit
        if truncated:
            table = table.slice(0, limit)
        return QueryResult(table, "reference_data", resolved.snapshot_id, truncated=truncated)

    # metadata -----------------------------------------------------------------------------

    def snapshots(self, data_type: str) -> list[SnapshotInfo]:
        return self.source.snapshots(data_type)

    def explain_analyze(self, sql: str) -> str:
        """DuckDB's EXPLAIN ANALYZE text of a query (the scan reports `Total Files Read`)."""
        cur = self.cursor()
        try:
            return "\n".join(row[1] for row in cur.execute(f"EXPLAIN ANALYZE {sql}").fetchall())
        finally:
            cur.close()


def files_read(profile: str) -> int:
    """The `Total Files Read` figures of an EXPLAIN ANALYZE text, summed over scans."""
    counts = [int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", profile)]
    if not counts:
        raise ValueError("no 'Total Files Read' in the profile: is this an iceberg_scan?")
    return sum(counts)


def _empty_schema(resolved: ResolvedTable) -> pa.Schema:
    if resolved.table is not None:
        return resolved.table.schema().as_arrow()
    from catalog.engine.iceberg import arrow_schema

    return arrow_schema(resolved.name)
