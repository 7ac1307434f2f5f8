"""The consumer loop: Kafka → Iceberg, one batch at a time (ADR #003, #011–#016).

Per batch (sized from what is waiting: what is at hand at once when traffic is thin, up to
`batch_size` messages with a backlog, never older than `max_batch_ms` from its first message's
Kafka timestamp; see `_collect`):

1. drop messages the table already holds (offset below what a snapshot recorded);
2. decode the whole batch at once (`decode.BatchDecoder`); poison messages go to
   `{topic}.dlq` (`dlq.DeadLetterQueue`), and are counted;
3. check sequence numbers per stream (`gaps.GapReporter`); gaps and late events go to the
   `GapSink` *before* the Iceberg commit, so a crash can never hide a gap;
4. sort by symbol, exchange_timestamp, sequence_number and append in one Iceberg transaction
   whose snapshot summary records the next offset of every topic-partition in the batch, on the
   commit thread (`pipeline.CommitPipeline`: one batch in flight, committed in order);
5. only then commit the offsets to Kafka (`kafka_offsets.KafkaOffsetCommitter`; manual commits
   only): asynchronously, except before a rebalance and at shutdown, where it is synchronous.

Steps 1-3 run on the loop's thread while the previous batch is in step 4. Whatever reads the
table (partition assignment, sequence recovery) first waits for the batch in flight.

Per-message work in Python is limited to pulling topic, partition, offset and value out of
each message (one `map` over each accessor, no bytecode per message); offsets, duplicates and
counts are computed per batch.

Exactly-once into the table: on partition assignment the consumer starts from the larger of
the group's committed offset and the offset the table recorded, by any group
(`offsets.resume_offsets`), so a crash between steps 4 and 5 does not write the batch twice,
nor does a second group on the table.
"""

from __future__ import annotations

import gc
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from catalog.engine.datatypes import spec
from catalog.engine.iceberg import table_identifier
from catalog.engine.storage import s3_options_of
from catalog.engine.writer import IcebergWriter, call_catalog, describe_catalog_of, offsets_properties, recorded_offsets
from ingestion.engine.consumer.budget import StopBudget
from ingestion.engine.consumer.config import ConsumerConfig, kafka_settings
from ingestion.engine.consumer.dlq import DeadLetterQueue
from ingestion.engine.consumer.errors import ConsumerError, DeadLettersUndelivered
from ingestion.engine.consumer.gaps import GapReporter, GapSink
from ingestion.engine.consumer.kafka_offsets import KafkaOffsetCommitter
from ingestion.engine.consumer.lag import LagTracker
from ingestion.engine.consumer.offsets import TopicPartitionKey, resume_offsets
from ingestion.engine.consumer.pipeline import CommitPipeline, PreparedBatch
from ingestion.engine.consumer.stats import ConsumerStats, metric_labels
from ingestion.engine.decode import INDEX_COLUMN, POISON_REASONS, BatchDecoder, Poison, SchemaSource
from ingestion.engine.progress import ProgressGate
from ingestion.engine.sequence import SequenceTracker, table_last_sequences
from ingestion.engine.topics import topic_ids
from k2core import metrics
from k2core.duckdb_conn import DuckDBConfig, connect
from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")

Heartbeat = Callable[[ConsumerStats], None]
StopSignal = Callable[[], bool]
BatchHook = Callable[[pa.Table, float], None]
DeadLetterFactory = Callable[..., DeadLetterQueue]


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


def message_age(msg: Any, cap: float) -> float:
    """Seconds since the message's Kafka timestamp, within [0, cap] (0 when it has none or it
    lies in the future: another host's clock)."""
    kind, ms = msg.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or ms <= 0:
        return 0.0
    return min(cap, max(0.0, time.time() - ms / 1000))


