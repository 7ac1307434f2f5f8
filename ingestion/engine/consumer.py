"""The Kafka → Iceberg consumer engine (ADR #003, #011–#016). Plain Python, no Django import.

One loop, run the same way by `manage.py consume`, the Celery task, the benchmarks and the
tests. Per batch (up to `batch_size` messages, or what arrived before the first one was
`max_batch_ms` old, counted from its Kafka timestamp, and while the batch before was still
being committed):

1. drop messages the table already holds (offset below what a snapshot recorded);
2. decode the whole batch at once (`decode.BatchDecoder`); poison messages go to
   `{topic}.dlq` with headers naming the error and the source position, and are counted;
3. check sequence numbers per stream, vectorised (`sequence.SequenceTracker`); gaps and late
   events go to the `GapSink` *before* the Iceberg commit, so a crash can never hide a gap
   (a replay re-reports it, and the sink's unique key keeps one row);
4. sort by symbol, exchange_timestamp, sequence_number and append in one Iceberg transaction
   whose snapshot summary records the next offset of every topic-partition in the batch;
5. only then commit the offsets to Kafka (manual commits only).

Steps 1-3 run on the loop's thread; step 4 on one commit thread, so the next batch is
collected and decoded while the current one is written (a one-deep pipeline: at most one
batch in flight, batches committed in order). Step 5 follows on the loop's thread once the
Iceberg commit is done (asynchronously, except before a rebalance and at shutdown, where it
is synchronous). Whatever reads the table (partition assignment, sequence recovery) first
waits for the batch in flight.

Per-message work in Python is limited to pulling topic, partition, offset and value out of
each message (list comprehensions); offsets, duplicates and counts are computed per batch.

Exactly-once into the table: on partition assignment the consumer starts from the larger of
the group's committed offset and the offset the table recorded (by any group), so a crash
between steps 4 and 5 does not write the batch twice, nor does a second group on the table.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from catalog.engine.iceberg import NAMESPACE, SORT_COLUMNS, table_identifier
from catalog.engine.maintenance import SnapshotPolicy
from catalog.engine.schemas import check_data_type, consumer_group, dlq_topic, parse_topic
from catalog.engine.storage import s3_options_of
from catalog.engine.writer import IcebergWriter, RetryPolicy, offsets_properties, recorded_offsets
from ingestion.engine.decode import INDEX_COLUMN, POISON_REASONS, BatchDecoder, Poison, SchemaSource
from ingestion.engine.progress import ProgressGate
from ingestion.engine.sequence import SequenceTracker, table_last_sequences
from ingestion.engine.topics import PARTITIONER
from k2portal import metrics
from k2portal.logging import get_logger
from queries.engine.connection import EngineConfig, connect

log = get_logger(__name__, component="consumer")


class ConsumerError(RuntimeError):
    """The consumer cannot run; the message says what to check."""


class DeadLettersUndelivered(ConsumerError):
    """Poison messages could not be written to the dead-letter topic (the batch is not committed)."""


# --- configuration and the small interfaces the Django side implements -------------------
@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap_servers: str
    data_type: str
    topics: tuple[str, ...] | None = None
    topic_pattern: str | None = None
    group_id: str | None = None  # default: k2-iceberg-writer-{data_type} (ADR #012)
    batch_size: int = 1000  # ADR #015
    max_batch_ms: int = 500
    max_messages: int | None = None  # None: daemon mode (ADR #016)
    from_beginning: bool = False
    session_timeout_ms: int | None = None
    tracker_capacity: int = 10_000
    progress_interval_s: float = 10.0
    stop_check_interval_s: float = 1.0
    idle_poll_s: float = 0.5
    namespace: str = NAMESPACE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    kafka_overrides: tuple[tuple[str, Any], ...] = ()
    # A graceful stop spends at most this long talking to the broker (final Kafka commit, dead
    # letters still queued): with the broker down, what could not be sent is logged and the
    # consumer still exits cleanly; the table's recorded offsets cover what Kafka did not get.
    shutdown_timeout_s: float = 8.0
    # Expire and thin the table's snapshots from the commit thread every `every_s` (None: never;
    # the maintenance task still does): the metadata every commit writes holds every snapshot kept.
    snapshot_policy: SnapshotPolicy | None = None
    # Fault injection for the crash test: SIGKILL this process right after the Nth Iceberg
    # commit, before the Kafka commit. Never set in normal operation.
    kill_after_table_commits: int | None = None
    # Same, right after the Nth batch's dead letters were delivered (before any commit of that batch).
    kill_after_dlq_sends: int | None = None

    def __post_init__(self) -> None:
        check_data_type(self.data_type)
        if self.topics and self.topic_pattern:
            raise ValueError("Specify either topics or topic_pattern, not both (ADR #013)")
        if not self.topics and not self.topic_pattern:
            raise ValueError("Specify either topics or topic_pattern (ADR #013): e.g. market.equities.trades.asx")
        if self.batch_size < 1 or self.max_batch_ms < 1:
            raise ValueError("batch_size and max_batch_ms must be positive")

    @property
    def group(self) -> str:
        return self.group_id or consumer_group(self.data_type)

    @property
    def subscription(self) -> list[str]:
        if self.topics:
            return list(self.topics)
        pattern = self.topic_pattern or ""
        return [pattern if pattern.startswith("^") else "^" + pattern]


@dataclass(frozen=True)
class GapRecord:
    detected_at: datetime
    exchange: str
    asset_class: str
    data_type: str
    symbol: str
    expected_sequence: int
    received_sequence: int
    topic: str
    partition: int
    offset: int

    @property
    def gap_size(self) -> int:
        return self.received_sequence - self.expected_sequence


@dataclass(frozen=True)
class LateRecord:
    exchange: str
    data_type: str
    symbol: str
    sequence: int
    seen_at: datetime


class GapSink(Protocol):
    # Optional: the longest value (characters) the sink stores per column, e.g. {"symbol": 32}.
    # A record whose value is longer is poison (dead-letter topic) before sequence tracking.
    max_lengths: dict[str, int]

    def record_gaps(self, gaps: list[GapRecord]) -> list[tuple[GapRecord, str]] | None:
        """Persist gaps; the same gap reported twice (a replay) must stay one record. Returns the
        gaps that could not be stored because of a value in them, each with the reason (their
        records go to the dead-letter topic instead of the table; a replay can never get past
        them otherwise). Outages raise."""

    def record_late(self, events: list[LateRecord]) -> int:
        """Apply late events to open gaps that contain them; return how many gaps became filled."""


class MemoryGapSink:
    """In-process sink (benchmarks, and the engine when no database is wanted)."""

    def __init__(self) -> None:
        self.gaps: dict[tuple[str, str, str, int], GapRecord] = {}
        self.late: list[LateRecord] = []

    max_lengths: dict[str, int] = {}

    def record_gaps(self, gaps: list[GapRecord]) -> list[tuple[GapRecord, str]]:
        for gap in gaps:
            self.gaps.setdefault((gap.exchange, gap.data_type, gap.symbol, gap.expected_sequence), gap)
        return []

    def record_late(self, events: list[LateRecord]) -> int:
        self.late.extend(events)
        return 0


@dataclass
class ConsumerStats:
    started_at: float = field(default_factory=time.time)
    messages: int = 0
    rows_written: int = 0
    batches: int = 0
    gaps: int = 0
    out_of_order: int = 0
    gaps_filled: int = 0
    dlq: int = 0
    duplicates_skipped: int = 0
    evictions: int = 0
    snapshots_expired: int = 0
    snapshot_expiry_failures: int = 0
    lag: int | None = None  # total over `partitions`
    rate: float = 0.0  # messages/s since the previous report
    # One entry per assigned partition: {"topic", "partition", "committed" (next offset the table
    # and the group hold), "end" (log end), "lag" (end - committed), "last_commit_at" (ISO-8601
    # UTC of the last Kafka commit of this partition by this member)}; None where unknown.
    partitions: list[dict[str, Any]] = field(default_factory=list)
    member_id: str | None = None
    # What a stop could not send to the broker (offsets not committed, dead letters not
    # delivered), each with what happens to it: nothing is lost, the table records it or it is re-read.
    not_sent: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return time.time() - self.started_at

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration, 3)
        return data


@dataclass
class _Batch:
    """A decoded, checked and sorted batch on its way to the commit thread."""

    started: float  # perf_counter when its processing began
    messages: int
    table: pa.Table  # rows to append (sorted; may be empty when everything was poison or a duplicate)
    topic_counts: Counter[str]  # fresh messages per topic, in order of first appearance
    next_offsets: dict[tuple[str, int], int]  # recorded in the snapshot summary
    positions: dict[tuple[str, int], int]  # committed to Kafka afterwards


Heartbeat = Callable[[ConsumerStats], None]
StopSignal = Callable[[], bool]
BatchHook = Callable[[pa.Table, float], None]


# A full collection of Python's cyclic GC walks every tracked object; in a process that imported
# pyiceberg (pydantic models) it takes 60-110 ms here whatever the table, and it came every few
# seconds under load (7 full collections, 768 ms in all, max 150 ms, in one 20-s latency run):
# every batch in hand or in flight waits. The consumer moves what it holds long-term (modules,
# table metadata, caches) out of the collector's reach with gc.freeze() at start and then every
# GC_FREEZE_EVERY_S; young objects are still collected as usual, and reference counting frees
# everything that is not in a cycle, frozen or not.
GC_FREEZE_EVERY_S = 60.0


def _freeze_long_lived(*, full: bool) -> None:
    """Collect (all generations at start, else the young ones only, which is cheap) and freeze
    what survives. Cyclic garbage already in the old generation at a periodic freeze is kept
    until the consumer stops (gc.unfreeze() then hands it back to the collector)."""
    gc.collect(2 if full else 1)
    gc.freeze()


def _age(msg: Any, cap: float) -> float:
    """Seconds since the message's Kafka timestamp, within [0, cap] (0 when it has none or it
    lies in the future: another host's clock)."""
    kind, ms = msg.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or ms <= 0:
        return 0.0
    return min(cap, max(0.0, time.time() - ms / 1000))


