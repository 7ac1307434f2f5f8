"""The ORM-backed gap sink the consumer engine writes to (ADR #014; data model SequenceGap).

Gaps are inserted with ON CONFLICT DO NOTHING on the model's unique key (stream + expected
sequence), so re-detecting a gap while replaying after a crash never makes a second row.
A late event that falls inside an open gap is applied to it: `filled_sequences` grows,
`missing_remaining` shrinks, and the gap becomes `filled` (with `filled_at`) when nothing is
missing any more. Applying the same late event twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from ingestion.engine.consumer import GapRecord, LateRecord
from ingestion.models import SequenceGap


class OrmGapSink:
    """Implements `ingestion.engine.consumer.GapSink` with the SequenceGap model."""

    def record_gaps(self, gaps: list[GapRecord]) -> None:
        SequenceGap.objects.bulk_create(
            [SequenceGap(detected_at=g.detected_at, symbol=g.symbol, exchange=g.exchange,
                         asset_class=g.asset_class, data_type=g.data_type, expected_sequence=g.expected_sequence,
                         received_sequence=g.received_sequence, gap_size=g.gap_size,
                         missing_remaining=g.gap_size, filled_sequences=[], topic=g.topic,
                         partition=g.partition, offset=g.offset)
             for g in gaps],
            ignore_conflicts=True,
        )

    def record_late(self, events: list[LateRecord]) -> int:
        filled = 0
        with transaction.atomic():
            for event in events:
                gap = (SequenceGap.objects.select_for_update()
                       .filter(exchange=event.exchange, data_type=event.data_type, symbol=event.symbol,
                               expected_sequence__lte=event.sequence, received_sequence__gt=event.sequence)
                       .exclude(state=SequenceGap.State.FILLED)
                       .first())
                if gap is None or event.sequence in gap.filled_sequences:
                    continue
                gap.filled_sequences = sorted([*gap.filled_sequences, event.sequence])
                gap.missing_remaining = gap.gap_size - len(gap.filled_sequences)
                fields = ["filled_sequences", "missing_remaining"]
                if gap.missing_remaining <= 0 and gap.state == SequenceGap.State.OPEN:
                    gap.state = SequenceGap.State.FILLED
                    gap.filled_at = timezone.now()
                    fields += ["state", "filled_at"]
                    filled += 1
                gap.save(update_fields=fields)
        return filled


class GapAcknowledgeError(Exception):
    """A gap cannot be acknowledged as asked (the message says why)."""


def acknowledge_gaps(*, gaps: Any, user: Any, note: str) -> int:
    """Mark gaps as looked at by an operator, with who, when and a note (required: it is the
    audit trail compliance reads). Filled gaps may be acknowledged too; returns how many changed."""
    note = (note or "").strip()
    if not note:
        raise GapAcknowledgeError("write a note saying what was found (for example: exchange halt, feed restart)")
    with transaction.atomic():
        return gaps.exclude(state=SequenceGap.State.ACKNOWLEDGED).update(
            state=SequenceGap.State.ACKNOWLEDGED, acknowledged_by=user, acknowledged_at=timezone.now(), note=note)
