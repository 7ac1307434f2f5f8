"""The idempotent CSV → Kafka producer (ADR #009, #010). Plain Python, no Django.

Each accepted row is Avro-encoded in the Confluent wire format and produced with its key
(symbol, or company_id for reference data) so every message of a symbol lands in one
partition, in file order. Delivery is at-least-once with the idempotent producer
(`enable.idempotence`, `acks=all`, at most 5 requests in flight), so retries cannot
duplicate or reorder. Only delivery reports count as "acked": a row is never reported as
sent until the broker acknowledged it. Rejected rows go to a DLQ file with their line
number and reason; undelivered messages are counted and written there too.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import fastavro
from confluent_kafka import KafkaError, KafkaException, Producer

from catalog.engine.schemas import KEY_FIELD, parsed_schema, schema_text, subject_name, topic_name
from catalog.engine.wire import HEADER, MAGIC
from ingestion.engine.csv_rows import FileEncodingError, HeaderError, RowError, RowParser, key_of, open_csv, printable
from ingestion.engine.fast_encode import FastEncoder
from k2core import metrics
from k2core.kafka import PARTITIONER
from k2core.logging import get_logger

log = get_logger(__name__, component="producer")


class ProduceError(RuntimeError):
    """The file could not be produced at all (bad header, broker unreachable, unknown topic)."""


class Registry(Protocol):
    def register(self, subject: str, schema_text: str) -> int: ...


@dataclass(frozen=True)
class ProducerSettings:
    """librdkafka settings. Batching values were chosen by `bench/bench_producer.py` (docs/benchmarks.md)."""

    bootstrap_servers: str
    delivery_timeout_ms: int = 30_000
    connect_timeout_s: float = 10.0
    retries: int = 3
    linger_ms: int = 5
    batch_size_bytes: int = 1_000_000
    batch_num_messages: int = 10_000
    queue_max_messages: int = 500_000
    compression: str = "snappy"

    def librdkafka(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": PARTITIONER,
            "retries": self.retries,
            "max.in.flight.requests.per.connection": 5,
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_size_bytes,
            "batch.num.messages": self.batch_num_messages,
            "queue.buffering.max.messages": self.queue_max_messages,
            "message.timeout.ms": self.delivery_timeout_ms,
            "socket.connection.setup.timeout.ms": max(1000, int(self.connect_timeout_s * 1000)),
        }


@dataclass
class ProduceResult:
    topic: str
    rows_read: int = 0
    produced: int = 0
    acked: int = 0
    failed: int = 0
    rejected: int = 0
    seconds: float = 0.0
    dlq_path: Path | None = None
    reject_reasons: Counter[str] = field(default_factory=Counter)
    delivery_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.acked / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.failed == 0 and self.acked == self.produced

    def summary(self) -> str:
        return (f"{self.topic}: rows read {self.rows_read}, produced {self.produced}, acked {self.acked}, "
                f"rejected {self.rejected}, failed {self.failed}, {self.seconds:.2f} s, {self.rows_per_second:,.0f} rows/s")


class DlqFile:
    """JSON lines, one per rejected row or undelivered message: line, reason, error, original row.

    Opened on the first entry, so a clean run leaves no empty file behind."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def write(self, *, line: int | None, reason: str, error: str, row: Any) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fh.write(json.dumps({"line": line, "reason": reason, "error": error, "row": row}, default=str) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _raw_row(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return printable(buf.getvalue())


