"""Where a newly assigned partition resumes (exactly-once into the table, ADR #003).

The names of the offset maps the consumer keeps, all {(topic, partition): next offset}:
- `table_upto`: the next offset after what the table holds (committed Iceberg snapshots);
- `group_committed`: the consumer group's committed offset in Kafka;
- `sent_to_table_upto` (in the loop): `table_upto` plus the batch in flight; anything below it is
  a duplicate and is skipped;
- a batch's `read_upto`: the next offset after its last message (committed to Kafka once the
  batch is in the table), and `snapshot_offsets`: the part of `read_upto` that moves past what
  the table held, recorded in the batch's snapshot summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING

TopicPartitionKey = tuple[str, int]


def resume_offsets(partitions: Iterable[TopicPartitionKey], *, table_upto: Mapping[TopicPartitionKey, int],
                   group_committed: Mapping[TopicPartitionKey, int],
                   from_beginning: bool) -> dict[TopicPartitionKey, int]:
    """The offset each partition starts from: the larger of what the table recorded (by any group)
    and what the group committed, so a crash between the Iceberg and the Kafka commit does not
    write a batch twice, nor does a second group writing the same table. With `from_beginning`
    the group's offsets are ignored and a partition the table holds nothing of starts at its
    beginning. A partition absent from the answer starts where the group's
    `auto.offset.reset` says (nothing recorded anywhere)."""
    starts: dict[TopicPartitionKey, int] = {}
    for key in partitions:
        candidates = [o for o in (table_upto.get(key), None if from_beginning else group_committed.get(key))
                      if o is not None]
        if candidates:
            starts[key] = max(candidates)
        elif from_beginning:
            starts[key] = OFFSET_BEGINNING
    return starts
