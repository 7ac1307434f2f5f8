"""Reads of the ingestion app (HackSoft style)."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from ingestion.models import SequenceGap


def gaps(*, exchange: str | None = None, data_type: str | None = None, symbol: str | None = None,
         state: str | None = None, detected_from: dt.datetime | None = None,
         detected_to: dt.datetime | None = None) -> QuerySet[SequenceGap]:
    """Sequence gaps (ADR #014), newest first, filtered: the one gap filter the admin and API share."""
    qs = SequenceGap.objects.all().order_by("-detected_at", "-id")
    if exchange:
        qs = qs.filter(exchange__iexact=exchange)
    if data_type:
        qs = qs.filter(data_type=data_type)
    if symbol:
        qs = qs.filter(symbol=symbol)
    if state:
        qs = qs.filter(state=state)
    if detected_from:
        qs = qs.filter(detected_at__gte=detected_from)
    if detected_to:
        qs = qs.filter(detected_at__lt=detected_to)
    return qs