class RawLines:
    """The text of physical lines by number, read forward on a second handle: for a row the csv
    module could not split (a field over its size limit), whose fields are never returned.
    Asked in increasing line order, it reads the file once in all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._at = 0  # lines consumed so far

    def get(self, line: int) -> str:
        if self._fh is None or line <= self._at:
            self.close()
            self._fh, self._at = open(self.path, "rb"), 0  # noqa: SIM115 - closed in close()
        raw = b""
        while self._at < line:
            raw = self._fh.readline()
            self._at += 1
            if not raw:
                return ""
        return printable(raw.decode("utf-8", "surrogateescape").rstrip("\r\n"))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def open_input(csv_path: Path) -> IO[str]:
    """`csv_rows.open_csv`, with a file that is not UTF-8 text refused as a ProduceError (nothing is sent)."""
    try:
        return open_csv(csv_path)
    except FileEncodingError as exc:
        raise ProduceError(str(exc)) from None


def check_broker(settings: ProducerSettings, topic: str) -> int:
    """The topic's partition count; ProduceError (with what to do) when the broker or topic is missing."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers,
                         "socket.connection.setup.timeout.ms": max(1000, int(settings.connect_timeout_s * 1000))})
    try:
        # All topics, not list_topics(topic=…): asking for one topic makes some brokers auto-create it.
        metadata = admin.list_topics(timeout=settings.connect_timeout_s)
    except KafkaException as exc:
        raise ProduceError(
            f"Kafka at {settings.bootstrap_servers} did not answer within {settings.connect_timeout_s:g}s ({exc.args[0]}). "
            "Start the embedded broker with `manage.py broker start`, or set K2_KAFKA_BOOTSTRAP to a running cluster."
        ) from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise ProduceError(f"topic {topic} does not exist on {settings.bootstrap_servers}: create it with `manage.py create_topics`")
    return len(info.partitions)


