"""What a consumer is told: its configuration (ADR #012, #013, #015, #016), and the librdkafka
settings derived from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from catalog.engine.iceberg import NAMESPACE
from catalog.engine.maintenance import SnapshotPolicy
from catalog.engine.schemas import check_data_type, consumer_group
from catalog.engine.writer import RetryPolicy
from ingestion.engine.limits import MAX_COMMIT_INTERVAL_MS


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap_servers: str
    data_type: str
    topics: tuple[str, ...] | None = None
    topic_pattern: str | None = None
    group_id: str | None = None  # default: k2-iceberg-writer-{data_type} (ADR #012)
    # Batches are sized from what is waiting (issue #15): a small one at once when traffic is thin,
    # up to `batch_size` with a backlog; while the batch before is being committed, one fills to
    # at least `batch_floor` (ADR #015's 1,000) unless it is `max_batch_ms` old first.
    batch_size: int = 50_000  # the upper bound
    batch_floor: int = 1000  # ADR #015
    max_batch_ms: int = 500
    # With thin traffic, batches are handed over at most this often (a lone message after a quiet
    # spell goes at once): every commit writes the table's metadata again, snapshot list included,
    # so a commit per few hundred messages costs far more CPU per record and thickens the
    # snapshot history that expiry then has to thin (docs/benchmarks.md, issue #15).
    min_commit_interval_ms: int = 100
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

    def __post_init__(self) -> None:
        check_data_type(self.data_type)
        if self.topics and self.topic_pattern:
            raise ValueError("Specify either topics or topic_pattern, not both (ADR #013)")
        if not self.topics and not self.topic_pattern:
            raise ValueError("Specify either topics or topic_pattern (ADR #013): e.g. market.equities.trades.asx")
        if self.batch_size < 1 or self.batch_floor < 1 or self.max_batch_ms < 1:
            raise ValueError("batch_size, batch_floor and max_batch_ms must be positive")
        if not 0 <= self.min_commit_interval_ms <= MAX_COMMIT_INTERVAL_MS:
            raise ValueError(f"min_commit_interval_ms must be from 0 to {MAX_COMMIT_INTERVAL_MS} (ms), "
                             f"got {self.min_commit_interval_ms}")

    @property
    def group(self) -> str:
        return self.group_id or consumer_group(self.data_type)

    @property
    def subscription(self) -> list[str]:
        if self.topics:
            return list(self.topics)
        pattern = self.topic_pattern or ""
        return [pattern if pattern.startswith("^") else "^" + pattern]

    @property
    def single_topic(self) -> str | None:
        """The topic, when exactly one is subscribed by name (no need to ask every message)."""
        return self.topics[0] if self.topics and len(self.topics) == 1 else None


def kafka_settings(config: ConsumerConfig, *, on_commit: Callable[..., None]) -> dict[str, Any]:
    """The librdkafka settings of the consumer: manual offset commits only, read from the start
    for a new group, fetches bounded by the batch age, a deep prefetch queue."""
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group,
        "enable.auto.commit": False,  # ADR #003: commit only after the Iceberg commit
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group reads what is already there: no loss
        "max.poll.interval.ms": 300_000,
        "enable.partition.eof": False,
        "on_commit": on_commit,  # errors of asynchronous offset commits
        "topic.metadata.refresh.interval.ms": 5000,  # pattern subscriptions see new topics soon
        # A broker may hold a fetch for fetch.wait.max.ms (default 500) when little is waiting
        # (Tansu does); bounded by the batch age so latency stays bounded when traffic is thin.
        "fetch.wait.max.ms": max(10, min(100, config.max_batch_ms)),
        "fetch.error.backoff.ms": max(10, min(100, config.max_batch_ms)),
        # librdkafka keeps a prefetch queue per partition; once it holds queued.min.messages it
        # waits fetch.queue.backoff.ms (default 1 s) before fetching that partition again. With
        # the defaults the loop ran dry between fetches: 190k → 250-300k records/s measured
        # with these two (docs/benchmarks.md). Memory stays capped by queued.max.messages.kbytes.
        "queued.min.messages": max(100_000, 10 * config.batch_size),
        "fetch.queue.backoff.ms": 10,
    }
    if config.session_timeout_ms:
        conf["session.timeout.ms"] = config.session_timeout_ms
        conf["heartbeat.interval.ms"] = max(100, config.session_timeout_ms // 6)
    conf.update(dict(config.kafka_overrides))
    return conf
