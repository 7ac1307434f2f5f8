"""K2's Kafka topics: one declared list, created idempotently, and their watermarks. No Django."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from k2core.datatypes import DATA_TYPES
from k2core.logging import get_logger

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

log = get_logger(__name__, component="topics")

DEFAULT_PARTITIONS = {"asx": 30}  # ADR #009: 30 partitions for ASX (about 1000 symbols)
DECLARED_EXCHANGES = ("asx",)
DECLARED_ASSET_CLASSES = ("equities",)
DLQ_PARTITIONS = 1


class TopicError(RuntimeError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    asset_class: str
    data_type: str
    exchange: str
    partitions: int
    dlq: bool = False


def declared_topics(*, exchanges: tuple[str, ...] = DECLARED_EXCHANGES, asset_class: str = DECLARED_ASSET_CLASSES[0],
                    partitions: int | None = None) -> list[TopicSpec]:
    """The market-data topics (one per data type and exchange) and their dead-letter topics."""
    from catalog.engine.schemas import dlq_topic, topic_name  # imported here: fastavro is slow to import
    specs = []
    for exchange in exchanges:
        count = partitions or DEFAULT_PARTITIONS.get(exchange, 30)
        for data_type in DATA_TYPES:
            name = topic_name(asset_class=asset_class, data_type=data_type, exchange=exchange)
            specs.append(TopicSpec(name, asset_class, data_type, exchange, count))
            specs.append(TopicSpec(dlq_topic(name), asset_class, data_type, exchange, DLQ_PARTITIONS, dlq=True))
    return specs


# confluent_kafka is imported in the functions that talk to Kafka: every process reads this
# module at start (ingestion.apps, for DECLARED_*), most without talking to Kafka (issue #10 item 6).


def _admin(bootstrap: str, timeout: float) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000))})


def existing_partitions(bootstrap: str, *, timeout: float = 10.0) -> dict[str, int]:
    from confluent_kafka import KafkaException

    try:
        metadata = _admin(bootstrap, timeout).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(f"Kafka at {bootstrap} did not answer within {timeout:g}s ({exc.args[0]}); "
                         "start it with `manage.py broker start` or check K2_KAFKA_BOOTSTRAP") from None
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def topic_ids(bootstrap: str, topics: set[str] | list[str], *, timeout: float = 10.0) -> dict[str, str]:
    """Current Kafka topic ids of `topics` (a broker without ids, or one that does not answer in
    time, gives none: the caller then trusts offsets as they are; logged)."""
    from confluent_kafka import KafkaException, TopicCollection

    ids: dict[str, str] = {}
    if not topics:
        return ids
    admin = _admin(bootstrap, timeout)  # held until every answer came: a client let go cancels its requests
    try:
        for topic, future in admin.describe_topics(TopicCollection(sorted(topics))).items():
            topic_id = future.result(timeout=timeout).topic_id
            if topic_id is not None:
                ids[topic] = str(topic_id)
    except (KafkaException, ValueError, TypeError, TimeoutError) as exc:
        log.warning("topic_ids_unavailable", error=str(exc))
    return ids


def create_topics(bootstrap: str, specs: list[TopicSpec], *, timeout: float = 10.0) -> dict[str, str]:
    """Create the missing topics. Name → "created", "exists" or "exists with N partitions (declared M)".

    Existing topics are never altered: adding partitions would move symbols to other
    partitions and break per-symbol ordering (ADR #009)."""
    current = existing_partitions(bootstrap, timeout=timeout)
    outcome: dict[str, str] = {}
    missing = []
    for spec in specs:
        if spec.name in current:
            have = current[spec.name]
            outcome[spec.name] = "exists" if have == spec.partitions else f"exists with {have} partitions (declared {spec.partitions})"
        else:
            missing.append(spec)
    if missing:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewTopic

        admin = _admin(bootstrap, timeout)  # kept alive until the futures resolve
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1) for s in missing],
            operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":  # created concurrently
                    outcome[name] = "exists"
                else:
                    raise TopicError(f"could not create topic {name}: {exc.args[0].str()}") from None
        log.info("topics_created", topics=[s.name for s in missing])
    return outcome


def watermarks(bootstrap: str, topic: str, *, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Partition → (low, high) watermark offsets as the broker reports them."""
    partitions = existing_partitions(bootstrap, timeout=timeout).get(topic)
    if partitions is None:
        raise TopicError(f"topic {topic} does not exist on {bootstrap}; create it with `manage.py create_topics`")
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "k2-watermarks", "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
                for p in range(partitions)}
    finally:
        consumer.close()
