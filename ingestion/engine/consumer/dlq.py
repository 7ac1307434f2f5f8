"""Step 2's other half: poison messages go to `{topic}.dlq`, with headers naming the error and
the source position, delivered (flushed) before anything of their batch is committed."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from catalog.engine.schemas import dlq_topic
from ingestion.engine.consumer.budget import StopBudget
from ingestion.engine.consumer.errors import DeadLettersUndelivered
from ingestion.engine.consumer.stats import metric_labels
from ingestion.engine.decode import Poison
from k2core import metrics
from k2core.kafka import PARTITIONER
from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")


class DeadLetterQueue:
    def __init__(self, *, bootstrap_servers: str, group: str, data_type: str, budget: StopBudget) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.data_type = data_type
        self.budget = budget
        self._producer: Producer | None = None
        self._topics: set[str] = set()  # dead-letter topics known to exist
        self._failures: list[str] = []

    def _ensure_topic(self, topic: str, partitions: int) -> None:
        if topic in self._topics:
            return
        if not self.budget.broker_reachable():
            raise DeadLettersUndelivered(f"cannot reach Kafka at {self.bootstrap_servers} to write to {topic}; "
                                         "nothing of this batch was committed, so it is read again after a restart")
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        try:
            if topic not in admin.list_topics(timeout=max(0.1, self.budget.seconds(10))).topics:
                futures = admin.create_topics([NewTopic(topic, num_partitions=max(1, partitions),
                                                        replication_factor=1)])
                try:
                    futures[topic].result(timeout=max(0.1, self.budget.seconds(15)))
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        except (KafkaException, TimeoutError) as exc:
            raise DeadLettersUndelivered(f"cannot create the dead-letter topic {topic} ({exc}); check the broker, "
                                         "then restart the consumer (nothing of this batch was committed)") from None
        self._topics.add(topic)

    def send(self, messages: list[Any], poison: list[Poison]) -> None:
        """Deliver `poison` (indexes into `messages`) to their topics' dead-letter topics, and wait
        until every one is acknowledged. Raises `DeadLettersUndelivered` otherwise: nothing of the
        batch is committed then, so it is read again after a restart and nothing is lost."""
        if self._producer is None:
            self._producer = Producer({"bootstrap.servers": self.bootstrap_servers,
                                       "enable.idempotence": True, "acks": "all", "partitioner": PARTITIONER})
        producer = self._producer
        failures = self._failures

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(err.str())

        for item in poison:
            msg = messages[item.index]
            topic = msg.topic()
            target = dlq_topic(topic)
            self._ensure_topic(target, 1)
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
                ("k2.consumer.group", self.group.encode()),
            ]
            if msg.key() is not None:
                headers.append(("k2.source.key", msg.key()))
            producer.produce(target, key=position.encode(), value=msg.value(), headers=headers,
                             on_delivery=delivered)
            metrics.DLQ_MESSAGES.labels(**metric_labels(topic, self.data_type), reason=item.reason).inc()
            log.warning("message_sent_to_dlq", reason=item.reason, error=item.error, topic=topic,
                        partition=msg.partition(), offset=msg.offset(), dlq=target)
        remaining = producer.flush(self.budget.seconds(30))
        if remaining or failures:
            detail = "; ".join(failures[:3]) or f"{remaining} undelivered"
            failures.clear()
            if remaining:  # drop them: the batch is not committed and is re-read, so they come again
                producer.purge()
                producer.flush(0)
            # Nothing is committed yet: the batch is re-read after a restart, nothing is lost.
            raise DeadLettersUndelivered(f"could not write poison messages to the dead-letter topic ({detail}); "
                                         "check the broker, then restart the consumer")

    def close(self) -> int:
        """Flush within the stop budget; the number of dead letters still undelivered."""
        if self._producer is None:
            return 0
        left = self._producer.flush(self.budget.seconds(10))
        self._producer = None
        return left
