"""Offset reset of a stopped Consumer (admin page and `manage.py reset_offsets`), consistent with
the offsets recorded in its Iceberg table (`ingestion.engine.offset_reset`)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.conf import settings

from ingestion.engine.offset_reset import OffsetResetError, PartitionPlan, apply_reset, plan_reset
from ingestion.models import Consumer
from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")


def consumer_topics(consumer: Consumer) -> list[str]:
    """The topics the consumer reads: its topic, or those on the broker matching its pattern."""
    if consumer.topic_id and not consumer.topic_pattern:
        return [consumer.topic.name]
    if not consumer.topic_pattern:
        raise OffsetResetError(f"consumer {consumer.name} has neither a topic nor a topic pattern")
    from confluent_kafka.admin import AdminClient

    pattern = re.compile(consumer.topic_pattern.lstrip("^"))
    names = AdminClient({"bootstrap.servers": settings.K2.bootstrap_servers}).list_topics(timeout=10).topics
    return sorted(n for n in names if pattern.match(n) and not n.endswith(".dlq"))


def table_offsets(consumer: Consumer) -> dict[tuple[str, int], int]:
    """The next offset per (topic, partition) recorded in the consumer's Iceberg table: what the
    consumer resumes from when it is ahead of the group's commit. The one place the portal reads
    the table's offset record (through `catalog.engine.writer.recorded_offsets`, as the consumer does)."""
    from catalog.engine.writer import recorded_offsets

    return recorded_offsets(_table(consumer))  # any group's: the record is the table's, as the consumer reads it


def _table(consumer: Consumer) -> Any:
    from catalog.engine.iceberg import table_identifier
    from catalog.selectors import get_catalog
    from ingestion import consumer_services

    config = consumer_services.consumer_config(data_type=consumer.data_type, topics=("-",),
                                               group_id=consumer.group_id or None)
    return get_catalog().load_table(table_identifier(consumer.data_type, config.namespace))


def _group(consumer: Consumer) -> str:
    from catalog.engine.schemas import consumer_group

    return consumer.group_id or consumer_group(consumer.data_type)


def parse_partition_offsets(text: str) -> dict[int, int]:
    """`0:1200, 1:980` → {0: 1200, 1: 980}; a clear message for anything else."""
    result: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in re.split(r"[,\s]+", text or ""))):
        partition, sep, offset = part.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise OffsetResetError(f"{part!r} is not partition:offset (for example 0:1200)")
        result[int(partition)] = int(offset)
    return result


def plan_consumer_reset(*, consumer: Consumer, mode: str, timestamp: dt.datetime | None = None,
                        offsets: dict[int, int] | None = None, rewrite: bool = False) -> list[PartitionPlan]:
    """What a reset would do, per partition (nothing changes)."""
    return plan_reset(bootstrap=settings.K2.bootstrap_servers, group=_group(consumer),
                      topics=consumer_topics(consumer), mode=mode, in_table=table_offsets(consumer),
                      timestamp=timestamp, offsets=offsets, rewrite=rewrite)


def reset_consumer_offsets(*, consumer: Consumer, mode: str, timestamp: dt.datetime | None = None,
                           offsets: dict[int, int] | None = None, rewrite: bool = False) -> list[PartitionPlan]:
    """Plan again (the broker or table may have moved since the preview) and commit the group's
    offsets. Only for a stopped consumer whose group has no members.

    With `rewrite`, a target behind what the table holds is allowed: the group is committed first,
    then the table's rows from the target on are deleted in one commit that records the rewind
    (`catalog.engine.writer.rewind_rows`), so the consumer reads that range again and writes each
    row once. Should the second step fail, the consumer still resumes after what the table holds
    (the later of the two offsets): nothing is lost or doubled, and the error says to apply again."""
    consumer.refresh_from_db()
    if consumer.status != Consumer.Status.STOPPED:
        raise OffsetResetError(f"consumer {consumer.name} is {consumer.status}: stop it (or reset it) first; "
                               "offsets can only be reset for a stopped consumer")
    plans = plan_consumer_reset(consumer=consumer, mode=mode, timestamp=timestamp, offsets=offsets, rewrite=rewrite)
    apply_reset(bootstrap=settings.K2.bootstrap_servers, group=_group(consumer), plans=plans)
    rewind = {(p.topic, p.partition): p.target for p in plans if p.rewrite}
    if rewind:
        from catalog.engine.writer import rewind_rows

        try:
            rewind_rows(_table(consumer), rewind)
        except Exception as exc:  # the group moved back but the table did not: the table's record still wins
            raise OffsetResetError(f"the group's offsets were reset but the table's rows could not be deleted "
                                   f"({type(exc).__name__}: {exc}); the consumer resumes after what the table "
                                   "holds, so nothing is lost or written twice: apply the rewrite again") from exc
    log.info("offsets_reset", consumer=consumer.name, group=_group(consumer), mode=mode, rewrite=bool(rewind),
             offsets={f"{p.topic}[{p.partition}]": p.target for p in plans})
    return plans


def describe_plans(plans: list[PartitionPlan]) -> str:
    """One line per partition, for LogEntry messages and the command's output."""
    return "; ".join(f"{p.topic}[{p.partition}] → {p.target} ({p.effect})" for p in plans)


def plan_rows(plans: list[PartitionPlan]) -> list[dict[str, Any]]:
    return [{"topic": p.topic, "partition": p.partition, "low": p.low, "high": p.high, "committed": p.committed,
             "in_table": p.in_table, "current": p.current, "target": p.target, "effect": p.effect,
             "refused": p.refused} for p in plans]


__all__ = ["OffsetResetError", "consumer_topics", "describe_plans", "parse_partition_offsets",
           "plan_consumer_reset", "reset_consumer_offsets", "table_offsets"]
