"""The ORM-backed gap sink the consumer engine writes to (ADR #014; data model SequenceGap).

Gaps are inserted with ON CONFLICT DO NOTHING on the model's unique key (stream + expected
sequence), so re-detecting a gap while replaying after a crash never makes a second row.
A late event that falls inside an open gap is applied to it: `filled_sequences` grows,
`missing_remaining` shrinks, and the gap becomes `filled` (with `filled_at`) when nothing is
missing any more. Applying the same late event twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import DataError, transaction
from django.utils import timezone

from ingestion.engine.consumer import GapRecord, LateRecord
from ingestion.models import SequenceGap
from k2core.errors import Invalid

_TEXT_FIELDS = ("symbol", "exchange", "asset_class", "data_type", "topic")
_MAX_LENGTHS = {name: SequenceGap._meta.get_field(name).max_length for name in _TEXT_FIELDS}


def _unfit(values: dict[str, str]) -> str | None:
    """Why these values cannot be stored in a SequenceGap row (None when they can)."""
    for name, value in values.items():
        if "\x00" in value:
            return f"{name} {value!r} contains a NUL character, which Postgres text cannot hold"
        limit = _MAX_LENGTHS.get(name)
        if limit is not None and len(value) > limit:
            return f"{name} is {len(value)} characters long; the gap store holds at most {limit}"
    return None


class OrmGapSink:
    """Implements `ingestion.engine.consumer.GapSink` with the SequenceGap model.

    A gap whose values the table cannot hold (too long, a NUL character, or anything else the
    database refuses as data) is not inserted but returned with the reason: the engine sends its
    record to the dead-letter topic, so a value can never make the consumer fail and replay the
    same batch forever. Connection and other operational errors still raise."""

    max_lengths = {"symbol": _MAX_LENGTHS["symbol"], "exchange": _MAX_LENGTHS["exchange"]}

    @staticmethod
    def _row(g: GapRecord) -> SequenceGap:
        return SequenceGap(detected_at=g.detected_at, symbol=g.symbol, exchange=g.exchange,
                           asset_class=g.asset_class, data_type=g.data_type, expected_sequence=g.expected_sequence,
                           received_sequence=g.received_sequence, gap_size=g.gap_size,
                           missing_remaining=g.gap_size, filled_sequences=[], topic=g.topic,
                           partition=g.partition, offset=g.offset)

    def record_gaps(self, gaps: list[GapRecord]) -> list[tuple[GapRecord, str]]:
        rejected: list[tuple[GapRecord, str]] = []
        fit: list[GapRecord] = []
        for gap in gaps:
            reason = _unfit({name: getattr(gap, name) for name in _TEXT_FIELDS})
            if reason is None:
                fit.append(gap)
            else:
                rejected.append((gap, reason))
        if not fit:
            return rejected
        try:
            with transaction.atomic():
                SequenceGap.objects.bulk_create([self._row(g) for g in fit], ignore_conflicts=True)
        except (DataError, ValueError):
            for gap in fit:  # find the row the database refuses; store the others
                try:
                    with transaction.atomic():
                        SequenceGap.objects.bulk_create([self._row(gap)], ignore_conflicts=True)
                except (DataError, ValueError) as exc:
                    rejected.append((gap, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        return rejected

    def record_late(self, events: list[LateRecord]) -> int:
        filled = 0
        with transaction.atomic():
            for event in events:
                if _unfit({"symbol": event.symbol, "exchange": event.exchange, "data_type": event.data_type}):
                    continue  # no gap of such a stream can have been stored
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


class GapAcknowledgeError(Invalid):
    """A gap cannot be acknowledged as asked (the message says why)."""


def acknowledge_gaps(*, gaps: Any, user: Any, note: str) -> int:
    """Mark gaps as looked at by an operator, with who, when and a note (required: it is the
    audit trail compliance reads). Filled gaps may be acknowledged too; returns how many changed."""
    note = (note or "").strip()
    if not note:
        raise GapAcknowledgeError("Nothing acknowledged: write a note saying what was found (for example: exchange halt, "
                                  "feed restart).", field="note")
    with transaction.atomic():
        return gaps.exclude(state=SequenceGap.State.ACKNOWLEDGED).update(
            state=SequenceGap.State.ACKNOWLEDGED, acknowledged_by=user, acknowledged_at=timezone.now(), note=note)
