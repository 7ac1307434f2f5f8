"""Offset reset for a stopped consumer group, consistent with the offsets its Iceberg table records.

A consumer resumes each partition from max(group's committed offset, next offset recorded in the
table's snapshots), so the table, not the group, decides how far back a reset can go: moving a
partition behind the offset the table holds would either be overridden silently or (if it were
not) write those rows a second time. `plan_reset` therefore refuses such a target and says, per
partition, what a reset re-reads (messages not in the table) or skips (messages that will never
reach the table). `apply_reset` commits the planned offsets for the group.

Plain Python: explicit bootstrap servers, group and table offsets; no Django.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from k2core.errors import Conflict

Mode = Literal["earliest", "latest", "timestamp", "offsets"]
MODES: tuple[str, ...] = ("earliest", "latest", "timestamp", "offsets")


class OffsetResetError(Conflict):
    """The reset cannot be planned or applied as asked (the message says why and where)."""

    code = "offset_reset_refused"


@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    low: int
    high: int
    committed: int | None  # the group's committed offset (None: none)
    in_table: int | None  # next offset after the last message the table holds (None: none)
    target: int
    refused: str | None = None
    rewrite: bool = False  # the target is behind the table: its rows from there are deleted and written again

    @property
    def current(self) -> int | None:
        """Where the consumer would resume today: max(committed, table)."""
        known = [o for o in (self.committed, self.in_table) if o is not None]
        return max(known) if known else None

    @property
    def effect(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        current = self.low if self.current is None else self.current
        if self.rewrite and self.in_table is not None:
            return (f"rewrites {self.in_table - self.target} message(s) (offsets {self.target}–{self.in_table - 1}: "
                    "their rows are deleted from the table and written again, once)"
                    + (f" and re-reads {current - self.in_table} more" if current > self.in_table else ""))
        if self.target > current:
            return f"skips {self.target - current} message(s) (offsets {current}–{self.target - 1} never reach the table)"
        if self.target < current:
            return f"re-reads {current - self.target} message(s) (offsets {self.target}–{current - 1}, not in the table)"
        return "unchanged"


def _client_conf(bootstrap: str) -> dict[str, object]:
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000}


def _read_forward(consumer: Consumer, starts: dict[tuple[str, int], int], *, until_ms: int | None = None,
                  quiet_s: float = 1.0, timeout: float = 30.0) -> dict[tuple[str, int], tuple[int, int | None]]:
    """Read each partition from its start offset to its end (no message for `quiet_s`): per partition
    (next offset after the last message seen, the first offset whose timestamp is ≥ until_ms or None).

    Brokers report the end offset and time lookups from their indexes; the embedded broker (Tansu)
    reports the end of a partition as the base offset of its last record batch + 1 and answers
    every time lookup with 0. Reading from there forward gives the true values on any broker and
    costs one batch on a correct one."""
    found: dict[tuple[str, int], tuple[int, int | None]] = {key: (start, None) for key, start in starts.items()}
    if not starts:
        return found
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
    deadline = time.monotonic() + timeout
    last_message = time.monotonic()
    try:
        while time.monotonic() - last_message < quiet_s and time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=10_000, timeout=0.2)
            for msg in msgs:
                if msg.error():
                    continue
                key = (msg.topic(), msg.partition())
                end, first = found[key]
                if first is None and until_ms is not None and msg.timestamp()[1] >= until_ms:
                    first = msg.offset()
                found[key] = (max(end, msg.offset() + 1), first)
                if first is not None:  # a time lookup needs no more of this partition
                    consumer.pause([TopicPartition(*key)])
            if msgs:
                last_message = time.monotonic()
    finally:
        consumer.unassign()
    return found


# Commit errors a broker gives a non-member's commit while the group still has members.
_STILL_A_MEMBER = {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS}


def group_members(*, bootstrap: str, group: str, timeout: float = 10.0) -> int:
    """How many members the group has now (a reset needs none: stop the consumer first).

    The embedded broker (Tansu) describes every group with no members, so there the check is the
    commit itself: it refuses a non-member's commit while the group has a member (`apply_reset`)."""
    admin = AdminClient(_client_conf(bootstrap))
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=timeout)
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" in str(exc):
            return 0
        raise OffsetResetError(f"cannot describe consumer group {group}: {exc}") from None
    return len(description.members or [])