def _labels(topic: str, data_type: str) -> dict[str, str]:
    try:
        parts = parse_topic(topic)
        return {"exchange": parts["exchange"], "asset_class": parts["asset_class"], "data_type": data_type}
    except ValueError:
        return {"exchange": "unknown", "asset_class": "unknown", "data_type": data_type}


class IcebergConsumer:
    """The consumer loop. `run()` returns the final statistics; `request_stop()` is thread-safe."""

    def __init__(self, config: ConsumerConfig, *, catalog: Any, registry: SchemaSource,
                 gap_sink: GapSink | None = None, stop_signal: StopSignal | None = None,
                 heartbeat: Heartbeat | None = None, table: Any = None,
                 on_batch_committed: BatchHook | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.registry = registry
        self.gap_sink = gap_sink or MemoryGapSink()
        self.stop_signal = stop_signal
        self.heartbeat = heartbeat
        self._progress_gate = ProgressGate()  # consumer_progress only when something moved, or each minute idle
        self.on_batch_committed = on_batch_committed
        self.stats = ConsumerStats()
        self._table = table
        self._stop = threading.Event()
        self._pending: list[Any] = []
        self._written_upto: dict[tuple[str, int], int] = {}
        self._inflight: tuple[Future[None], _Batch] | None = None
        self._in_table: dict[tuple[str, int], int] = {}  # Kafka positions the table holds, owned partitions
        self._single_topic = config.topics[0] if config.topics and len(config.topics) == 1 else None
        self._committer: ThreadPoolExecutor | None = None
        self._topic_ids: dict[str, str] = {}
        self._table_commits = 0
        self._next_expiry = 0.0  # time.monotonic() of the next snapshot expiry (the first after the first commit)
        self._consumer: Consumer | None = None
        self._dlq_producer: Producer | None = None
        self._dlq_topics: set[str] = set()
        self._dlq_failures: list[str] = []
        self._dlq_sends = 0
        # lag bookkeeping (ADR #007; issue 11 items 4-5): never a blocking broker call on the loop
        self._start_offsets: dict[tuple[str, int], int] = {}  # where each owned partition started
        self._last_commit_at: dict[tuple[str, int], float] = {}
        self._listed_ends: dict[tuple[str, int], int] = {}  # ListOffsets(latest) answers
        self._ends_request: dict[Any, Future[Any]] | None = None
        self._ends_requested_at = 0.0
        self._lag_admin: AdminClient | None = None
        self._lag_series: dict[tuple[str, int], tuple[str, ...]] = {}  # metric label values set
        self._deadline: float | None = None  # time.monotonic() by which a stop is done with the broker
        # one DuckDB connection: batch decoding, and reading last sequence numbers from the table
        self._duck = connect(EngineConfig(threads=1, s3=s3_options_of(catalog)))
        self.decoder = BatchDecoder(data_type=config.data_type, registry=registry, con=self._duck)
        self.tracker = SequenceTracker(capacity=config.tracker_capacity, recover=self._recover_sequences)
        self.writer: IcebergWriter | None = None

    # --- control --------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """Finish the batch in hand, write it, commit, close (ADR #016). Safe from signal handlers."""
        self._stop.set()

    @contextmanager
    def signals_stop_gracefully(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT stop the loop gracefully instead of killing the process
        (a `kill`, Ctrl-C, a container stop, or a Celery worker's shutdown reaching its pool
        process); the previous handlers come back on exit, so a pool process that runs other tasks
        afterwards dies on SIGTERM as before. Signal handlers exist only in the main thread:
        elsewhere (a threads pool, a test thread) this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: Any) -> None:
            log.info("shutdown_signal_received", signal=signal.Signals(signum).name)
            self.request_stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # --- set-up ---------------------------------------------------------------------------
    def _kafka_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.config.bootstrap_servers,
            "group.id": self.config.group,
            "enable.auto.commit": False,  # ADR #003: commit only after the Iceberg commit
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # a new group reads what is already there: no loss
            "max.poll.interval.ms": 300_000,
            "enable.partition.eof": False,
            "on_commit": self._on_commit,  # errors of asynchronous offset commits
            "topic.metadata.refresh.interval.ms": 5000,  # pattern subscriptions see new topics soon
            # A broker may hold a fetch for fetch.wait.max.ms (default 500) when little is waiting
            # (Tansu does); bounded by the batch age so latency stays bounded when traffic is thin.
            "fetch.wait.max.ms": max(10, min(100, self.config.max_batch_ms)),
            "fetch.error.backoff.ms": max(10, min(100, self.config.max_batch_ms)),
            # librdkafka keeps a prefetch queue per partition; once it holds queued.min.messages it
            # waits fetch.queue.backoff.ms (default 1 s) before fetching that partition again. With
            # the defaults the loop ran dry between fetches: 190k → 250-300k records/s measured
            # with these two (docs/benchmarks.md). Memory stays capped by queued.max.messages.kbytes.
            "queued.min.messages": max(100_000, 10 * self.config.batch_size),
            "fetch.queue.backoff.ms": 10,
        }
        if self.config.session_timeout_ms:
            conf["session.timeout.ms"] = self.config.session_timeout_ms
            conf["heartbeat.interval.ms"] = max(100, self.config.session_timeout_ms // 6)
        conf.update(dict(self.config.kafka_overrides))
        return conf

    def _check_broker(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers, "socket.timeout.ms": 5000})
        try:
            admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise ConsumerError(
                f"cannot reach Kafka at {self.config.bootstrap_servers} ({exc.args[0]}): start the embedded broker "
                "with `manage.py broker start` or point K2_KAFKA_BOOTSTRAP at a running cluster") from None

    def _load_table(self) -> Any:
        if self._table is not None:
            return self._table
        identifier = table_identifier(self.config.data_type, self.config.namespace)
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self.catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            raise ConsumerError(f"Iceberg table {identifier} does not exist: run `manage.py init_catalog`") from None
        except Exception as exc:  # noqa: BLE001 - any failure here means the catalog is unreachable
            raise ConsumerError(f"cannot reach the Iceberg catalog to load {identifier} ({type(exc).__name__}: "
                                f"{exc}); check K2_ICEBERG_CATALOG_URI and that Postgres is running") from None

    # --- rebalance callbacks ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain(sync=True)
        assert self.writer is not None
        self.writer.refresh()  # rides out a catalog outage within the retry budget
        table = self._table_ref()
        self._seed_sequences(table)
        self._topic_ids.update(self._describe_topic_ids({tp.topic for tp in partitions}))
        recorded = recorded_offsets(table, topic_ids=self._topic_ids)  # any group's: the table's record
        committed: dict[tuple[str, int], int] = {}
        if not self.config.from_beginning:
            try:
                for tp in consumer.committed(partitions, timeout=10):
                    if tp.offset >= 0:
                        committed[(tp.topic, tp.partition)] = tp.offset
            except KafkaException as exc:
                log.warning("committed_offsets_unavailable", error=str(exc))
        for tp in partitions:
            key = (tp.topic, tp.partition)
            in_table = recorded.get(key)
            self._written_upto[key] = in_table or 0
            candidates = [o for o in (in_table, committed.get(key)) if o is not None]
            if candidates:
                tp.offset = max(candidates)
            elif self.config.from_beginning:
                tp.offset = OFFSET_BEGINNING
        log.info("partitions_assigned", group=self.config.group,
                 partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])
        consumer.assign(partitions)
        self._align_group_offsets(consumer, partitions, committed)

    def _describe_topic_ids(self, topics: set[str]) -> dict[str, str]:
        """Current Kafka topic ids (empty for a broker that has none: offsets are then trusted as is)."""
        from confluent_kafka import TopicCollection

        admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers})
        ids: dict[str, str] = {}
        try:
            futures = admin.describe_topics(TopicCollection(sorted(topics)))
            for topic, future in futures.items():
                topic_id = future.result(timeout=10).topic_id
                if topic_id is not None:
                    ids[topic] = str(topic_id)
        except (KafkaException, ValueError, TypeError) as exc:
            log.warning("topic_ids_unavailable", error=str(exc))
        return ids

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._pending:  # write what we hold before another member takes the partitions over
            pending, self._pending = self._pending, []
            self._submit(self._prepare(pending))
        self._drain(sync=True)
        for tp in partitions:
            self._written_upto.pop((tp.topic, tp.partition), None)
            self._in_table.pop((tp.topic, tp.partition), None)
        self._forget_partitions(partitions)
        log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _table_ref(self) -> Any:
        assert self.writer is not None
        return self.writer.table

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> ConsumerStats:
        self._check_broker()
        table = self._load_table()
        label_topic = (self.config.topics or ("",))[0]
        labels = _labels(label_topic, self.config.data_type)
        self.writer = IcebergWriter(table, table_name=self.config.data_type, exchange=labels["exchange"],
                                    asset_class=labels["asset_class"], policy=self.config.retry)
        self._consumer = Consumer(self._kafka_config())
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="k2-iceberg-commit")
        self._consumer.subscribe(self.config.subscription, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        mode = "daemon" if self.config.max_messages is None else "batch"
        log.info("consumer_starting", mode=mode, group=self.config.group, subscription=self.config.subscription,
                 batch_size=self.config.batch_size, max_batch_ms=self.config.max_batch_ms,
                 max_messages=self.config.max_messages)
        metrics.initialise_known_series(exchanges=(labels["exchange"],), asset_classes=(labels["asset_class"],),
                                        data_types=(self.config.data_type,), dlq_reasons=POISON_REASONS)
        metrics.CONSUMERS_RUNNING.labels(**labels).inc()
        self._beat()
        _freeze_long_lived(full=True)
        last_report = last_freeze = time.monotonic()
        last_stop_check = 0.0
        reported_messages = 0
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                if self.config.max_messages is not None and self.stats.messages >= self.config.max_messages:
                    log.info("max_messages_reached", count=self.stats.messages)
                    break
                self._collect()
                if self._pending and not self._stop.is_set():  # at a stop, `_shutdown` writes it
                    pending, self._pending = self._pending, []
                    self._submit(self._prepare(pending))
                elif self._inflight is not None and self._inflight[0].done():
                    self._drain()  # idle: commit the finished batch's offsets to Kafka now
                now = time.monotonic()
                if self.stop_signal is not None and now - last_stop_check >= self.config.stop_check_interval_s:
                    last_stop_check = now
                    if self.stop_signal():
                        log.info("stop_requested")
                        self._stop.set()
                if now - last_freeze >= GC_FREEZE_EVERY_S:
                    last_freeze = now
                    _freeze_long_lived(full=False)
                if now - last_report >= self.config.progress_interval_s:
                    self.stats.rate = (self.stats.messages - reported_messages) / (now - last_report)
                    reported_messages, last_report = self.stats.messages, now
                    self._report_progress()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._shutdown(labels, error)
        return self.stats

    def _collect(self) -> None:
        """Fill `self._pending` up to batch_size, or until the batch is max_batch_ms old, and past
        that while the batch before it is still being committed (it could not be handed over
        anyway: one batch in flight).

        The age counts from the first message's Kafka timestamp (the producer's or the broker's
        clock) when that is in the past, else from its arrival here: messages the broker held
        back arrive old and are not kept waiting a whole window more."""
        consumer = self._consumer
        assert consumer is not None
        limit = self.config.batch_size
        if self.config.max_messages is not None:
            limit = min(limit, self.config.max_messages - self.stats.messages)
        window = self.config.max_batch_ms / 1000
        deadline: float | None = None
        swept = False  # took what librdkafka had queued once the batch was due
        while len(self._pending) < limit and not self._stop.is_set():
            if deadline is None:
                # poll returns as soon as one message is there; consume(n) would wait to fill n
                first = consumer.poll(self.config.idle_poll_s)
                got = [first] if first is not None else []
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    idle = self._inflight is None or self._inflight[0].done()
                    if swept and idle:
                        break
                    if swept:  # the committer is busy: take what arrives until it is free
                        futures_wait([self._inflight[0]])  # type: ignore[index]
                    swept, timeout = True, 0
                # consume(n) waits for n messages or the timeout, whatever a stop signal says: a
                # slice at a time, so a stop (or a lost partition) is seen within idle_poll_s
                got = consumer.consume(num_messages=limit - len(self._pending),
                                       timeout=min(timeout, self.config.idle_poll_s))
            failed = [msg for msg in got if msg.error() is not None]
            for msg in failed:
                err = msg.error()
                if err.fatal():
                    raise ConsumerError(f"Kafka reported a fatal error: {err.str()}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka_consume_error", error=err.str(), code=err.code())
            self._pending.extend([msg for msg in got if msg.error() is None] if failed else got)
            if self._pending and deadline is None:
                deadline = time.monotonic() + window - _age(self._pending[0], window)
            if not got and deadline is None:
                return  # idle: let the loop check stop signals and report progress

    def _prepare(self, msgs: list[Any]) -> _Batch:
        """Steps 1-3 and the sort, on the loop's thread."""
        started = time.perf_counter()
        cfg = self.config
        partitions = [m.partition() for m in msgs]
        offsets = [m.offset() for m in msgs]
        if self._single_topic is not None:  # one topic subscribed: no need to ask every message
            topics = [self._single_topic] * len(msgs)
            key_of = {p: (self._single_topic, p) for p in set(partitions)}
            keys: list[Any] = partitions
        else:
            topics = [m.topic() for m in msgs]
            keys = list(zip(topics, partitions, strict=True))
            key_of = {k: k for k in set(keys)}
        # Kafka returns a partition's messages in offset order: the last one per key is the highest
        positions = {key_of[k]: offset + 1 for k, offset in dict(zip(keys, offsets, strict=True)).items()}
        # 1. what the table already holds (a replay after a crash) is skipped
        written = self._written_upto
        first = dict(zip(reversed(keys), reversed(offsets), strict=True))
        fresh = msgs
        if any(offset < written.get(key_of[k], 0) for k, offset in first.items()):
            floor = {k: written.get(key_of[k], 0) for k in first}
            keep = [offset >= floor[k] for k, offset in zip(keys, offsets, strict=True)]
            skipped = Counter(itertools.compress(topics, [not k for k in keep]))
            for topic, count in skipped.items():
                metrics.DUPLICATES_SKIPPED.labels(**_labels(topic, cfg.data_type)).inc(count)
                self.stats.duplicates_skipped += count
            fresh = list(itertools.compress(msgs, keep))
            topics = list(itertools.compress(topics, keep))
            partitions = list(itertools.compress(partitions, keep))
            offsets = list(itertools.compress(offsets, keep))
        next_offsets = {key: position for key, position in positions.items() if position > written.get(key, 0)}
        self.stats.messages += len(msgs)
        topic_counts = Counter(topics)
        batch = _Batch(started=started, messages=len(msgs), table=pa.table({}), topic_counts=topic_counts,
                       next_offsets=next_offsets, positions=positions)
        if not fresh:
            return batch
        for topic, count in topic_counts.items():
            metrics.MESSAGES_CONSUMED.labels(**_labels(topic, cfg.data_type)).inc(count)
        # 2. decode; poison to the DLQ (flushed before anything is committed)
        decoded = self.decoder.decode([m.value() for m in fresh], partitions, offsets)
        table, unfit = self._unstorable(decoded.table)
        if decoded.poison or unfit:
            self._send_to_dlq(fresh, [*decoded.poison, *unfit])
        # 3. sequence tracking; gaps reach the sink before the table commit (a gap the sink cannot
        # store sends its record to the DLQ: a value must never stop the consumer)
        rejected = self._track(table, fresh, topics)
        if rejected:
            self._send_to_dlq(fresh, rejected)
            drop = pa.array([p.index for p in rejected], type=table[INDEX_COLUMN].type)
            table = table.filter(pc.invert(pc.is_in(table[INDEX_COLUMN], value_set=drop)))
        # 4. (the commit thread appends) sorted, with the batch's offsets in the snapshot summary
        table = table.drop_columns([INDEX_COLUMN])
        if cfg.data_type != "reference_data" and table.num_rows > 1:
            table = table.sort_by([(c, "ascending") for c in SORT_COLUMNS])
        written.update(next_offsets)
        batch.table = table
        return batch

    def _submit(self, batch: _Batch) -> None:
        """Hand a batch to the commit thread once the one before it is committed (one in flight)."""
        self._drain()
        assert self._committer is not None
        self._inflight = (self._committer.submit(self._commit_batch, batch), batch)

    def _drain(self, *, sync: bool = False) -> None:
        """Wait for the batch in flight, then commit its offsets to Kafka: asynchronously, or
        synchronously (every position the table holds for partitions this member owns) before a
        rebalance and at shutdown. A failed commit of that batch is raised here, after the
        synchronous commit of what did reach the table."""
        failure: BaseException | None = None
        if self._inflight is not None:
            future, batch = self._inflight
            self._inflight = None
            failure = future.exception()
            if failure is None:
                self._in_table.update(batch.positions)
                if not sync:
                    self._commit_kafka(batch.positions, asynchronous=True)
        if sync and self._in_table:
            self._commit_kafka(self._in_table)
        if failure is not None:
            raise failure

    def _commit_batch(self, batch: _Batch) -> None:
        """Step 4, on the commit thread: one Iceberg transaction recording the batch's offsets."""
        cfg = self.config
        assert self.writer is not None
        table = batch.table
        if table.num_rows:
            self.writer.append(table, properties=offsets_properties(cfg.group, batch.next_offsets, self._topic_ids))
            self._table_commits += 1
            if cfg.kill_after_table_commits is not None and self._table_commits >= cfg.kill_after_table_commits:
                log.warning("fault_injection_sigkill", after_table_commits=self._table_commits)
                os.kill(os.getpid(), signal.SIGKILL)
            self._maybe_expire_snapshots()
        committed_at = time.time()
        if not batch.topic_counts:
            return  # nothing fresh: only the Kafka positions move
        self.stats.batches += 1
        self.stats.rows_written += table.num_rows
        duration = time.perf_counter() - batch.started
        for topic, count in batch.topic_counts.items():
            lbl = _labels(topic, cfg.data_type)
            metrics.CONSUMER_BATCHES.labels(**lbl).inc()
            metrics.CONSUMER_BATCH_SIZE.labels(**lbl).observe(count)
            metrics.CONSUMER_BATCH_DURATION.labels(**lbl).observe(duration)
        if table.num_rows:
            first_topic = next(iter(batch.topic_counts))
            metrics.MESSAGES_WRITTEN.labels(**_labels(first_topic, cfg.data_type)).inc(table.num_rows)
        if self.on_batch_committed is not None:
            self.on_batch_committed(table, committed_at)

    def _maybe_expire_snapshots(self) -> None:
        """Apply the snapshot policy when it is due, on the commit thread, between two appends (so
        it never races this consumer's own commits). Housekeeping: a failure is logged, counted and
        retried at the next interval; it never stops the pipeline."""
        policy = self.config.snapshot_policy
        if policy is None or time.monotonic() < self._next_expiry:
            return
        self._next_expiry = time.monotonic() + policy.every_s
        started = time.perf_counter()
        try:
            result = policy.apply(self._table_ref())
        except Exception as exc:  # noqa: BLE001
            self.stats.snapshot_expiry_failures += 1
            log.warning("snapshot_expiry_failed", error=str(exc), error_type=type(exc).__name__)
            return
        self.stats.snapshots_expired += len(result.expired)
        log.info("snapshots_thinned", expired=len(result.expired), kept=result.kept,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))

    def _commit_kafka(self, positions: dict[tuple[str, int], int], *, asynchronous: bool = False) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        if asynchronous:  # failures reach `_on_commit`; the table holds the offsets either way
            try:
                consumer.commit(offsets=offsets, asynchronous=True)
                return
            except KafkaException as exc:
                log.warning("kafka_commit_failed", attempt=1, error=str(exc))
        if not self._broker_reachable():  # a synchronous commit would wait ~7 s per attempt for nothing
            self._not_sent("offsets not committed to Kafka (broker unreachable): "
                           + ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items()))
                           + "; the table records them, so a restart resumes there")
            return
        for attempt in range(3):
            if attempt and self._deadline is not None and time.monotonic() >= self._deadline:
                break
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self._last_commit_at.update(dict.fromkeys(positions, time.time()))
                return
            except KafkaException as exc:
                for topic in {t for t, _ in positions}:
                    metrics.KAFKA_COMMIT_ERRORS.labels(**_labels(topic, self.config.data_type)).inc()
                log.warning("kafka_commit_failed", attempt=attempt + 1, error=str(exc))
                time.sleep(0.1 * (2 ** attempt))
        # The table already records these offsets: a restart resumes after them, no duplicates.
        log.error("kafka_commit_gave_up", offsets={f"{t}[{p}]": o for (t, p), o in positions.items()})
        if self._deadline is not None:
            self._not_sent("offsets not committed to Kafka: "
                           + ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items()))
                           + "; the table records them, so a restart resumes there")

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            now = time.time()
            self._last_commit_at.update({(tp.topic, tp.partition): now for tp in partitions if tp.error is None})
            return
        if err.code() == KafkaError._NO_OFFSET:
            return
        for topic in {tp.topic for tp in partitions}:
            metrics.KAFKA_COMMIT_ERRORS.labels(**_labels(topic, self.config.data_type)).inc()
        # The table already records these offsets: a restart resumes after them, no duplicates.
        log.warning("kafka_commit_failed", asynchronous=True, error=err.str())

    def _unstorable(self, table: pa.Table) -> tuple[pa.Table, list[Poison]]:
        """Rows with a value longer than the gap sink stores (e.g. a 40-character symbol): poison,
        taken out before sequence tracking, so a gap in such a stream can never make the gap
        insert fail before the Iceberg commit (a batch replayed and failed forever)."""
        limits = getattr(self.gap_sink, "max_lengths", None) or {}
        if self.config.data_type == "reference_data" or table.num_rows == 0 or not limits:
            return table, []
        masks = {col: pc.greater(pc.utf8_length(table[col]), limit)
                 for col, limit in limits.items() if col in table.column_names}
        masks = {col: mask for col, mask in masks.items() if pc.any(mask).as_py()}
        if not masks:
            return table, []
        poison: list[Poison] = []
        bad = None
        for col, mask in masks.items():
            limit = limits[col]
            rows = table.filter(mask)
            for index, value in zip(rows[INDEX_COLUMN].to_pylist(), rows[col].to_pylist(), strict=True):
                poison.append(Poison(index, "value_too_long",
                                     f"{col} is {len(value)} characters long ({value[:40]!r}…); at most {limit} can "
                                     "be stored (sequence-gap store)"))
            bad = mask if bad is None else pc.or_(bad, mask)
        return table.filter(pc.invert(bad)), poison

    def _track(self, table: pa.Table, fresh: list[Any], topics: list[str]) -> list[Poison]:
        """Sequence checks; gaps and late events to the sink. Returns the records whose gap the sink
        could not store (a value in them): the caller sends them to the DLQ instead of the table."""
        cfg = self.config
        if cfg.data_type == "reference_data" or table.num_rows == 0:
            return []
        report = self.tracker.check(table.select(["exchange", "symbol", "sequence_number", INDEX_COLUMN]),
                                    row_column=INDEX_COLUMN)
        now = datetime.now(UTC)
        gaps: list[GapRecord] = []
        rows: dict[int, int] = {}  # id(record) → row
        for gap in report.gaps:
            msg = fresh[gap.row]
            lbl = _labels(topics[gap.row], cfg.data_type)
            record = GapRecord(detected_at=now, exchange=gap.exchange, asset_class=lbl["asset_class"],
                               data_type=cfg.data_type, symbol=gap.symbol, expected_sequence=gap.expected,
                               received_sequence=gap.received, topic=msg.topic(), partition=msg.partition(),
                               offset=msg.offset())
            gaps.append(record)
            rows[id(record)] = gap.row
        rejected: list[Poison] = []
        if gaps:
            refused = {id(g): reason for g, reason in (self.gap_sink.record_gaps(gaps) or [])}
            for record in gaps:
                row = rows[id(record)]
                if id(record) in refused:
                    rejected.append(Poison(row, "gap_unstorable",
                                           f"sequence gap {record.expected_sequence}..{record.received_sequence - 1} "
                                           f"of {record.symbol!r} cannot be stored: {refused[id(record)]}"))
                    continue
                log.warning("sequence_gap_detected", symbol=record.symbol, exchange=record.exchange,
                            data_type=cfg.data_type, expected=record.expected_sequence,
                            received=record.received_sequence, gap=record.gap_size, topic=record.topic,
                            partition=record.partition, offset=record.offset)
                lbl = _labels(topics[row], cfg.data_type)
                metrics.SEQUENCE_GAPS.labels(**lbl).inc()
                metrics.SEQUENCE_GAP_MESSAGES.labels(**lbl).inc(record.gap_size)
                self.stats.gaps += 1
        if report.late:
            for event in report.late:
                metrics.SEQUENCE_OUT_OF_ORDER.labels(**_labels(topics[event.row], cfg.data_type)).inc()
            filled = self.gap_sink.record_late([LateRecord(exchange=e.exchange, data_type=cfg.data_type,
                                                           symbol=e.symbol, sequence=e.sequence, seen_at=now)
                                                for e in report.late])
            self.stats.out_of_order += len(report.late)
            self.stats.gaps_filled += filled
            if filled:
                metrics.SEQUENCE_GAPS_FILLED.labels(**_labels(topics[report.late[0].row], cfg.data_type)).inc(filled)
        if report.evicted:
            metrics.SEQUENCE_EVICTIONS.labels(**_labels(topics[0], cfg.data_type)).inc(report.evicted)
            self.stats.evictions += report.evicted
        metrics.SEQUENCE_TRACKED.labels(**_labels(topics[0], cfg.data_type)).set(len(self.tracker))
        return rejected

    def _seed_sequences(self, table: Any) -> None:
        """On assignment: the last sequence of every stream in the table (up to the tracker's
        capacity, most recently traded first), in one aggregate, so later batches need no reads."""
        if self.config.data_type == "reference_data":
            return
        started = time.perf_counter()
        if table.current_snapshot() is None:
            last, complete = {}, True
        else:
            last, complete = table_last_sequences(self._duck, table.metadata_location,
                                                  limit=self.config.tracker_capacity)
        self.tracker.seed(last, complete=complete)
        log.info("sequences_seeded", streams=len(last), complete=complete,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))

    def _recover_sequences(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Streams the tracker does not hold (evicted, or beyond what seeding read)."""
        if self.writer is None:
            return {}
        self._drain()  # the batch in flight may hold these streams' latest rows
        table = self.writer.table
        if table.current_snapshot() is None:
            return {}
        return table_last_sequences(self._duck, table.metadata_location, keys=keys)[0]

    # --- dead letters -----------------------------------------------------------------------
    def _ensure_dlq_topic(self, topic: str, partitions: int) -> None:
        if topic in self._dlq_topics:
            return
        if not self._broker_reachable():
            raise DeadLettersUndelivered(f"cannot reach Kafka at {self.config.bootstrap_servers} to write to {topic}; "
                                         "nothing of this batch was committed, so it is read again after a restart")
        admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers})
        try:
            if topic not in admin.list_topics(timeout=max(0.1, self._budget(10))).topics:
                futures = admin.create_topics([NewTopic(topic, num_partitions=max(1, partitions),
                                                        replication_factor=1)])
                try:
                    futures[topic].result(timeout=max(0.1, self._budget(15)))
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        except (KafkaException, TimeoutError) as exc:
            raise DeadLettersUndelivered(f"cannot create the dead-letter topic {topic} ({exc}); check the broker, "
                                         "then restart the consumer (nothing of this batch was committed)") from None
        self._dlq_topics.add(topic)

    def _send_to_dlq(self, fresh: list[Any], poison: list[Poison]) -> None:
        if self._dlq_producer is None:
            self._dlq_producer = Producer({"bootstrap.servers": self.config.bootstrap_servers,
                                           "enable.idempotence": True, "acks": "all",
                                           "partitioner": PARTITIONER})
        producer = self._dlq_producer
        failures = self._dlq_failures

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(err.str())

        for item in poison:
            msg = fresh[item.index]
            topic = msg.topic()
            target = dlq_topic(topic)
            self._ensure_dlq_topic(target, 1)
            # Keyed by the source position: a dead letter sent again after a crash (sent, then the
            # process died before the batch's commit) carries the same key, so a DLQ reader can drop
            # the repeat (keep the first message per key; a compacted DLQ topic does it by itself).
            position = f"{topic}/{msg.partition()}/{msg.offset()}"
            headers = [
                ("k2.error.reason", item.reason.encode()),
                ("k2.error", item.error.encode()),
                ("k2.source.topic", topic.encode()),
                ("k2.source.partition", str(msg.partition()).encode()),
                ("k2.source.offset", str(msg.offset()).encode()),
                ("k2.source.position", position.encode()),
                ("k2.consumer.group", self.config.group.encode()),
            ]
            if msg.key() is not None:
                headers.append(("k2.source.key", msg.key()))
            producer.produce(target, key=position.encode(), value=msg.value(), headers=headers,
                             on_delivery=delivered)
            metrics.DLQ_MESSAGES.labels(**_labels(topic, self.config.data_type), reason=item.reason).inc()
            log.warning("message_sent_to_dlq", reason=item.reason, error=item.error, topic=topic,
                        partition=msg.partition(), offset=msg.offset(), dlq=target)
        remaining = producer.flush(self._budget(30))
        if remaining or failures:
            detail = "; ".join(failures[:3]) or f"{remaining} undelivered"
            failures.clear()
            if remaining:  # drop them: the batch is not committed and is re-read, so they come again
                producer.purge()
                producer.flush(0)
            # Nothing is committed yet: the batch is re-read after a restart, nothing is lost.
            raise DeadLettersUndelivered(f"could not write poison messages to the dead-letter topic ({detail}); "
                                "check the broker, then restart the consumer")
        self.stats.dlq += len(poison)
        self._dlq_sends += 1
        if self.config.kill_after_dlq_sends is not None and self._dlq_sends >= self.config.kill_after_dlq_sends:
            log.warning("fault_injection_sigkill", after_dlq_sends=self._dlq_sends)
            os.kill(os.getpid(), signal.SIGKILL)

    # --- reporting and shutdown -------------------------------------------------------------
    def _align_group_offsets(self, consumer: Consumer, partitions: list[TopicPartition],
                             committed: dict[tuple[str, int], int]) -> None:
        """On assignment: remember where each partition starts (the lag of a partition this member
        has not read from yet counts from there, not from the log start), and commit the group to
        the offsets the table recorded where those are ahead of the group's (a crash between the
        Iceberg and the Kafka commit, or a group reset), so outside tools (kafka-consumer-groups,
        kafbat) see the lag that is really left. Asynchronous: a failure is logged by `_on_commit`."""
        ahead: list[TopicPartition] = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                self._start_offsets[key] = tp.offset
                if tp.offset > committed.get(key, -1):
                    ahead.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        if ahead:
            log.info("group_offsets_aligned_to_table", group=self.config.group,
                     partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in ahead])
            try:
                consumer.commit(offsets=ahead, asynchronous=True)
            except KafkaException as exc:
                log.warning("kafka_commit_failed", asynchronous=True, error=str(exc))

    def _forget_partitions(self, partitions: list[TopicPartition]) -> None:
        """Revoked or lost partitions: their lag is another member's to report (metric series too)."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._start_offsets.pop(key, None)
            self._last_commit_at.pop(key, None)
            self._listed_ends.pop(key, None)
            series = self._lag_series.pop(key, None)
            if series is not None:
                # prometheus_client's multiprocess mode cannot remove a series (it warns and keeps
                # the value in this process's file): zero it first, so the `max` over processes
                # is the owning member's lag, not this member's last value.
                metrics.CONSUMER_LAG.labels(*series).set(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    try:
                        metrics.CONSUMER_LAG.remove(*series)
                    except KeyError:
                        pass

    def _refresh_listed_ends(self, assignment: list[TopicPartition]) -> None:
        """Collect the answer to the previous ListOffsets(latest) request, if it has come, and send
        the next one. Never waits: the admin client's own thread talks to the broker."""
        request = self._ends_request
        if request is not None:
            if not all(f.done() for f in request.values()):
                if time.monotonic() - self._ends_requested_at < 30:
                    return
                request = {}  # Tansu sometimes never answers it: ask again
            self._ends_request = None
            owned = {(tp.topic, tp.partition) for tp in assignment}
            for tp, future in request.items():
                key = (tp.topic, tp.partition)
                if key in owned and future.exception() is None and future.result().offset >= 0:
                    self._listed_ends[key] = future.result().offset
        if not assignment:
            return
        from confluent_kafka.admin import OffsetSpec

        if self._lag_admin is None:
            self._lag_admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers,
                                           "socket.timeout.ms": 5000})
        self._ends_requested_at = time.monotonic()
        try:
            self._ends_request = self._lag_admin.list_offsets(
                {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in assignment},
                request_timeout=5)
        except (KafkaException, ValueError, TypeError) as exc:
            log.debug("end_offsets_request_failed", error=str(exc))

    def partition_lag(self) -> tuple[int | None, list[dict[str, Any]]]:
        """Total and per-partition lag of the partitions this member owns, from local state only
        (no broker round trip on the loop's thread).

        The end of each log is the larger of the high watermark of the last fetch response (kept
        by librdkafka for every partition it fetches) and the last ListOffsets(latest) answer.
        Both are the log end on Kafka. Tansu answers ListOffsets (and a watermark query) with the
        base offset of the last record batch + 1, which is short of the end by up to a batch,
        while its fetch responses carry the true end: the fetch value wins there. `committed` is
        the next offset the table holds (and the group has been or is being committed to); for a
        partition nothing has been written from yet, the offset it started from."""
        consumer = self._consumer
        if consumer is None:
            return None, []
        try:
            assignment = consumer.assignment()
        except (KafkaException, RuntimeError):
            return None, []
        entries: list[dict[str, Any]] = []
        total: int | None = 0
        for tp in sorted(assignment, key=lambda t: (t.topic, t.partition)):
            key = (tp.topic, tp.partition)
            try:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                low, high = -1, -1
            ends = [o for o in (high, self._listed_ends.get(key)) if o is not None and o >= 0]
            end = max(ends) if ends else None
            committed = self._in_table.get(key, self._start_offsets.get(key))
            base = committed
            if base is None:  # nothing committed nor recorded (a new group): from where it reads, or the log start
                try:
                    position = consumer.position([tp])[0].offset
                except KafkaException:
                    position = -1
                base = position if position >= 0 else low if low >= 0 else None
            lag = max(0, end - base) if end is not None and base is not None else None
            if lag is None:
                total = None
            elif total is not None:
                total += lag
            stamp = self._last_commit_at.get(key)
            entries.append({"topic": tp.topic, "partition": tp.partition, "committed": committed, "end": end,
                            "lag": lag, "last_commit_at": datetime.fromtimestamp(stamp, UTC).isoformat()
                            if stamp is not None else None})
        return total, entries

    def lag(self) -> int | None:
        """Total lag over the partitions this member owns (see `partition_lag`)."""
        return self.partition_lag()[0]

    def _update_lag(self, *, ask_broker: bool = True) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if ask_broker:
            try:
                self._refresh_listed_ends(consumer.assignment())
            except (KafkaException, RuntimeError):
                pass
        self.stats.lag, self.stats.partitions = self.partition_lag()
        try:
            self.stats.member_id = consumer.memberid()
        except (KafkaException, RuntimeError):
            pass
        for entry in self.stats.partitions:
            if entry["lag"] is None:
                continue
            key = (entry["topic"], entry["partition"])
            series = (*_labels(entry["topic"], self.config.data_type).values(), self.config.group,
                      str(entry["partition"]))
            metrics.CONSUMER_LAG.labels(*series).set(entry["lag"])
            self._lag_series[key] = series

    def _beat(self) -> None:
        label_topic = (self.config.topics or ("",))[0]
        metrics.CONSUMER_HEARTBEAT.labels(**_labels(label_topic, self.config.data_type),
                                          group=self.config.group).set(time.time())

    def _report_progress(self) -> None:
        self._beat()
        self._update_lag()
        if self._progress_gate.due(self.stats.messages, self.stats.rows_written, self.stats.gaps, self.stats.dlq):
            log.info("consumer_progress", messages=self.stats.messages, rows=self.stats.rows_written,
                     msgs_per_s=round(self.stats.rate, 1), lag=self.stats.lag, gaps=self.stats.gaps,
                     dlq=self.stats.dlq, batches=self.stats.batches)
        if self.heartbeat is not None:
            self.heartbeat(self.stats)

    def _budget(self, default: float) -> float:
        """Seconds a broker call may take: `default` while running, what is left of the shutdown
        budget once a stop has begun."""
        if self._deadline is None:
            return default
        return max(0.0, min(default, self._deadline - time.monotonic()))

    def _broker_reachable(self) -> bool:
        """A TCP connection to one of the bootstrap servers, within a second (or what is left of
        the stop budget): librdkafka's synchronous calls wait for a coordinator that is not there."""
        for server in self.config.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                              timeout=max(0.05, self._budget(1.0))):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def _not_sent(self, what: str) -> None:
        """Log what could not be sent to the broker; at a stop, also keep it for the final report."""
        if self._deadline is None:
            log.warning("not_sent", detail=what)
        elif what not in self.stats.not_sent:
            self.stats.not_sent.append(what)
            log.warning("not_sent_at_shutdown", detail=what)

    def _shutdown(self, labels: dict[str, str], error: BaseException | None) -> None:
        """Write the batch in hand, commit what the table holds to Kafka, close. The broker part is
        bounded by `shutdown_timeout_s`: with the broker down, the offsets (which the table records)
        and any dead letters are reported as not sent, and the stop is still clean (ADR #016)."""
        consumer = self._consumer
        self._deadline = time.monotonic() + self.config.shutdown_timeout_s
        try:
            if consumer is not None and self._pending and error is None:
                pending, self._pending = self._pending, []
                try:
                    batch = self._prepare(pending)
                except DeadLettersUndelivered as exc:
                    batch = None
                    self._not_sent(f"the last {len(pending)} messages read were not written ({exc}); nothing of "
                                   "them is committed, so a restart reads them again")
                if batch is not None:
                    self._submit(batch)
            if error is None:
                self._drain(sync=True)
            elif consumer is not None:
                try:  # what reached the table before the error: its offsets go to Kafka too
                    self._drain(sync=True)
                except Exception as exc:  # noqa: BLE001 - the first error is the one raised
                    log.warning("inflight_batch_failed_during_shutdown", error=str(exc))
        finally:
            if self._committer is not None:
                self._committer.shutdown(wait=True)
            if consumer is not None:
                self._update_lag(ask_broker=False)
                consumer.close()
            if self._dlq_producer is not None:
                left = self._dlq_producer.flush(self._budget(10))
                if left:
                    self._not_sent(f"{left} dead letters not delivered to the DLQ topic; their batch was not "
                                   "committed, so a restart reads those messages again")
                self._dlq_producer = None
            self.decoder.close()
            self._duck.close()
            gc.unfreeze()
            metrics.CONSUMERS_RUNNING.labels(**labels).dec()
            log.info("consumer_stopped", messages=self.stats.messages, rows=self.stats.rows_written,
                     batches=self.stats.batches, gaps=self.stats.gaps, dlq=self.stats.dlq,
                     duplicates_skipped=self.stats.duplicates_skipped, not_sent=self.stats.not_sent,
                     duration_seconds=round(self.stats.duration, 3), error=str(error) if error else None)
            if self.heartbeat is not None and error is None:
                self.heartbeat(self.stats)
