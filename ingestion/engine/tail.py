"""Fresh reads (issue 15 item 1): the rows a table is about to hold, read from Kafka.

A table's snapshot records, per topic-partition, the next offset it holds (`k2.kafka.offsets`).
What lies on the topics beyond those offsets is what the consumer will append next. `KafkaTail`
reads it, decodes it exactly as the consumer does (`decode.BatchDecoder`, the same lineage
columns, the same rows refused), and returns it as Arrow in the table's schema. A query over the
pinned snapshot plus this tail sees the messages the broker holds (a direct read: all it had
acknowledged when the read began; a standing read, below: all it has delivered to the reader)
without waiting for the consumer's next commit, and sees none twice: the tail starts where that
very snapshot ends.

Where each partition starts is where the consumer would resume (`offsets.resume_offsets`): the
larger of the offset the table recorded and the consumer group's committed offset (an operator
who moved the group forward skipped those messages for the table too). A partition with neither
starts at its beginning.

A read stops once every partition has reported its end (the broker's end-of-partition event:
Tansu's ListOffsets answer is not the log end), after `max_messages`, or at `timeout_s`, whichever
comes first; the result says whether every partition was read to its end (`complete`). A
partition's end is the first one it reports: what is produced to it later, while other partitions
are still being read, is taken if it has arrived but not waited for (a read of a topic that never
stops moving must still end).

What a fresh read cannot promise: the tail is not in any snapshot, so it cannot be read again
(no time travel to it), and a row the consumer later refuses for a reason only the running
consumer meets (the sequence-gap store failing to take a gap) would be in the tail and not in
the table. Messages that cannot be decoded are left out and counted (`dead_letters`): the
consumer sends the same messages to its dead-letter topic.

Standing reads (`standing=True`, the default): the first fresh read of a data type leaves a
consumer of its own assigned to its partitions, on a thread that decodes what arrives as it
arrives (`_Standing`). Later reads take the rows beyond their snapshot from what that thread holds,
without a Kafka round trip: what they see is what the broker had delivered to it, a broker's
fetch behind the log end at most (the broker floor). librdkafka fetches on threads of its own, so
a read first takes in what it has already fetched (`_drain`): it does not wait for the reader's
thread, which may be waiting for the interpreter. Its rows below every later read's start are
dropped, it holds at most `max_messages`, and it stops when no read came for `standing_idle_s`.
A read it cannot answer (a partition it does not hold from far enough back, other partitions, a
stopped thread, not yet caught up within `timeout_s`) is made directly, as above.

What a read asks the broker about where things stand (the topics' partitions, the consumer group's
committed offsets) is kept for `metadata_ttl_s` (1 s): each answer is a round trip, and two of them
were half of a standing read's time (2026-12-08). So a partition added to a topic, or a group an
operator moved, counts for fresh reads within that bound; the table's record counts at once.

No Django; one reader per process serves all data types (reads are serialised by a lock: the
Kafka consumer and the decoders are not thread-safe).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from catalog.engine.datatypes import spec
from catalog.engine.writer import recorded_offsets
from ingestion.engine.consumer.gaps import too_long
from ingestion.engine.consumer.offsets import TopicPartitionKey, resume_offsets
from ingestion.engine.decode import INDEX_COLUMN, BatchDecoder, SchemaSource
from ingestion.engine.topics import topic_ids
from k2core import metrics
from k2core.errors import Unavailable
from k2core.logging import get_logger

log = get_logger(__name__, component="fresh_read")


class StreamUnavailable(Unavailable):
    """The broker did not answer a fresh read (the API answers 503 with the message)."""

    code = "stream_unavailable"


@dataclass
class TailRead:
    """What a fresh read found beyond a snapshot."""

    table: pa.Table  # the data type's Arrow schema, lineage columns included
    start: dict[TopicPartitionKey, int] = field(default_factory=dict)  # first offset read, per partition
    upto: dict[TopicPartitionKey, int] = field(default_factory=dict)  # next offset after what was read
    messages: int = 0  # messages read (rows + dead letters)
    dead_letters: int = 0  # messages left out: what the consumer sends to its DLQ
    complete: bool = True  # every partition read to its end before the deadline and the cap
    seconds: float = 0.0
    path: str = "direct"  # how it was answered: "standing" (from the standing reader) or "direct"

    def describe(self) -> dict[str, Any]:
        """The read as JSON-ready values (the API's `meta.fresh`)."""
        upto: dict[str, dict[str, int]] = {}
        for (topic, partition), offset in sorted(self.upto.items()):
            upto.setdefault(topic, {})[str(partition)] = offset
        return {"rows": self.table.num_rows, "messages": self.messages, "dead_letters": self.dead_letters,
                "complete": self.complete, "read_ms": round(self.seconds * 1000, 1), "upto": upto}


class KafkaTail:
    """Reads the tail of a data type's topics beyond a pinned table (see the module's doc).

    `topics_of`: the topics each data type is consumed from (the table's own record adds any
    other topic it holds rows of); `group_of`: the consumer group whose committed offsets also
    bound where a partition starts (None: the table's record alone); `max_lengths`: the longest
    value the sequence-gap store takes per column (longer values are refused by the consumer,
    so they are left out here too)."""

    def __init__(self, *, bootstrap_servers: str, registry: SchemaSource, topics_of: Mapping[str, Sequence[str]],
                 group_of: Mapping[str, str] | None = None, max_lengths: Mapping[str, int] | None = None,
                 timeout_s: float = 5.0, max_messages: int = 1_000_000, poll_batch: int = 10_000,
                 standing: bool = True, standing_idle_s: float = 60.0, metadata_ttl_s: float = 1.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.registry = registry
        self.topics_of = {k: tuple(v) for k, v in topics_of.items()}
        self.group_of = dict(group_of or {})
        self.max_lengths = dict(max_lengths or {})
        self.timeout_s = timeout_s
        self.max_messages = max_messages
        self.poll_batch = poll_batch
        self.standing = standing
        self.standing_idle_s = standing_idle_s
        self.metadata_ttl_s = metadata_ttl_s
        self._metadata: dict[tuple, tuple[float, Any]] = {}  # what the broker said, and when (`_kept`)
        self._standing: dict[str, _Standing] = {}
        self._recorded: dict[tuple, dict[TopicPartitionKey, int]] = {}  # (data type, metadata file, topic ids) → offsets
        self._lows: dict[TopicPartitionKey, int] = {}
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._group_readers: dict[str, Consumer] = {}
        self._decoders: dict[str, BatchDecoder] = {}
        self._topic_ids: dict[str, str] = {}

    # --- public ---------------------------------------------------------------------------
    def read(self, data_type: str, table: Any | None) -> TailRead:
        """The rows beyond `table` (a pyiceberg Table pinned to the snapshot the query reads;
        None: the table does not exist yet, so every message is beyond it)."""
        with self._lock:
            try:
                read = self._read(data_type, table)
            except KafkaException as exc:
                metrics.FRESH_READS.labels(data_type=data_type, path="failed").inc()
                raise StreamUnavailable(
                    f"the Kafka broker ({self.bootstrap_servers}) did not answer a fresh read of {data_type} ({exc}): "
                    "ask without fresh=true for the committed snapshot alone") from None
        metrics.FRESH_READS.labels(data_type=data_type, path=read.path).inc()
        metrics.FRESH_READ_DURATION.labels(data_type=data_type, path=read.path).observe(read.seconds)
        if not read.complete:
            metrics.FRESH_READ_INCOMPLETE.labels(data_type=data_type).inc()
        if read.dead_letters:
            metrics.FRESH_READ_DEAD_LETTERS.labels(data_type=data_type).inc(read.dead_letters)
        return read

    def close(self) -> None:
        with self._lock:
            for standing in self._standing.values():
                standing.stop()
            self._standing.clear()
            for consumer in [self._consumer, *self._group_readers.values()]:
                if consumer is not None:
                    consumer.close()
            self._consumer = None
            self._group_readers.clear()
            for decoder in self._decoders.values():
                decoder.close()
            self._decoders.clear()

    # --- steps ----------------------------------------------------------------------------
    def _kafka(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(reader_settings(self.bootstrap_servers, "k2-fresh-read"))
        return self._consumer

    def _kept(self, key: tuple, ask: Any) -> Any:
        """The broker's answer to `ask()`, asked again once older than `metadata_ttl_s`."""
        now = time.monotonic()
        held = self._metadata.get(key)
        if held is not None and now - held[0] < self.metadata_ttl_s:
            return held[1]
        if len(self._metadata) > 64:
            self._metadata.clear()
        answer = ask()
        self._metadata[key] = (now, answer)
        return answer

    def _partitions(self, topics: Sequence[str]) -> list[TopicPartitionKey]:
        """The partitions of the topics that exist. Metadata of all topics, not of these by name:
        asking a broker that auto-creates topics (Tansu) by name would create them."""
        metadata = self._kept(("metadata",), lambda: self._kafka().list_topics(timeout=self.timeout_s))
        return [(topic, p) for topic in topics if topic in metadata.topics and metadata.topics[topic].error is None
                for p in sorted(metadata.topics[topic].partitions)]

    def _ids(self, topics: set[str]) -> dict[str, str]:
        missing = topics - set(self._topic_ids)
        if missing:
            self._topic_ids.update(topic_ids(self.bootstrap_servers, missing, timeout=self.timeout_s))
        return {t: self._topic_ids[t] for t in topics if t in self._topic_ids}

    def _group_committed(self, data_type: str, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        group = self.group_of.get(data_type)
        if not group or not keys:
            return {}
        reader = self._group_readers.get(group)
        if reader is None:  # committed() asks for the group of the consumer that asks
            reader = self._group_readers[group] = Consumer({
                "bootstrap.servers": self.bootstrap_servers, "group.id": group, "enable.auto.commit": False,
                "enable.auto.offset.store": False})
        try:
            return self._kept(("committed", group, tuple(keys)), lambda: {
                (tp.topic, tp.partition): tp.offset
                for tp in reader.committed([TopicPartition(t, p) for t, p in keys], timeout=self.timeout_s) if tp.offset >= 0})
        except KafkaException as exc:
            log.warning("committed_offsets_unavailable", group=group, error=str(exc))
            return {}

    def _recorded_offsets(self, data_type: str, table: Any, ids: dict[str, str]) -> dict[TopicPartitionKey, int]:
        """The table's record (`recorded_offsets`), kept per metadata file: a metadata file never changes."""
        key = (data_type, table.metadata_location, tuple(sorted(ids.items())))
        held = self._recorded.get(key)
        if held is None:
            if len(self._recorded) > 16:
                self._recorded.clear()
            held = self._recorded[key] = recorded_offsets(table, topic_ids=ids or None)
        return held

    def _read(self, data_type: str, table: Any | None) -> TailRead:
        started = time.perf_counter()
        topics = list(self.topics_of.get(data_type, ()))
        ids = self._ids(set(topics))
        recorded = self._recorded_offsets(data_type, table, ids) if table is not None else {}
        topics += sorted({t for t, _ in recorded} - set(topics))
        keys = self._partitions(topics)
        ids = self._ids({t for t, _ in keys})
        starts = resume_offsets(keys, table_upto=recorded, group_committed=self._group_committed(data_type, keys),
                                from_beginning=False)
        starts = {key: starts.get(key, OFFSET_BEGINNING) for key in keys}  # the consumer's auto.offset.reset: earliest
        result = TailRead(table=_empty(data_type), start=dict(starts), upto=dict(starts))
        if not keys:
            result.seconds = time.perf_counter() - started
            return result
        if self.standing:
            held = self._standing_read(data_type, keys, starts, ids, result)
            if held is not None:
                held.seconds = time.perf_counter() - started
                held.path = "standing"
                return held
        return self._direct_read(data_type, keys, starts, ids, result, started)

    def _standing_read(self, data_type: str, keys: list[TopicPartitionKey], starts: dict[TopicPartitionKey, int],
                       ids: dict[str, str], result: TailRead) -> TailRead | None:
        """The read from the data type's standing reader (started here at these starts when there is
        none for these partitions); None when it cannot answer."""
        try:  # a partition the table holds nothing of: from its first offset
            starts = {k: s if s >= 0 else self._low(k) for k, s in starts.items()}
        except KafkaException as exc:
            log.warning("fresh_read_low_watermark_unavailable", error=str(exc))
            return None
        standing = self._standing.get(data_type)
        if standing is not None and (not standing.alive() or standing.keys != set(keys)):
            standing.stop()
            standing = None
        if standing is None:
            standing = self._standing[data_type] = _Standing(self, data_type, keys, starts, ids)
        if not standing.wait_caught_up(self.timeout_s):
            return None
        held = standing.take(starts, result)
        if held is None:  # it does not hold these partitions from that far back (a rewind, its cap): start anew
            standing.stop()
            del self._standing[data_type]
        return held

    def _low(self, key: TopicPartitionKey) -> int:
        """A partition's first offset (asked once; the standing reader's consumer starts at the
        earliest offset anyway if it has moved on)."""
        low = self._lows.get(key)
        if low is None:
            low = self._lows[key] = self._kafka().get_watermark_offsets(TopicPartition(*key), timeout=self.timeout_s,
                                                                        cached=False)[0]
        return low

    def _direct_read(self, data_type: str, keys: list[TopicPartitionKey], starts: dict[TopicPartitionKey, int],
                     ids: dict[str, str], result: TailRead, started: float) -> TailRead:
        consumer = self._kafka()
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in keys])
        at_end: set[TopicPartitionKey] = set()
        msgs: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        try:
            while len(at_end) < len(keys) and len(msgs) < self.max_messages and time.monotonic() < deadline:
                got, ends = _split(consumer.consume(min(self.poll_batch, self.max_messages - len(msgs)), 0.005))
                for msg in got:  # before the ends: a partition's end comes after its messages
                    key = (msg.topic(), msg.partition())
                    if msg.offset() >= result.upto.get(key, 0):  # a fetch may repeat after a seek
                        msgs.append(msg)
                        result.upto[key] = msg.offset() + 1
                for key, end in ends:
                    result.upto[key] = max(result.upto.get(key, 0), end)
                    at_end.add(key)
        finally:
            consumer.unassign()
        # a beginning that was never read past stays at the partition's first offset
        result.upto = {k: v for k, v in result.upto.items() if v >= 0}
        result.complete = len(at_end) == len(keys)
        result.messages = len(msgs)
        if msgs:
            result.table, result.dead_letters = self._decode(data_type, msgs, ids)
        result.seconds = time.perf_counter() - started
        return result

    def _decode(self, data_type: str, msgs: list[Message], ids: dict[str, str]) -> tuple[pa.Table, int]:
        decoder = self._decoders.get(data_type)
        if decoder is None:
            decoder = self._decoders[data_type] = BatchDecoder(data_type=data_type, registry=self.registry)
        table, dead = decode_like_the_consumer(decoder, msgs, ids, self.max_lengths)
        return table, len(dead)


def _split(batch: list[Message]) -> tuple[list[Message], list[tuple[TopicPartitionKey, int]]]:
    """A consume's messages, and the partitions that reported their end (with the end offset).
    A fatal error raises; another is logged (librdkafka retries it)."""
    msgs: list[Message] = []
    ends: list[tuple[TopicPartitionKey, int]] = []
    for msg in batch:
        err = msg.error()
        if err is None:
            msgs.append(msg)
        elif err.code() == KafkaError._PARTITION_EOF:
            ends.append(((msg.topic(), msg.partition()), msg.offset()))
        elif err.fatal():
            raise KafkaException(err)
        else:
            log.warning("fresh_read_error", error=err.str(), code=err.code())
    return msgs, ends


def reader_settings(bootstrap_servers: str, group_prefix: str) -> dict[str, Any]:
    """librdkafka settings of a tail reader's consumer (direct or standing)."""
    return {
        "bootstrap.servers": bootstrap_servers,
        # assign() only, never a commit: the group id is this reader's own, never joined
        "group.id": f"{group_prefix}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,  # how a read knows it reached a partition's end
        "auto.offset.reset": "earliest",  # an offset gone (retention): from the first one there is
        "fetch.wait.max.ms": 10,  # the broker must not hold a fetch for data that is not coming
        "fetch.error.backoff.ms": 10,
        "fetch.queue.backoff.ms": 10,
        "socket.connection.setup.timeout.ms": 5000,
    }


def decode_like_the_consumer(decoder: BatchDecoder, msgs: list[Message], ids: dict[str, str],
                             max_lengths: Mapping[str, int]) -> tuple[pa.Table, list[tuple[str, int, int]]]:
    """As the consumer's `_prepare`: decode, leave out poison and values the gap store cannot take,
    drop the row index. Returns the rows and the (topic, partition, offset) of each message left out."""
    decoded = decoder.decode(list(map(Message.value, msgs)), list(map(Message.partition, msgs)),
                             list(map(Message.offset, msgs)), topics=list(map(Message.topic, msgs)), topic_ids=ids)
    table, unfit = too_long(decoded.table, decoder.data_type, max_lengths)  # as the consumer's `gaps.unstorable`
    dead = [(msgs[p.index].topic(), msgs[p.index].partition(), msgs[p.index].offset())
            for p in [*decoded.poison, *unfit]]
    return table.drop_columns([INDEX_COLUMN]), dead


@dataclass
class _Chunk:
    table: pa.Table  # decoded rows
    dead: list[tuple[str, int, int]]  # messages left out: (topic, partition, offset)
    highest: dict[TopicPartitionKey, int]  # per partition, the highest offset in the chunk


class _Standing:
    """One data type's standing reader: a consumer assigned to its partitions from where the first
    read started, on its own thread (see the module's doc). What arrives waits as raw messages
    (`pending`) and is decoded in batches, every `DECODE_EVERY_S` or `DECODE_AT` messages, or by a
    read that comes first: a decode has a fixed cost, so one per fetch would cost more than the
    messages, and a read still sees every message that has arrived."""

    DECODE_EVERY_S = 0.05
    DECODE_AT = 5000
    MERGE_AT = 4  # a read that finds more chunks than this leaves one, of the rows at or beyond its starts
    IDLE_WAIT_S = 0.005  # nothing fetched: look again after this (a read drains the consumer itself)

    def __init__(self, tail: KafkaTail, data_type: str, keys: list[TopicPartitionKey],
                 starts: dict[TopicPartitionKey, int], ids: dict[str, str]) -> None:
        self.tail = tail
        self.data_type = data_type
        self.keys = set(keys)
        self.ids = ids
        self.first = dict(starts)  # per partition, the lowest offset held from (rows below were dropped or never read)
        self.reached = dict(starts)  # per partition, the next offset after what arrived
        self.chunks: list[_Chunk] = []
        self.pending: list[Message] = []
        self.pending_since = 0.0
        self.rows = 0
        self.at_end: set[TopicPartitionKey] = set()  # partitions that reported their end at least once
        self.last_read = time.monotonic()
        self.error: str | None = None
        self._lock = threading.Lock()  # chunks, pending, reached, first
        self._decode_lock = threading.Lock()  # the decoder, and pending → chunk as one step
        self._consume_lock = threading.Lock()  # the consumer, and what it returned → pending as one step
        self._closed = False  # the consumer is closed (the thread ended): nothing more to drain
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._consumer = Consumer(reader_settings(tail.bootstrap_servers, "k2-fresh-stand"))
        self._consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in keys])
        self._decoder = BatchDecoder(data_type=data_type, registry=tail.registry)
        self._thread = threading.Thread(target=self._run, name=f"k2-fresh-{data_type}", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def wait_caught_up(self, timeout: float) -> bool:
        """True once every partition reported its end at least once (what was there when the reader
        started has been taken in)."""
        self.last_read = time.monotonic()
        return self._caught_up.wait(timeout) and self.alive()

    def _flush(self) -> dict[TopicPartitionKey, int]:
        """Decode what is pending into a chunk (the caller holds `_decode_lock`); returns what had
        arrived by then, per partition."""
        with self._lock:
            msgs, self.pending = self.pending, []
            reached = dict(self.reached)
        if msgs:
            table, dead = decode_like_the_consumer(self._decoder, msgs, self.ids, self.tail.max_lengths)
            highest: dict[TopicPartitionKey, int] = {}
            for msg in msgs:
                key = (msg.topic(), msg.partition())
                highest[key] = max(highest.get(key, -1), msg.offset())
            with self._lock:
                self.chunks.append(_Chunk(table, dead, highest))
                self.rows += table.num_rows
                while self.rows > self.tail.max_messages and len(self.chunks) > 1:
                    dropped = self.chunks.pop(0)  # too much held: the oldest goes, reads from there go direct
                    self.rows -= dropped.table.num_rows
                    for key, offset in dropped.highest.items():
                        self.first[key] = max(self.first[key], offset + 1)
        return reached

    def take(self, starts: dict[TopicPartitionKey, int], result: TailRead) -> TailRead | None:
        """The rows at or beyond `starts`; None when a partition is not held from that far back.
        Drops what lies below every start (a later snapshot never goes back, except a rewind, which
        then reads directly)."""
        with self._decode_lock:  # no chunk comes in between: the rows taken are exactly those up to `upto`
            self._drain()
            upto = self._flush()
            with self._lock:
                if self._closed or any(starts[k] < self.first[k] for k in self.keys):
                    return None
                kept = [c for c in self.chunks if any(c.highest.get(k, -1) >= starts[k] for k in c.highest)]
                self.rows = sum(c.table.num_rows for c in kept)
                self.chunks = kept
                self.first = {k: max(self.first[k], starts[k]) for k in self.keys}
            tables = [c.table for c in kept]
            table = pa.concat_tables(tables) if tables else result.table
            if table.num_rows:
                table = table.filter(_at_or_beyond(table, starts))
            dead = [(t, p, o) for c in kept for t, p, o in c.dead if o >= starts.get((t, p), 0)]
            if len(kept) > self.MERGE_AT:  # Arrow's work on a table grows with its chunks: one from here on
                table = table.combine_chunks()
                highest: dict[TopicPartitionKey, int] = {}
                for chunk in kept:
                    for key, offset in chunk.highest.items():
                        highest[key] = max(highest.get(key, -1), offset)
                with self._lock:
                    self.chunks = [_Chunk(table, dead, highest)]
                    self.rows = table.num_rows
        result.dead_letters = len(dead)
        result.complete = True
        cap = self.tail.max_messages
        if table.num_rows + result.dead_letters > cap:  # more than a read takes: the oldest `cap`, and say so
            table = table.slice(0, max(0, cap - result.dead_letters))
            upto = dict(starts)
            highest = table.group_by(["source_topic", "source_partition"]).aggregate([("source_offset", "max")])
            for topic, partition, offset in zip(*(highest[c].to_pylist() for c in (
                    "source_topic", "source_partition", "source_offset_max")), strict=True):
                upto[(topic, partition)] = offset + 1
            result.complete = False
        result.table = table
        result.upto = {k: v for k, v in upto.items() if k in starts}
        result.messages = table.num_rows + result.dead_letters
        return result

    def _drain(self) -> None:
        """Take in what the consumer has already fetched (librdkafka fetches on threads of its own,
        so it holds what the broker delivered even while this reader's thread waits for the
        interpreter): a read sees it at once, not at the thread's next turn."""
        with self._consume_lock:
            if self._closed:
                return
            while self._take_in(self._consumer.consume(self.tail.poll_batch, 0)) >= self.tail.poll_batch:
                pass  # a full batch: there may be more (a partial one emptied the queue; a read must end)

    def _take_in(self, batch: list[Message]) -> int:
        """Put what a consume returned into `pending` (the caller holds `_consume_lock`, so what
        comes out of the consumer goes in here in the order it came)."""
        msgs, ends = _split(batch)
        with self._lock:
            if msgs:
                if not self.pending:
                    self.pending_since = time.monotonic()
                self.pending.extend(msgs)
                for msg in msgs:
                    key = (msg.topic(), msg.partition())
                    self.reached[key] = max(self.reached.get(key, 0), msg.offset() + 1)
            self.at_end.update(key for key, _ in ends)
        return len(batch)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if time.monotonic() - self.last_read > self.tail.standing_idle_s:
                    break  # nobody asks: stop reading
                with self._consume_lock:  # not blocking: a read waiting for this lock waits for nothing
                    took = self._take_in(self._consumer.consume(self.tail.poll_batch, 0))
                if not took:
                    self._stop.wait(self.IDLE_WAIT_S)
                with self._lock:
                    due = self.pending and (len(self.pending) >= self.DECODE_AT
                                            or time.monotonic() - self.pending_since >= self.DECODE_EVERY_S)
                    at_end = self.at_end >= self.keys
                if due or (not self._caught_up.is_set() and at_end):
                    with self._decode_lock:
                        self._flush()
                if not self._caught_up.is_set() and at_end:
                    self._caught_up.set()
        except Exception as exc:  # noqa: BLE001 - a standing reader that fails leaves reads to the direct path
            self.error = str(exc)
            log.warning("fresh_standing_reader_failed", data_type=self.data_type, error=str(exc))
        finally:
            self._stop.set()
            with self._decode_lock, self._consume_lock:
                self._closed = True
                self._consumer.close()
                self._decoder.close()


@functools.cache
def _empty(data_type: str) -> pa.Table:
    """No rows, in the data type's Arrow schema (converted from Iceberg's once)."""
    return spec(data_type).arrow_schema().empty_table()


def _at_or_beyond(table: pa.Table, starts: dict[TopicPartitionKey, int]) -> pa.Array:
    """The mask of rows whose (topic, partition) offset is at or beyond its start."""
    topics = {t for t, _ in starts}
    if len(topics) == 1:
        (topic,) = topics
        size = max(p for _, p in starts) + 1
        floor = pa.array([starts.get((topic, p), 2**62) for p in range(size)], pa.int64())
        partition = table["source_partition"]
        return pc.greater_equal(table["source_offset"], pc.take(floor, partition))
    mask = None
    for (topic, partition), start in starts.items():
        part = pc.and_(pc.and_(pc.equal(table["source_topic"], topic), pc.equal(table["source_partition"], partition)),
                       pc.greater_equal(table["source_offset"], start))
        mask = part if mask is None else pc.or_(mask, part)
    return mask