def register_schema(registry: Registry, topic: str, data_type: str) -> int:
    """The schema id for the topic's subject (registered idempotently); ProduceError saying what to do otherwise."""
    from catalog.engine.registry import IncompatibleSchema

    try:
        return registry.register(subject_name(topic), schema_text(data_type))
    except IncompatibleSchema as exc:
        raise ProduceError(f"the schema registry refused the {data_type} schema for {subject_name(topic)} as incompatible "
                           f"with the registered version: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - HTTP, database or client errors: all mean "no schema id"
        raise ProduceError(f"could not register the {data_type} schema ({type(exc).__name__}: {exc}); check "
                           "K2_SCHEMA_REGISTRY_URL (unset uses the embedded registry in Postgres)") from None


class LatencyBatch:
    """Produce-to-ack latencies, folded into the histogram in bulk at each poll.

    Why: `Histogram.observe` takes a lock and walks the buckets for every message, about a
    microsecond at 60,000 messages a second; here the per-message cost is a list append. The
    fold adds to the child's bucket and sum values exactly as `observe` does (same buckets,
    same sum); if a prometheus_client version lacks those attributes, it calls `observe`."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = list(getattr(child, "_upper_bounds", []))
        self.bulk = bool(self.bounds) and hasattr(child, "_buckets") and hasattr(child, "_sum")
        self.pending: list[float] = []

    def flush(self) -> None:
        values, self.pending = self.pending, []
        if not values:
            return
        if not self.bulk:
            for value in values:
                self.child.observe(value)
            return
        counts = [0] * len(self.bounds)
        for value in values:
            counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value; the last bound is +Inf
        for i, n in enumerate(counts):
            if n:
                self.child._buckets[i].inc(n)
        self.child._sum.inc(sum(values))


class CsvProducer:
    """Produces one CSV file to its topic. `run` returns counts; it never raises for bad rows."""

    def __init__(self, *, settings: ProducerSettings, registry: Registry, data_type: str, exchange: str,
                 timezone: str | None = None, asset_class: str = "equities", dlq_path: Path | None = None,
                 on_progress: Callable[[int], None] | None = None, keep_latencies: bool = False,
                 shard: tuple[int, int] | None = None, check: bool = True) -> None:
        self.settings = settings
        self.shard = shard  # (index, count): produce only rows whose key hashes to this shard
        self.check = check
        self.data_type = data_type
        self.exchange = exchange.lower()
        self.timezone = timezone  # the exchange registry's time zone; None: the built-in one (asx)
        self.asset_class = asset_class.lower()
        self.topic = topic_name(asset_class=self.asset_class, data_type=data_type, exchange=self.exchange)
        self.registry = registry
        self.dlq = DlqFile(dlq_path)
        self.on_progress = on_progress
        self.keep_latencies = keep_latencies
        labels = {"exchange": self.exchange, "asset_class": self.asset_class, "data_type": data_type}
        self._m_produced = metrics.MESSAGES_PRODUCED.labels(**labels)
        self._latency = LatencyBatch(metrics.PRODUCE_ACK_LATENCY.labels(**labels))
        self._labels = labels
        self.result = ProduceResult(topic=self.topic, dlq_path=dlq_path)
        self._fatal: KafkaError | None = None
        self._acked_reported = 0

    # --- delivery reports (called from poll/flush on this thread) ---
    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        latency = msg.latency()
        if err is None:
            self.result.acked += 1  # the counter metric follows in bulk (_sync_metrics), not per message
            if latency is not None:
                self._latency.pending.append(latency)
                if self.keep_latencies:
                    self.result.latencies.append(latency)
            return
        self.result.failed += 1
        name = err.name()
        self.result.delivery_errors[name] += 1
        metrics.PRODUCE_ERRORS.labels(**self._labels, error=name).inc()
        try:
            row: Any = fastavro.schemaless_reader(io.BytesIO(msg.value()[HEADER.size:]), self._schema, None)
        except Exception:  # noqa: BLE001 - keep the bytes if they do not decode
            row = msg.value().hex()
        self.dlq.write(line=None, reason="not_delivered", error=f"not acknowledged by the broker: {err.str()}", row=row)

    def _sync_metrics(self) -> None:
        self._latency.flush()
        delta = self.result.acked - self._acked_reported
        if delta:
            self._m_produced.inc(delta)
            self._acked_reported += delta

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka_error", error=err.str(), code=err.name(), fatal=err.fatal())
        if err.fatal():
            self._fatal = err

    def _reject(self, error: RowError, fields: list[str]) -> None:
        self.result.rejected += 1
        self.result.reject_reasons[error.reason] += 1
        metrics.ROWS_REJECTED.labels(**self._labels, reason=error.reason).inc()
        self.dlq.write(line=error.line, reason=error.reason, error=error.message, row=_raw_row(fields))

    def run(self, csv_path: Path) -> ProduceResult:
        """Read, validate, produce and wait for every delivery report (or the delivery timeout)."""
        start = time.perf_counter()
        self._raw_lines = RawLines(csv_path)
        try:
            with open_input(csv_path) as fh:
                self._run(fh)
        finally:
            self.dlq.close()
            self._raw_lines.close()
            self.result.seconds = time.perf_counter() - start
        log.info("produce_finished", topic=self.topic, file=str(csv_path), rows_read=self.result.rows_read,
                 produced=self.result.produced, acked=self.result.acked, rejected=self.result.rejected,
                 failed=self.result.failed, seconds=round(self.result.seconds, 3))
        return self.result

    def _unsplittable(self, error: csv.Error, line: int) -> None:
        """A row the csv module refused (a field over its size limit): rejected with its line, kept in the DLQ."""
        message = str(error)
        reason = "field_too_large" if "field limit" in message else "bad_csv"
        if reason == "field_too_large":
            message += " bytes: a field is larger than any market-data value"
        self.result.rejected += 1
        self.result.reject_reasons[reason] += 1
        metrics.ROWS_REJECTED.labels(**self._labels, reason=reason).inc()
        self.dlq.write(line=line, reason=reason, error=message, row=self._raw_lines.get(line))

    def _run(self, fh: IO[str]) -> None:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ProduceError("the file is empty: a header row is required (see the data model's CSV formats)") from None
        except csv.Error as exc:
            raise ProduceError(f"header (line 1): {exc}") from None
        try:
            parser = RowParser(data_type=self.data_type, exchange=self.exchange, header=header, timezone=self.timezone)
        except HeaderError as exc:
            raise ProduceError(f"header (line 1): {exc}") from None
        if self.check:
            check_broker(self.settings, self.topic)
        self._schema = parsed_schema(self.data_type)
        schema_id = register_schema(self.registry, self.topic, self.data_type)
        prefix = HEADER.pack(MAGIC, schema_id)
        # One delivery callback for the producer (cheaper than passing on_delivery with every produce call).
        producer = Producer({**self.settings.librdkafka(), "error_cb": self._on_error, "on_delivery": self._on_delivery})
        result = self.result
        produce, poll, topic = producer.produce, producer.poll, self.topic
        write = fastavro.schemaless_writer
        schema, parse, key_for, data_type = self._schema, parser.parse, key_of, self.data_type
        fast = FastEncoder(parser).encode
        progress_every = 10_000
        key_index = parser.columns[KEY_FIELD[data_type]]
        shard_index, shard_count = self.shard or (0, 1)
        shard_of: dict[str, int] = {}
        rows_read = produced = 0  # locals in the hot loop; written back to the result in `finally`
        try:
            while True:  # the for loop restarts after a row the csv module cannot split (no cost per row)
                try:
                    for fields in reader:
                        if shard_count > 1:
                            # Every row of a key (symbol) goes to one shard, so per-symbol order is kept.
                            key_text = fields[key_index] if len(fields) > key_index else ""
                            mine = shard_of.get(key_text)
                            if mine is None:
                                mine = shard_of[key_text] = zlib.crc32(key_text.encode("utf-8", "surrogateescape")) % shard_count
                            if mine != shard_index:
                                continue
                        rows_read += 1
                        encoded = fast(fields, 0)
                        if encoded is not None:  # the common case: validated and encoded in one pass
                            key, buf = encoded
                            buf[:5] = prefix
                            value = bytes(buf)
                        else:
                            if not fields:  # a blank line
                                self._reject(RowError(reader.line_num, "blank_line", "is blank"), fields)
                                continue
                            try:
                                record = parse(fields, reader.line_num)
                            except RowError as error:
                                self._reject(error, fields)
                                continue
                            out = io.BytesIO()
                            out.write(prefix)
                            try:
                                write(out, schema, record)
                            except (ValueError, TypeError, OverflowError) as exc:  # the schema cannot hold a value
                                self._reject(RowError(reader.line_num, "unencodable", f"cannot be encoded as Avro: {exc}"),
                                             fields)
                                continue
                            value = out.getvalue()
                            key = key_for(data_type, record)
                        while True:
                            try:
                                produce(topic, value, key)
                                break
                            except BufferError:  # local queue full: serve delivery reports, then retry
                                poll(0.05)
                                self._raise_if_fatal()
                        produced += 1
                        if produced % 1000 == 0:
                            poll(0)
                            self._sync_metrics()
                            self._raise_if_fatal()
                        if self.on_progress is not None and rows_read % progress_every == 0:
                            self.on_progress(fh.buffer.tell() if hasattr(fh, "buffer") else 0)
                            self._raise_if_fatal()
                    break
                except csv.Error as error:
                    if shard_index == 0:  # its key is unknown: the first shard keeps it
                        rows_read += 1
                        self._unsplittable(error, reader.line_num)
        finally:
            result.rows_read, result.produced = rows_read, produced
            self._drain(producer)

    def _drain(self, producer: Producer) -> None:
        """Wait for every outstanding delivery report; bounded by the delivery timeout, never a hang."""
        deadline = time.monotonic() + self.settings.delivery_timeout_ms / 1000 + 5
        while len(producer) > 0 and time.monotonic() < deadline and self._fatal is None:
            producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        self._sync_metrics()
        outstanding = len(producer)
        if outstanding:
            # Never acknowledged and no report: counted as failed, not as sent.
            self.result.failed += outstanding
            self.result.delivery_errors["no_delivery_report"] += outstanding
            metrics.PRODUCE_ERRORS.labels(**self._labels, error="no_delivery_report").inc(outstanding)
        self._raise_if_fatal()

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise ProduceError(f"the idempotent producer hit a fatal error and stopped: {self._fatal.str()}")


def produce_csv(*, csv_path: Path, settings: ProducerSettings, registry: Registry, data_type: str, exchange: str,
                timezone: str | None = None, asset_class: str = "equities", dlq_path: Path | None = None,
                on_progress: Callable[[int], None] | None = None, keep_latencies: bool = False) -> ProduceResult:
    """Produce one CSV file; see `CsvProducer`."""
    return CsvProducer(settings=settings, registry=registry, data_type=data_type, exchange=exchange, timezone=timezone,
                       asset_class=asset_class, dlq_path=dlq_path, on_progress=on_progress,
                       keep_latencies=keep_latencies).run(csv_path)


class _FixedRegistry:
    """The schema id the parent registered, handed to worker processes (no registry access there)."""

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id

    def register(self, subject: str, schema_text: str) -> int:
        return self.schema_id


_progress: Any = None


def _init_worker(progress: Any) -> None:
    global _progress
    _progress = progress


def _worker(index: int, count: int, schema_id: int, csv_path: Path, kwargs: dict[str, Any]) -> ProduceResult:
    import logging

    logging.disable(logging.INFO)  # the parent logs the summary once

    def report(position: int) -> None:
        _progress[index] = position

    # Latencies always travel back: the parent feeds them to its histogram (a worker's metrics die with it).
    return CsvProducer(registry=_FixedRegistry(schema_id), shard=(index, count), check=False, on_progress=report,
                       keep_latencies=True, **kwargs).run(csv_path)


def produce_csv_parallel(*, workers: int, csv_path: Path, settings: ProducerSettings, registry: Registry, data_type: str,
                         exchange: str, timezone: str | None = None, asset_class: str = "equities",
                         dlq_path: Path | None = None,
                         on_progress: Callable[[int], None] | None = None, keep_latencies: bool = False) -> ProduceResult:
    """`produce_csv` split over `workers` processes by key hash (a symbol always in the same one,
    so its order is kept). Why: one CPython thread encodes about 80,000 rows/s; two cores do more.
    The header, broker and schema are checked once here, so errors are the same as with one process."""
    if workers <= 1:
        return produce_csv(csv_path=csv_path, settings=settings, registry=registry, data_type=data_type, exchange=exchange,
                           timezone=timezone,
                           asset_class=asset_class, dlq_path=dlq_path, on_progress=on_progress, keep_latencies=keep_latencies)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    topic = topic_name(asset_class=asset_class, data_type=data_type, exchange=exchange)
    with open_input(csv_path) as fh:
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise ProduceError("the file is empty: a header row is required (see the data model's CSV formats)") from None
        except csv.Error as exc:
            raise ProduceError(f"header (line 1): {exc}") from None
    try:
        RowParser(data_type=data_type, exchange=exchange, header=header, timezone=timezone)
    except HeaderError as exc:
        raise ProduceError(f"header (line 1): {exc}") from None
    check_broker(settings, topic)
    schema_id = register_schema(registry, topic, data_type)
    ctx = multiprocessing.get_context("spawn")
    progress = ctx.Array("q", workers, lock=False)
    parts = [None if dlq_path is None else dlq_path.with_name(f"{dlq_path.name}.part{i}") for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(progress,)) as pool:
        futures = [pool.submit(_worker, i, workers, schema_id, csv_path, {
            "settings": settings, "data_type": data_type, "exchange": exchange, "timezone": timezone, "asset_class": asset_class,
            "dlq_path": parts[i]}) for i in range(workers)]
        while not all(f.done() for f in futures):
            time.sleep(0.2)
            if on_progress is not None:
                on_progress(min(progress[:]))
        results = [f.result() for f in futures]  # re-raises a worker's ProduceError
    merged = ProduceResult(topic=topic, dlq_path=dlq_path)
    for r in results:
        merged.rows_read += r.rows_read
        merged.produced += r.produced
        merged.acked += r.acked
        merged.failed += r.failed
        merged.rejected += r.rejected
        merged.reject_reasons.update(r.reject_reasons)
        merged.delivery_errors.update(r.delivery_errors)
        labels = {"exchange": exchange.lower(), "asset_class": asset_class.lower(), "data_type": data_type}
        if keep_latencies:
            merged.latencies.extend(r.latencies)
        metrics.MESSAGES_PRODUCED.labels(**labels).inc(r.acked)  # the workers' own counters die with them
        for reason, n in r.reject_reasons.items():
            metrics.ROWS_REJECTED.labels(**labels, reason=reason).inc(n)
        for error, n in r.delivery_errors.items():
            metrics.PRODUCE_ERRORS.labels(**labels, error=error).inc(n)
    if dlq_path is not None:
        entries = []
        for part in parts:
            if part is not None and part.exists():
                entries.extend(part.read_text(encoding="utf-8").splitlines())
                part.unlink()
        if entries:
            entries.sort(key=lambda e: (json.loads(e)["line"] is None, json.loads(e)["line"] or 0))
            dlq_path.parent.mkdir(parents=True, exist_ok=True)
            with open(dlq_path, "a", encoding="utf-8") as out:
                out.write("\n".join(entries) + "\n")
    merged.seconds = time.perf_counter() - start
    histogram = LatencyBatch(metrics.PRODUCE_ACK_LATENCY.labels(exchange=exchange.lower(), asset_class=asset_class.lower(),
                                                                data_type=data_type))
    for r in results:
        histogram.pending.extend(r.latencies)
    histogram.flush()
    log.info("produce_finished", topic=topic, file=str(csv_path), workers=workers, rows_read=merged.rows_read,
             produced=merged.produced, acked=merged.acked, rejected=merged.rejected, failed=merged.failed,
             seconds=round(merged.seconds, 3))
    return merged
