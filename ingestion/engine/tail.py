"""Fresh reads (issue 15 item 1): the rows a table is about to hold, read from Kafka.

A table's snapshot records, per topic-partition, the next offset it holds (`k2.kafka.offsets`).
What lies on the topics beyond those offsets is what the consumer will append next. `KafkaTail`
reads it, decodes it exactly as the consumer does (`decode.BatchDecoder`, the same lineage
columns, the same rows refused), and returns it as Arrow in the table's schema. A query over the
pinned snapshot plus this tail sees every message the broker has acknowledged, without waiting
for the consumer's next commit, and sees none twice: the tail starts where that very snapshot
ends.

Where each partition starts is where the consumer would resume (`offsets.resume_offsets`): the
larger of the offset the table recorded and the consumer group's committed offset (an operator
who moved the group forward skipped those messages for the table too). A partition with neither
starts at its beginning.

A read stops at each partition's end (the broker's end-of-partition event: Tansu's ListOffsets
answer is not the log end), after `max_messages`, or at `timeout_s`, whichever comes first; the
result says whether every partition was read to its end (`complete`).

What a fresh read cannot promise: the tail is not in any snapshot, so it cannot be read again
(no time travel to it), and a row the consumer later refuses for a reason only the running
consumer meets (the sequence-gap store failing to take a gap) would be in the tail and not in
the table. Messages that cannot be decoded are left out and counted (`dead_letters`): the
consumer sends the same messages to its dead-letter topic.

No Django; one reader per process serves all data types (reads are serialised by a lock: the
Kafka consumer and the decoders are not thread-safe).
"""

from __future__ import annotations

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
from ingestion.engine.consumer.offsets import TopicPartitionKey, resume_offsets
from ingestion.engine.decode import INDEX_COLUMN, BatchDecoder, SchemaSource
from k2core.logging import get_logger

log = get_logger(__name__, component="fresh_read")


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

    def describe(self) -> dict[str, Any]:
        """The read as JSON-ready values (the API's `meta.fresh`)."""
        upto: dict[str, dict[str, int]] = {}
        for (topic, partition), offset in sorted(self.upto.items()):
            upto.setdefault(topic, {})[str(partition)] = offset
        return {"rows": self.table.num_rows, "messages": self.messages, "dead_letters": self.dead_letters,
                "complete": self.complete, "upto": upto}