def plan_reset(*, bootstrap: str, group: str, topics: list[str], mode: str,
               in_table: dict[tuple[str, int], int], timestamp: dt.datetime | None = None,
               offsets: dict[int, int] | None = None, timeout: float = 10.0,
               rewrite: bool = False) -> list[PartitionPlan]:
    """One plan per partition of `topics`. `in_table` is the table's recorded next offset per
    (topic, partition); `offsets` maps partition → target offset (mode "offsets", partitions not
    named keep their position); `timestamp` is an aware instant (mode "timestamp": the first
    offset at or after it, or the end). A target behind `in_table` is refused, unless `rewrite`:
    then the plan says that range's rows are deleted from the table and written again."""
    if mode not in MODES:
        raise OffsetResetError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "timestamp" and (timestamp is None or timestamp.tzinfo is None):
        raise OffsetResetError("mode timestamp needs an instant with a time zone, e.g. 2026-03-10T10:00:00+00:00")
    if mode == "offsets" and not offsets:
        raise OffsetResetError("mode offsets needs at least one partition:offset, e.g. 0:1200")
    consumer = Consumer({**_client_conf(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=timeout)
        partitions: list[TopicPartition] = []
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise OffsetResetError(f"topic {topic} does not exist on the broker at {bootstrap}")
            partitions += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        if mode == "offsets":
            known = {tp.partition for tp in partitions}
            unknown = sorted(set(offsets or {}) - known)
            if unknown:
                raise OffsetResetError(f"partition(s) {unknown} do not exist (the topic has {sorted(known)})")
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=timeout)
                     if tp.offset >= 0}
        marks = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
                 for tp in partitions}
        ends = _read_forward(consumer, {key: max(low, high - 1) for key, (low, high) in marks.items() if high > low})
        by_time: dict[tuple[str, int], int] = {}
        if mode == "timestamp":
            assert timestamp is not None
            millis = int(timestamp.timestamp() * 1000)
            answered = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, millis) for tp in partitions], timeout=timeout)
            # check the broker's answer by reading from it to the first message at or after the time
            starts = {(tp.topic, tp.partition): max(marks[(tp.topic, tp.partition)][0], tp.offset)
                      for tp in answered if tp.offset >= 0}
            by_time = {key: first for key, (_, first) in _read_forward(consumer, starts, until_ms=millis).items()
                       if first is not None}
        plans = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            low, reported_high = marks[key]
            high = max(reported_high, ends.get(key, (reported_high, None))[0])
            table_at = in_table.get(key)
            current = max([o for o in (committed.get(key), table_at) if o is not None], default=low)
            if mode == "earliest":
                target = low
            elif mode == "latest":
                target = high
            elif mode == "timestamp":
                target = by_time.get(key, high)  # nothing at or after the time: the end
            else:
                target = (offsets or {}).get(tp.partition, current)
            refused = None
            behind_table = table_at is not None and target < table_at
            if target < low or target > high:
                refused = f"offset {target} is outside the partition's range {low}–{high}"
            elif behind_table and not rewrite:
                refused = (f"offset {target} is behind offset {table_at}, up to which the Iceberg table already "
                           f"holds this partition's rows: re-reading would write {table_at - target} row(s) twice; "
                           f"choose {table_at} or later, or rewrite that range explicitly")
            plans.append(PartitionPlan(topic=tp.topic, partition=tp.partition, low=low, high=high,
                                       committed=committed.get(key), in_table=table_at, target=target,
                                       refused=refused, rewrite=behind_table and refused is None))
        return plans
    except KafkaException as exc:
        raise OffsetResetError(f"cannot read offsets from the broker at {bootstrap}: {exc}") from None
    finally:
        consumer.close()


def apply_reset(*, bootstrap: str, group: str, plans: list[PartitionPlan], timeout: float = 10.0) -> None:
    """Commit the planned offsets for the group. Refuses if any partition was refused or the
    group has members (a running consumer would overwrite the commit)."""
    refused = [p for p in plans if p.refused]
    if refused:
        raise OffsetResetError("; ".join(f"{p.topic}[{p.partition}]: {p.refused}" for p in refused))
    members = group_members(bootstrap=bootstrap, group=group, timeout=timeout)
    if members:
        raise OffsetResetError(f"consumer group {group} has {members} active member(s): stop its consumers first")
    consumer = Consumer({**_client_conf(bootstrap), "group.id": group, "enable.auto.commit": False})
    try:
        results = consumer.commit(offsets=[TopicPartition(p.topic, p.partition, p.target) for p in plans],
                                  asynchronous=False)
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in results or [] if tp.error]
        if failed:
            raise OffsetResetError(f"the broker refused the commit: {'; '.join(failed)}")
    except KafkaException as exc:
        code = exc.args[0].code() if exc.args and hasattr(exc.args[0], "code") else None
        if code in _STILL_A_MEMBER:
            raise OffsetResetError(
                f"the broker refused the commit because consumer group {group} still has a member "
                f"({exc.args[0].name()}): a consumer that stopped without leaving the group (killed, or its "
                "worker lost) stays a member until its session times out (45 s by default); nothing changed, "
                "apply again in a minute") from None
        raise OffsetResetError(f"cannot commit offsets for group {group}: {exc}") from None
    finally:
        consumer.close()


__all__ = ["MODES", "OffsetResetError", "PartitionPlan", "apply_reset", "group_members", "plan_reset"]
