"""Reads of the ingestion app (HackSoft style)."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from ingestion.models import Consumer, SequenceGap


def gaps(*, data_type: str | None = None, symbol: str | None = None, state: str | None = None) -> QuerySet[SequenceGap]:
    qs = SequenceGap.objects.all()
    if data_type:
        qs = qs.filter(data_type=data_type)
    if symbol:
        qs = qs.filter(symbol=symbol)
    if state:
        qs = qs.filter(state=state)
    return qs


def gap_counts_by_state() -> dict[str, int]:
    return {row["state"]: row["n"] for row in SequenceGap.objects.values("state").annotate(n=Count("id"))}


def consumers(*, status: str | None = None) -> QuerySet[Consumer]:
    qs = Consumer.objects.select_related("topic")
    return qs.filter(status=status) if status else qs
