"""Replay (Step 10): a time-ordered stream of events across symbols, in Arrow record batches.

Memory stays bounded however long the range: the range is cut at UTC midnights (one
Iceberg day partition each) and each day is one DuckDB query whose result is pulled as
a RecordBatchReader, so at most one day's sort is in flight and at most `batch_rows`
rows are handed out at a time. All days read the same snapshot (`as_of` is resolved once).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa

from queries.engine.errors import BadQuery
from queries.engine.market import TICK_ORDER, MarketQueries, range_clause, scan_expr, symbol_clause
from queries.engine.timeutil import TimeRange


def replay_batches(engine: MarketQueries, *, data_type: str = "trades", rng: TimeRange,
                   symbols: Sequence[str] | None = None, as_of: int | dt.datetime | None = None,
                   batch_rows: int | None = None, on_day: Callable[[dt.datetime], None] | None = None
                   ) -> Iterator[pa.RecordBatch]:
    """Yield record batches in (exchange_timestamp, symbol, partition, offset) order.

    `on_day` is called before each day's query is issued (progress reporting; the tests use
    it to prove days are read lazily, one at a time)."""
    if data_type not in ("trades", "quotes"):
        raise BadQuery(f"replay streams trades or quotes, not {data_type!r}", field="data_type")
    batch_rows = batch_rows or engine.config.replay_batch_rows
    resolved = engine.source.resolve(data_type, as_of)
    if resolved.snapshot_id is None:
        return
    order_by = ", ".join(TICK_ORDER)
    for day_start, day_end in rng.days():
        if on_day is not None:
            on_day(day_start)
        sql = (f"SELECT * FROM {scan_expr(resolved)} WHERE {range_clause(TimeRange(day_start, day_end))}"
               f"{symbol_clause(symbols)} ORDER BY {order_by}")
        cur = engine.cursor()
        try:
            reader = cur.execute(sql).to_arrow_reader(batch_rows)
            for batch in reader:
                if batch.num_rows:
                    yield batch
        finally:
            cur.close()


def paced(batches: Iterator[pa.RecordBatch], *, speed: float | None,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
          ) -> Iterator[dict]:
    """Rows as dicts, released at `speed` × real time by exchange_timestamp (None or 0: as fast as possible)."""
    first_event: dt.datetime | None = None
    started = clock()
    for batch in batches:
        for row in batch.to_pylist():
            if speed:
                stamp = row["exchange_timestamp"]
                if first_event is None:
                    first_event = stamp
                due = (stamp - first_event).total_seconds() / speed
                wait = due - (clock() - started)
                if wait > 0:
                    sleep(wait)
            yield row


AVRO_FIELDS = {
    "trades": ("symbol", "company_id", "exchange", "exchange_timestamp", "price", "volume", "qualifiers", "venue",
               "buyer_id", "ingestion_timestamp", "sequence_number"),
    "quotes": ("symbol", "company_id", "exchange", "exchange_timestamp", "bid_price", "bid_volume", "ask_price",
               "ask_volume", "ingestion_timestamp", "sequence_number"),
}


def publish(rows: Iterator[dict], *, producer, topic: str, data_type: str,  # type: ignore[no-untyped-def]
            encode: Callable[[dict], bytes], flush_every: int = 10_000) -> int:
    """Republish rows to Kafka: key = symbol, value = Avro in the Confluent wire format
    (`encode` closes over the schema id). Lineage columns are not part of the record."""
    fields = AVRO_FIELDS[data_type]
    sent = 0
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(str(err))

    for row in rows:
        record = {name: row[name] for name in fields}
        while True:
            try:
                producer.produce(topic, key=row["symbol"].encode(), value=encode(record), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then try again
                producer.poll(0.1)
        sent += 1
        if sent % flush_every == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(f"{len(errors) + remaining} of {sent} messages were not delivered to {topic}: "
                           f"{errors[:3] or 'flush timed out'}")
    return sent
