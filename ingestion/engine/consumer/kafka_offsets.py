"""Step 5: committing offsets to Kafka, only ever for what the table already holds (ADR #003).

A failed commit loses nothing: the table records the same offsets and a restart resumes there
(`offsets.resume_offsets`)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ingestion.engine.consumer.budget import StopBudget
from ingestion.engine.consumer.offsets import TopicPartitionKey
from ingestion.engine.consumer.stats import metric_labels
from k2core import metrics
from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")


class KafkaOffsetCommitter:
    def __init__(self, *, group: str, data_type: str, budget: StopBudget) -> None:
        self.group = group
        self.data_type = data_type
        self.budget = budget
        self.consumer: Consumer | None = None  # set once the consumer exists (`on_commit` is in its settings)
        self.last_commit_at: dict[TopicPartitionKey, float] = {}  # time.time() of this member's last commit

    def commit(self, positions: dict[TopicPartitionKey, int], *, asynchronous: bool = False) -> None:
        consumer = self.consumer
        assert consumer is not None
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        if asynchronous:  # failures reach `on_commit`; the table holds the offsets either way
            try:
                consumer.commit(offsets=offsets, asynchronous=True)
                return
            except KafkaException as exc:
                log.warning("kafka_commit_failed", attempt=1, error=str(exc))
        if not self.budget.broker_reachable():  # a synchronous commit would wait ~7 s per attempt for nothing
            self.budget.not_sent("offsets not committed to Kafka (broker unreachable): "
                                 + ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items()))
                                 + "; the table records them, so a restart resumes there")
            return
        for attempt in range(3):
            if attempt and self.budget.expired():
                break
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self.last_commit_at.update(dict.fromkeys(positions, time.time()))
                return
            except KafkaException as exc:
                for topic in {t for t, _ in positions}:
                    metrics.KAFKA_COMMIT_ERRORS.labels(**metric_labels(topic, self.data_type)).inc()
                log.warning("kafka_commit_failed", attempt=attempt + 1, error=str(exc))
                time.sleep(0.1 * (2 ** attempt))
        # The table already records these offsets: a restart resumes after them, no duplicates.
        log.error("kafka_commit_gave_up", offsets={f"{t}[{p}]": o for (t, p), o in positions.items()})
        if self.budget.deadline is not None:
            self.budget.not_sent("offsets not committed to Kafka: "
                                 + ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(positions.items()))
                                 + "; the table records them, so a restart resumes there")

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's callback for asynchronous commits."""
        if err is None:
            now = time.time()
            self.last_commit_at.update({(tp.topic, tp.partition): now for tp in partitions if tp.error is None})
            return
        if err.code() == KafkaError._NO_OFFSET:
            return
        for topic in {tp.topic for tp in partitions}:
            metrics.KAFKA_COMMIT_ERRORS.labels(**metric_labels(topic, self.data_type)).inc()
        # The table already records these offsets: a restart resumes after them, no duplicates.
        log.warning("kafka_commit_failed", asynchronous=True, error=err.str())

    def align_group(self, partitions: list[TopicPartition], group_committed: dict[TopicPartitionKey, int]) -> None:
        """On assignment: commit the group to the offsets the table recorded where those are ahead
        of the group's (a crash between the Iceberg and the Kafka commit, or a group reset), so
        outside tools (kafka-consumer-groups, kafbat) see the lag that is really left.
        Asynchronous: a failure is logged by `on_commit`."""
        consumer = self.consumer
        assert consumer is not None
        ahead = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in partitions
                 if tp.offset >= 0 and tp.offset > group_committed.get((tp.topic, tp.partition), -1)]
        if not ahead:
            return
        log.info("group_offsets_aligned_to_table", group=self.group,
                 partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in ahead])
        try:
            consumer.commit(offsets=ahead, asynchronous=True)
        except KafkaException as exc:
            log.warning("kafka_commit_failed", asynchronous=True, error=str(exc))

    def forget(self, partitions: list[Any]) -> None:
        for tp in partitions:
            self.last_commit_at.pop((tp.topic, tp.partition), None)