class IcebergConsumer:
    """The consumer loop. `run()` returns the final statistics; `request_stop()` is thread-safe.

    `gap_sink` is where sequence gaps go (the ORM sink in the platform, `MemoryGapSink` where gaps
    need not outlive the process). `dead_letters` builds the dead-letter queue (the keyword
    arguments of `DeadLetterQueue`); `on_batch_committed(rows, committed_at)` is called on the
    commit thread after each Iceberg commit of fresh messages, before its Kafka commit."""

    def __init__(self, config: ConsumerConfig, *, catalog: Any, registry: SchemaSource, gap_sink: GapSink,
                 stop_signal: StopSignal | None = None, heartbeat: Heartbeat | None = None, table: Any = None,
                 on_batch_committed: BatchHook | None = None,
                 dead_letters: DeadLetterFactory = DeadLetterQueue) -> None:
        self.config = config
        self.catalog = catalog
        self.registry = registry
        self.gap_sink = gap_sink
        self.stop_signal = stop_signal
        self.heartbeat = heartbeat
        self.on_batch_committed = on_batch_committed
        self.stats = ConsumerStats()
        self._progress_gate = ProgressGate()  # consumer_progress only when something moved, or each minute idle
        self._table = table
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._pending: list[Any] = []  # messages read, not yet prepared
        # {(topic, partition): next offset} of owned partitions (see `offsets`):
        self._table_upto: dict[TopicPartitionKey, int] = {}  # what committed snapshots hold
        self._sent_to_table_upto: dict[TopicPartitionKey, int] = {}  # ... and the batch in flight
        self._topic_ids: dict[str, str] = {}
        self._next_expiry = 0.0  # time.monotonic() of the next snapshot expiry (the first after the first commit)
        self.budget = StopBudget(bootstrap_servers=config.bootstrap_servers, timeout_s=config.shutdown_timeout_s,
                                 not_sent=self.stats.not_sent)
        self.kafka_offsets = KafkaOffsetCommitter(group=config.group, data_type=config.data_type, budget=self.budget)
        self.dead_letters = dead_letters(bootstrap_servers=config.bootstrap_servers, group=config.group,
                                         data_type=config.data_type, budget=self.budget)
        self.lag_tracker = LagTracker(bootstrap_servers=config.bootstrap_servers, group=config.group,
                                      data_type=config.data_type)
        self.pipeline = CommitPipeline(self._commit_batch)
        # one DuckDB connection: batch decoding, and reading last sequence numbers from the table
        self._duck = connect(DuckDBConfig(threads=1, s3=s3_options_of(catalog)))
        self.decoder = BatchDecoder(data_type=config.data_type, registry=registry, con=self._duck)
        self.tracker = SequenceTracker(capacity=config.tracker_capacity, recover=self._recover_sequences)
        self.gaps = GapReporter(sink=gap_sink, tracker=self.tracker, data_type=config.data_type, stats=self.stats)
        self.writer: IcebergWriter | None = None

    # --- control --------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """A stop was requested (signal, `request_stop`, the stop signal, or max_messages)."""
        return self._stop.is_set()

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

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> ConsumerStats:
        labels = self._start()
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
                    self._submit(self._prepare(self._take_pending()))
                elif self.pipeline.inflight and not self.pipeline.busy:
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

    def _take_pending(self) -> list[Any]:
        pending, self._pending = self._pending, []
        return pending

    # --- set-up ---------------------------------------------------------------------------
    def _start(self) -> dict[str, str]:
        """Check the broker, load the table, subscribe; the metric labels of this consumer."""
        self._check_broker()
        table = self._load_table()
        labels = self._labels()
        self.writer = IcebergWriter(table, table_name=self.config.data_type, exchange=labels["exchange"],
                                    asset_class=labels["asset_class"], policy=self.config.retry)
        self._consumer = Consumer(kafka_settings(self.config, on_commit=self.kafka_offsets.on_commit))
        self.kafka_offsets.consumer = self._consumer
        self.pipeline.start()
        self._consumer.subscribe(self.config.subscription, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        mode = "daemon" if self.config.max_messages is None else "batch"
        log.info("consumer_starting", mode=mode, group=self.config.group, subscription=self.config.subscription,
                 batch_size=self.config.batch_size, batch_floor=self.config.batch_floor,
                 max_batch_ms=self.config.max_batch_ms,
                 max_messages=self.config.max_messages)
        metrics.initialise_known_series(exchanges=(labels["exchange"],), asset_classes=(labels["asset_class"],),
                                        data_types=(self.config.data_type,), dlq_reasons=POISON_REASONS)
        metrics.CONSUMERS_RUNNING.labels(**labels).inc()
        self._beat()
        _freeze_long_lived(full=True)
        return labels

    def _labels(self) -> dict[str, str]:
        return metric_labels((self.config.topics or ("",))[0], self.config.data_type)

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

        try:  # a catalog that is down is waited for within the retry budget, then CatalogUnavailable
            return call_catalog(lambda: self.catalog.load_table(identifier), what=f"load table {identifier}",
                                catalog=describe_catalog_of(self.catalog), policy=self.config.retry)
        except (NoSuchTableError, NoSuchNamespaceError):
            raise ConsumerError(f"Iceberg table {identifier} does not exist: run `manage.py init_catalog`") from None

    def _table_ref(self) -> Any:
        assert self.writer is not None
        return self.writer.table

    # --- rebalance callbacks ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain(sync=True)
        assert self.writer is not None
        self.writer.refresh()  # rides out a catalog outage within the retry budget
        table = self._table_ref()
        self._seed_sequences(table)
        self._topic_ids.update(topic_ids(self.config.bootstrap_servers, {tp.topic for tp in partitions}))
        recorded = recorded_offsets(table, topic_ids=self._topic_ids)  # any group's: the table's record
        group_committed: dict[TopicPartitionKey, int] = {}
        if not self.config.from_beginning:
            try:
                for tp in consumer.committed(partitions, timeout=10):
                    if tp.offset >= 0:
                        group_committed[(tp.topic, tp.partition)] = tp.offset
            except KafkaException as exc:
                log.warning("committed_offsets_unavailable", error=str(exc))
        keys = [(tp.topic, tp.partition) for tp in partitions]
        starts = resume_offsets(keys, table_upto=recorded, group_committed=group_committed,
                                from_beginning=self.config.from_beginning)
        for tp, key in zip(partitions, keys, strict=True):
            self._sent_to_table_upto[key] = recorded.get(key) or 0
            if key in starts:
                tp.offset = starts[key]
        log.info("partitions_assigned", group=self.config.group,
                 partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])
        consumer.assign(partitions)
        self.lag_tracker.started(partitions)
        self.kafka_offsets.align_group(partitions, group_committed)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._pending:  # write what we hold before another member takes the partitions over
            self._submit(self._prepare(self._take_pending()))
        self._drain(sync=True)
        for tp in partitions:
            self._sent_to_table_upto.pop((tp.topic, tp.partition), None)
            self._table_upto.pop((tp.topic, tp.partition), None)
        self.lag_tracker.forget(partitions)
        self.kafka_offsets.forget(partitions)
        log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    # --- collecting a batch ---------------------------------------------------------------
    # While the commit thread is busy and little is waiting, the loop looks for newly arrived
    # messages this often (it wakes at once when the commit is done).
    COLLECT_SLICE_S = 0.01
    # With a backlog, how long a fetch may take to bring more before the batch goes as it is
    # (librdkafka's fetch.wait.max.ms is at most 100 ms here).
    FETCH_WAIT_S = 0.2

    def _collect(self) -> None:
        """Fill `self._pending` with the next batch, sized from what is waiting:

        - the first message is awaited (`poll` returns as soon as one is there);
        - the batch then takes what librdkafka has already fetched, without waiting, up to its
          target: `batch_floor` when little is waiting, up to `batch_size` with a backlog (a
          first message already `max_batch_ms` old on arrival, or the owned partitions' log ends,
          from the last fetch responses, past what was read);
        - with a backlog, it fills to its target as fast as the fetches bring messages, for at
          most `max_batch_ms`, and goes as it is once the partitions' log ends are reached while
          the commit thread is free (the consumer has caught up);
        - otherwise it is handed over as soon as nothing more is at hand, the commit thread is
          free and the last batch was handed over at least `min_commit_interval_ms` ago (thin
          traffic: a lone message goes at once, a steady trickle in one commit per interval), at
          its target, or once its first message is `max_batch_ms` old; while the batch before is
          being committed, it keeps taking what arrives (it could not be handed over anyway).

        The age counts from the first message's Kafka timestamp (the producer's or the broker's
        clock) when that is in the past, else from its arrival here: messages the broker held
        back arrive old and are not kept waiting a whole window more."""
        consumer = self._consumer
        assert consumer is not None
        ceiling = self.config.batch_size
        if self.config.max_messages is not None:
            ceiling = min(ceiling, self.config.max_messages - self.stats.messages)
        if not self._pending:
            first = consumer.poll(self.config.idle_poll_s)
            self._pending.extend(self._usable([first] if first is not None else []))
            if not self._pending:
                return  # idle: let the loop check stop signals and report progress
        window = self.config.max_batch_ms / 1000
        started = time.monotonic()
        deadline = started + window - message_age(self._pending[0], window)
        target = self._batch_target(ceiling, overdue=deadline <= started)
        floor = min(self.config.batch_floor, ceiling)
        backlog = target > floor
        min_interval = self.config.min_commit_interval_ms / 1000
        while len(self._pending) < target and not self._stop.is_set():
            wanted = target - len(self._pending)
            got = consumer.consume(num_messages=wanted, timeout=0)  # what is at hand, no waiting
            self._pending.extend(self._usable(got))
            if len(got) >= wanted:
                continue
            now = time.monotonic()
            if backlog:
                # the messages are on the broker: take them as fast as the fetches bring them, for
                # at most max_batch_ms of collecting (their own age says nothing: they are old)
                if now - started >= window:
                    break
                if not self.pipeline.busy and self._waiting() < floor:
                    break  # caught up with the log ends: what comes next arrives in real time
                more = consumer.consume(num_messages=wanted - len(got),
                                        timeout=min(window - (now - started), self.FETCH_WAIT_S))
                self._pending.extend(self._usable(more))
                if not more:
                    break  # the fetches brought nothing: no backlog after all
                continue
            left = deadline - now
            if left <= 0:
                break
            if not self.pipeline.busy:
                # thin traffic: at most one commit per min_commit_interval_ms unless the batch
                # reaches its floor first (each commit writes the table's whole metadata again)
                spacing = self.pipeline.last_submit + min_interval - now
                if spacing <= 0 or len(self._pending) >= floor:
                    break
                more = consumer.consume(num_messages=target - len(self._pending), timeout=min(left, spacing))
                self._pending.extend(self._usable(more))
                continue
            self.pipeline.wait(timeout=min(left, self.COLLECT_SLICE_S))
        log.debug("batch_collected", messages=len(self._pending), target=target, backlog=backlog,
                  committer_busy=self.pipeline.busy)

    def _batch_target(self, ceiling: int, *, overdue: bool) -> int:
        """How many messages the batch in hand may take, within [batch_floor, ceiling]: the ceiling
        when its first message was already `max_batch_ms` old on arrival (`overdue`: it waited on
        the broker, the consumer is behind), else what is waiting in the owned partitions (in
        hand, fetched, or still on the broker as far as the last fetch responses tell)."""
        floor = min(self.config.batch_floor, ceiling)
        if overdue:
            return ceiling
        return max(floor, min(ceiling, len(self._pending) + self._waiting()))

    def _waiting(self) -> int:
        """Messages in the owned partitions' logs past what this member has read: the high
        watermark of each partition's last fetch response minus its position (local state only;
        partitions not read from yet count nothing)."""
        consumer = self._consumer
        assert consumer is not None
        try:
            positions = consumer.position(consumer.assignment())
        except (KafkaException, RuntimeError):
            return 0
        waiting = 0
        for tp in positions:
            if tp.offset < 0:
                continue
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high > tp.offset:
                waiting += high - tp.offset
        return waiting

    @staticmethod
    def _usable(got: list[Any]) -> list[Any]:
        """The messages of a poll, without error events (a fatal one stops the consumer)."""
        errors = list(map(Message.error, got))  # one C-level pass; the usual poll has no error event
        if errors.count(None) == len(errors):
            return got
        for err in errors:
            if err is None:
                continue
            if err.fatal():
                raise ConsumerError(f"Kafka reported a fatal error: {err.str()}")
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka_consume_error", error=err.str(), code=err.code())
        return [msg for msg, err in zip(got, errors, strict=True) if err is None]

    # --- steps 1-3: preparing a batch, on the loop's thread -------------------------------
    def _prepare(self, msgs: list[Any]) -> PreparedBatch:
        """Steps 1-3 and the sort, on the loop's thread."""
        started = time.perf_counter()
        cfg = self.config
        single_topic = cfg.single_topic
        partitions = list(map(Message.partition, msgs))  # map over the method: no bytecode per message
        offsets = list(map(Message.offset, msgs))
        if single_topic is not None:  # one topic subscribed: no need to ask every message
            topics = [single_topic] * len(msgs)
            key_of = {p: (single_topic, p) for p in set(partitions)}
            keys: list[Any] = partitions
        else:
            topics = list(map(Message.topic, msgs))
            keys = list(zip(topics, partitions, strict=True))
            key_of = {k: k for k in set(keys)}
        # Kafka returns a partition's messages in offset order: the last one per key is the highest
        read_upto = {key_of[k]: offset + 1 for k, offset in dict(zip(keys, offsets, strict=True)).items()}
        # 1. what the table already holds (a replay after a crash) is skipped
        sent = self._sent_to_table_upto
        first = dict(zip(reversed(keys), reversed(offsets), strict=True))
        fresh = msgs
        if any(offset < sent.get(key_of[k], 0) for k, offset in first.items()):
            floor = {k: sent.get(key_of[k], 0) for k in first}
            keep = [offset >= floor[k] for k, offset in zip(keys, offsets, strict=True)]
            skipped = Counter(itertools.compress(topics, [not k for k in keep]))
            for topic, count in skipped.items():
                metrics.DUPLICATES_SKIPPED.labels(**metric_labels(topic, cfg.data_type)).inc(count)
                self.stats.duplicates_skipped += count
            fresh = list(itertools.compress(msgs, keep))
            topics = list(itertools.compress(topics, keep))
            partitions = list(itertools.compress(partitions, keep))
            offsets = list(itertools.compress(offsets, keep))
        snapshot_offsets = {key: upto for key, upto in read_upto.items() if upto > sent.get(key, 0)}
        self.stats.messages += len(msgs)
        if single_topic is None:
            topic_counts = Counter(topics)
        else:  # no need to count a list of one name
            topic_counts = Counter({single_topic: len(topics)} if topics else {})
        batch = PreparedBatch(started=started, messages=len(msgs), table=pa.table({}), topic_counts=topic_counts,
                              read_upto=read_upto, snapshot_offsets=snapshot_offsets)
        if not fresh:
            return batch
        for topic, count in topic_counts.items():
            metrics.MESSAGES_CONSUMED.labels(**metric_labels(topic, cfg.data_type)).inc(count)
        # 2. decode; poison to the DLQ (flushed before anything is committed)
        decoded = self.decoder.decode(list(map(Message.value, fresh)), partitions, offsets,
                                      topics=cfg.single_topic or topics, topic_ids=self._topic_ids)
        table, unfit = self.gaps.unstorable(decoded.table)
        if decoded.poison or unfit:
            self._send_to_dlq(fresh, [*decoded.poison, *unfit])
        # 3. sequence tracking; gaps reach the sink before the table commit (a gap the sink cannot
        # store sends its record to the DLQ: a value must never stop the consumer)
        rejected = self.gaps.track(table, fresh, topics)
        if rejected:
            self._send_to_dlq(fresh, rejected)
            drop = pa.array([p.index for p in rejected], type=table[INDEX_COLUMN].type)
            table = table.filter(pc.invert(pc.is_in(table[INDEX_COLUMN], value_set=drop)))
        # 4. (the commit thread appends) sorted, with the batch's offsets in the snapshot summary
        table = table.drop_columns([INDEX_COLUMN])
        sort_columns = spec(cfg.data_type).sort_columns
        if sort_columns and table.num_rows > 1:
            table = table.sort_by([(c, "ascending") for c in sort_columns])
        sent.update(snapshot_offsets)
        batch.table = table
        return batch

    def _send_to_dlq(self, fresh: list[Any], poison: list[Poison]) -> None:
        self.dead_letters.send(fresh, poison)
        self.stats.dlq += len(poison)

    def _seed_sequences(self, table: Any) -> None:
        """On assignment: the last sequence of every stream in the table (up to the tracker's
        capacity, most recently traded first), in one aggregate, so later batches need no reads."""
        if not spec(self.config.data_type).sequenced:
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

    # --- step 4 (commit thread) and step 5 (loop thread) ----------------------------------
    def _submit(self, batch: PreparedBatch) -> None:
        """Hand a batch to the commit thread once the one before it is committed (one in flight)."""
        self._drain()
        self.pipeline.submit(batch)

    def _drain(self, *, sync: bool = False) -> None:
        """Wait for the batch in flight, then commit its offsets to Kafka: asynchronously, or
        synchronously (every position the table holds for partitions this member owns) before a
        rebalance and at shutdown. A failed commit of that batch is raised here, after the
        synchronous commit of what did reach the table."""
        batch, failure = self.pipeline.finish()
        if batch is not None and failure is None:
            self._table_upto.update(batch.read_upto)
            if not sync:
                self.kafka_offsets.commit(batch.read_upto, asynchronous=True)
        if sync and self._table_upto:
            self.kafka_offsets.commit(self._table_upto)
        if failure is not None:
            raise failure

    def _commit_batch(self, batch: PreparedBatch) -> None:
        """Step 4, on the commit thread: one Iceberg transaction recording the batch's offsets."""
        cfg = self.config
        assert self.writer is not None
        table = batch.table
        if table.num_rows:
            self.writer.append(table, properties=offsets_properties(cfg.group, batch.snapshot_offsets,
                                                                     self._topic_ids))
            self._maybe_expire_snapshots()
        committed_at = time.time()
        if not batch.topic_counts:
            return  # nothing fresh: only the Kafka positions move
        self.stats.batches += 1
        self.stats.rows_written += table.num_rows
        duration = time.perf_counter() - batch.started
        for topic, count in batch.topic_counts.items():
            lbl = metric_labels(topic, cfg.data_type)
            metrics.CONSUMER_BATCHES.labels(**lbl).inc()
            metrics.CONSUMER_BATCH_SIZE.labels(**lbl).observe(count)
            metrics.CONSUMER_BATCH_DURATION.labels(**lbl).observe(duration)
        if table.num_rows:
            first_topic = next(iter(batch.topic_counts))
            metrics.MESSAGES_WRITTEN.labels(**metric_labels(first_topic, cfg.data_type)).inc(table.num_rows)
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

    # --- reporting ------------------------------------------------------------------------
    def partition_lag(self) -> tuple[int | None, list[dict[str, Any]]]:
        """Total and per-partition lag of the partitions this member owns (`lag.LagTracker`)."""
        return self.lag_tracker.partition_lag(self._consumer, table_upto=self._table_upto,
                                              last_commit_at=self.kafka_offsets.last_commit_at)

    def lag(self) -> int | None:
        """Total lag over the partitions this member owns (see `partition_lag`)."""
        return self.partition_lag()[0]

    def _update_lag(self, *, ask_broker: bool = True) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if ask_broker:
            try:
                self.lag_tracker.refresh_listed_ends(consumer.assignment())
            except (KafkaException, RuntimeError):
                pass
        self.stats.lag, self.stats.partitions = self.partition_lag()
        try:
            self.stats.member_id = consumer.memberid()
        except (KafkaException, RuntimeError):
            pass
        self.lag_tracker.publish(self.stats.partitions)

    def _beat(self) -> None:
        metrics.CONSUMER_HEARTBEAT.labels(**self._labels(), group=self.config.group).set(time.time())

    def _report_progress(self) -> None:
        self._beat()
        self._update_lag()
        if self._progress_gate.due(self.stats.messages, self.stats.rows_written, self.stats.gaps, self.stats.dlq):
            log.info("consumer_progress", messages=self.stats.messages, rows=self.stats.rows_written,
                     msgs_per_s=round(self.stats.rate, 1), lag=self.stats.lag, gaps=self.stats.gaps,
                     dlq=self.stats.dlq, batches=self.stats.batches)
        if self.heartbeat is not None:
            self.heartbeat(self.stats)

    # --- shutdown -------------------------------------------------------------------------
    def _shutdown(self, labels: dict[str, str], error: BaseException | None) -> None:
        """Write the batch in hand, commit what the table holds to Kafka, close. The broker part is
        bounded by `shutdown_timeout_s`: with the broker down, the offsets (which the table records)
        and any dead letters are reported as not sent, and the stop is still clean (ADR #016)."""
        consumer = self._consumer
        self.budget.begin()
        try:
            if consumer is not None and self._pending and error is None:
                pending = self._take_pending()
                try:
                    batch = self._prepare(pending)
                except DeadLettersUndelivered as exc:
                    batch = None
                    self.budget.not_sent(f"the last {len(pending)} messages read were not written ({exc}); nothing "
                                         "of them is committed, so a restart reads them again")
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
            self.pipeline.close()
            if consumer is not None:
                self._update_lag(ask_broker=False)
                consumer.close()
            left = self.dead_letters.close()
            if left:
                self.budget.not_sent(f"{left} dead letters not delivered to the DLQ topic; their batch was not "
                                     "committed, so a restart reads those messages again")
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
