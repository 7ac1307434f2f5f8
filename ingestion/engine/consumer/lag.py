"""Lag of the partitions this member owns (ADR #007; issue 11 items 4-5), from local state only:
never a blocking broker call on the loop's thread."""

from __future__ import annotations

import time
import warnings
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ingestion.engine.consumer.offsets import TopicPartitionKey
from ingestion.engine.consumer.stats import metric_labels
from k2core import metrics
from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")


class LagTracker:
    def __init__(self, *, bootstrap_servers: str, group: str, data_type: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.data_type = data_type
        self._start_offsets: dict[TopicPartitionKey, int] = {}  # where each owned partition started
        self._listed_ends: dict[TopicPartitionKey, int] = {}  # ListOffsets(latest) answers
        self._ends_request: dict[Any, Future[Any]] | None = None
        self._ends_requested_at = 0.0
        self._admin: AdminClient | None = None
        self._series: dict[TopicPartitionKey, tuple[str, ...]] = {}  # metric label values set

    def started(self, partitions: list[TopicPartition]) -> None:
        """On assignment: where each partition starts (the lag of a partition this member has not
        read from yet counts from there, not from the log start)."""
        for tp in partitions:
            if tp.offset >= 0:
                self._start_offsets[(tp.topic, tp.partition)] = tp.offset

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Revoked or lost partitions: their lag is another member's to report (metric series too)."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._start_offsets.pop(key, None)
            self._listed_ends.pop(key, None)
            series = self._series.pop(key, None)
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

    def refresh_listed_ends(self, assignment: list[TopicPartition]) -> None:
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

        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 5000})
        self._ends_requested_at = time.monotonic()
        try:
            self._ends_request = self._admin.list_offsets(
                {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in assignment},
                request_timeout=5)
        except (KafkaException, ValueError, TypeError) as exc:
            log.debug("end_offsets_request_failed", error=str(exc))

    def partition_lag(self, consumer: Consumer | None, *, table_upto: dict[TopicPartitionKey, int],
                      last_commit_at: dict[TopicPartitionKey, float]) -> tuple[int | None, list[dict[str, Any]]]:
        """Total and per-partition lag of the partitions `consumer` owns.

        The end of each log is the larger of the high watermark of the last fetch response (kept
        by librdkafka for every partition it fetches) and the last ListOffsets(latest) answer.
        Both are the log end on Kafka. Tansu answers ListOffsets (and a watermark query) with the
        base offset of the last record batch + 1, which is short of the end by up to a batch,
        while its fetch responses carry the true end: the fetch value wins there. `committed` is
        the next offset the table holds (and the group has been or is being committed to); for a
        partition nothing has been written from yet, the offset it started from."""
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
            committed = table_upto.get(key, self._start_offsets.get(key))
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
            stamp = last_commit_at.get(key)
            entries.append({"topic": tp.topic, "partition": tp.partition, "committed": committed, "end": end,
                            "lag": lag, "last_commit_at": datetime.fromtimestamp(stamp, UTC).isoformat()
                            if stamp is not None else None})
        return total, entries

    def publish(self, entries: list[dict[str, Any]]) -> None:
        """The per-partition lag gauge."""
        for entry in entries:
            if entry["lag"] is None:
                continue
            key = (entry["topic"], entry["partition"])
            series = (*metric_labels(entry["topic"], self.data_type).values(), self.group, str(entry["partition"]))
            metrics.CONSUMER_LAG.labels(*series).set(entry["lag"])
            self._series[key] = series
