"""Operators acknowledge gaps in the admin, with a note; the note is required."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from ingestion.models import SequenceGap


def _gap(symbol: str, expected: int) -> SequenceGap:
    return SequenceGap.objects.create(
        detected_at=timezone.now(), symbol=symbol, exchange="asx", asset_class="equities", data_type="trades",
        expected_sequence=expected, received_sequence=expected + 2, gap_size=2, missing_remaining=2,
        topic="market.equities.trades.asx", partition=0, offset=10)


@pytest.mark.django_db
def test_acknowledge_action_asks_for_a_note_then_records_who_when_and_why() -> None:
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    client = Client()
    client.force_login(admin)
    gap, other = _gap("BHP", 100), _gap("RIO", 7)
    url = "/admin/ingestion/sequencegap/"
    page = client.post(url, {"action": "acknowledge_selected", "_selected_action": [gap.pk]})
    assert page.status_code == 200 and b"Note (required)" in page.content

    refused = client.post(url, {"action": "acknowledge_selected", "_selected_action": [gap.pk], "confirm": "1",
                                "note": "  "}, follow=True)
    assert b"Nothing acknowledged: write a note" in refused.content
    gap.refresh_from_db()
    assert gap.state == SequenceGap.State.OPEN

    client.post(url, {"action": "acknowledge_selected", "_selected_action": [gap.pk], "confirm": "1",
                      "note": "ASX trading halt 11:02-11:05"}, follow=True)
    gap.refresh_from_db()
    other.refresh_from_db()
    assert gap.state == SequenceGap.State.ACKNOWLEDGED
    assert gap.acknowledged_by == admin and gap.acknowledged_at is not None
    assert gap.note == "ASX trading halt 11:02-11:05"
    assert other.state == SequenceGap.State.OPEN  # only the selected gap