class KafkaTail:
    """Reads the tail of a data type's topics beyond a pinned table (see the module's doc).

    `topics_of`: the topics each data type is consumed from (the table's own record adds any
    other topic it holds rows of); `group_of`: the consumer group whose committed offsets also
    bound where a partition starts (None: the table's record alone); `max_lengths`: the longest
    value the sequence-gap store takes per column (longer values are refused by the consumer,
    so they are left out here too)."""

    def __init__(self, *, bootstrap_servers: str, registry: SchemaSource, topics_of: Mapping[str, Sequence[str]],
                 group_of: Mapping[str, str] | None = None, max_lengths: Mapping[str, int] | None = None,
                 timeout_s: float = 5.0, max_messages: int = 1_000_000, poll_batch: int = 10_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.registry = registry
        self.topics_of = {k: tuple(v) for k, v in topics_of.items()}
        self.group_of = dict(group_of or {})
        self.max_lengths = dict(max_lengths or {})
        self.timeout_s = timeout_s
        self.max_messages = max_messages
        self.poll_batch = poll_batch
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
            return self._read(data_type, table)

    def close(self) -> None:
        with self._lock:
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
            self._consumer = Consumer({
                "bootstrap.servers": self.bootstrap_servers,
                # assign() only, never a commit: the group id is this reader's own, never joined
                "group.id": f"k2-fresh-read-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,  # how a read knows it reached a partition's end
                "fetch.wait.max.ms": 10,  # the broker must not hold a fetch for data that is not coming
                "fetch.error.backoff.ms": 10,
                "socket.connection.setup.timeout.ms": 5000,
            })
        return self._consumer

    def _partitions(self, topics: Sequence[str]) -> list[TopicPartitionKey]:
        """The partitions of the topics that exist. Metadata of all topics, not of these by name:
        asking a broker that auto-creates topics (Tansu) by name would create them."""
        metadata = self._kafka().list_topics(timeout=self.timeout_s)
        return [(topic, p) for topic in topics if topic in metadata.topics and metadata.topics[topic].error is None
                for p in sorted(metadata.topics[topic].partitions)]

    def _ids(self, topics: set[str]) -> dict[str, str]:
        missing = sorted(topics - set(self._topic_ids))
        if missing:
            from confluent_kafka import TopicCollection
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
            try:
                for topic, future in admin.describe_topics(TopicCollection(missing)).items():
                    topic_id = future.result(timeout=self.timeout_s).topic_id
                    if topic_id is not None:
                        self._topic_ids[topic] = str(topic_id)
            except (KafkaException, ValueError, TypeError) as exc:
                log.warning("topic_ids_unavailable", error=str(exc))
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
            return {(tp.topic, tp.partition): tp.offset
                    for tp in reader.committed([TopicPartition(t, p) for t, p in keys], timeout=self.timeout_s)
                    if tp.offset >= 0}
        except KafkaException as exc:
            log.warning("committed_offsets_unavailable", group=group, error=str(exc))
            return {}

    def _read(self, data_type: str, table: Any | None) -> TailRead:
        started = time.perf_counter()
        topics = list(self.topics_of.get(data_type, ()))
        ids = self._ids(set(topics))
        recorded = recorded_offsets(table, topic_ids=ids or None) if table is not None else {}
        topics += sorted({t for t, _ in recorded} - set(topics))
        keys = self._partitions(topics)
        ids = self._ids({t for t, _ in keys})
        starts = resume_offsets(keys, table_upto=recorded, group_committed=self._group_committed(data_type, keys),
                                from_beginning=False)
        starts = {key: starts.get(key, OFFSET_BEGINNING) for key in keys}  # the consumer's auto.offset.reset: earliest
        result = TailRead(table=spec(data_type).arrow_schema().empty_table(), start=dict(starts), upto=dict(starts))
        if not keys:
            result.seconds = time.perf_counter() - started
            return result
        consumer = self._kafka()
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in keys])
        at_end: set[TopicPartitionKey] = set()
        msgs: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        try:
            while len(at_end) < len(keys) and len(msgs) < self.max_messages and time.monotonic() < deadline:
                for msg in consumer.consume(min(self.poll_batch, self.max_messages - len(msgs)), 0.005):
                    err = msg.error()
                    if err is None:
                        key = (msg.topic(), msg.partition())
                        if msg.offset() >= result.upto.get(key, 0):  # a fetch may repeat after a seek
                            msgs.append(msg)
                            result.upto[key] = msg.offset() + 1
                            at_end.discard(key)  # more came after an end: it was not the end
                    elif err.code() == KafkaError._PARTITION_EOF:
                        key = (msg.topic(), msg.partition())
                        result.upto[key] = max(result.upto.get(key, 0), msg.offset())
                        at_end.add(key)
                    elif err.fatal():
                        raise KafkaException(err)
                    else:
                        log.warning("fresh_read_error", error=err.str(), code=err.code())
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
        """As the consumer's `_prepare`: decode, leave out poison and values the gap store cannot
        take, and drop the row index."""
        decoder = self._decoders.get(data_type)
        if decoder is None:
            decoder = self._decoders[data_type] = BatchDecoder(data_type=data_type, registry=self.registry)
        decoded = decoder.decode(list(map(Message.value, msgs)), list(map(Message.partition, msgs)),
                                 list(map(Message.offset, msgs)), topics=list(map(Message.topic, msgs)), topic_ids=ids)
        table = decoded.table
        dead = len(decoded.poison)
        if spec(data_type).sequenced and table.num_rows and self.max_lengths:
            too_long = None
            for column, limit in self.max_lengths.items():
                if column in table.column_names:
                    mask = pc.fill_null(pc.greater(pc.utf8_length(table[column]), limit), False)
                    too_long = mask if too_long is None else pc.or_(too_long, mask)
            if too_long is not None:
                dead += pc.sum(too_long).as_py() or 0
                table = table.filter(pc.invert(too_long))
        return table.drop_columns([INDEX_COLUMN]), dead
