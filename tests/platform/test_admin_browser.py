"""The operator's journey through the admin in a real browser (Debian's Chromium, headless, driven
by Playwright; no browser download): sign in, find the platform pages from the index, filter the
sequence gaps, acknowledge one with the admin's action, be refused without a note (by the
browser when empty, by the server when blank), then succeed.

What the Django test client cannot show: that the pages render and work as a browser uses them
(the action drop-down, the selection checkboxes, the intermediate note page and its form, CSRF)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from ingestion.models import SequenceGap
from tests.platform.browser import chromium_page


@pytest.fixture
def page(monkeypatch) -> Iterator:  # type: ignore[no-untyped-def]
    with chromium_page(monkeypatch, timeout_ms=15_000) as new_page:
        yield new_page


def _gap(symbol: str, expected: int, state: str = SequenceGap.State.OPEN) -> SequenceGap:
    return SequenceGap.objects.create(
        detected_at=timezone.now(), symbol=symbol, exchange="asx", asset_class="equities", data_type="trades",
        expected_sequence=expected, received_sequence=expected + 2, gap_size=2, missing_remaining=2,
        topic="market.equities.trades.asx", partition=0, offset=10, state=state)


@pytest.mark.django_db(transaction=True)
def test_operator_signs_in_filters_gaps_and_acknowledges_one_with_a_note(live_server, page, k2_settings) -> None:  # type: ignore[no-untyped-def]
    get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    halted = _gap("BHP", 100)
    other = _gap("RIO", 7)
    _gap("CBA", 3, state=SequenceGap.State.FILLED)

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "wrong password")
    page.click("input[type=submit]")
    assert "Please enter the correct username and password" in page.content()
    page.fill("#id_password", "pw-ops-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")  # the index (the dashboard) has loaded

    # the index links the platform pages next to the models
    for link in ("Iceberg tables", "API docs", "Health", "Metrics"):
        assert page.get_by_role("link", name=link).first.is_visible(), link
    page.get_by_role("link", name="Iceberg tables").first.click()
    page.wait_for_url("**/admin/catalog/iceberg-tables/")
    headers = [h.lower() for h in page.locator("#content table thead th").all_inner_texts()]  # CSS upper-cases them
    assert headers[:1] == ["table"] and "snapshots" in headers and "manifests" in headers
    page.go_back()
    page.wait_for_url("**/admin/")
    page.get_by_role("link", name="Sequence gaps").first.click()
    page.wait_for_selector("#result_list tbody tr")
    assert page.locator("#result_list tbody tr").count() == 3

    page.get_by_role("link", name="Open").first.click()  # the state filter in the sidebar
    page.wait_for_url("**state__exact=open**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2 and "state__exact=open" in page.url
    assert "CBA" not in page.locator("#result_list").inner_text()

    page.locator(f"input[name=_selected_action][value='{halted.pk}']").check()
    page.select_option("select[name=action]", "acknowledge_selected")
    page.click("button[name=index]")
    page.wait_for_selector("textarea[name=note]")
    assert page.get_by_text("Note (required)").is_visible()

    page.click("input[type=submit]")  # no note: the browser itself refuses (the field is required)
    assert page.locator("textarea[name=note]").evaluate("el => !el.validity.valid")
    assert page.get_by_text("Note (required)").is_visible()  # still on the note page
    page.fill("textarea[name=note]", "   ")  # blank: the browser lets it through, the server refuses
    page.click("input[type=submit]")
    page.wait_for_selector("ul.messagelist")
    assert "Nothing acknowledged: write a note" in page.content()
    halted.refresh_from_db()
    assert halted.state == SequenceGap.State.OPEN

    page.locator(f"input[name=_selected_action][value='{halted.pk}']").check()
    page.select_option("select[name=action]", "acknowledge_selected")
    page.click("button[name=index]")
    page.wait_for_selector("textarea[name=note]")
    page.fill("textarea[name=note]", "ASX trading halt 11:02-11:05")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    halted.refresh_from_db()
    other.refresh_from_db()
    assert halted.state == SequenceGap.State.ACKNOWLEDGED and halted.note == "ASX trading halt 11:02-11:05"
    assert halted.acknowledged_by.username == "ops"
    assert other.state == SequenceGap.State.OPEN
    assert page.locator("ul.messagelist").is_visible()


@pytest.mark.django_db(transaction=True)
def test_operator_sets_a_consumers_commit_interval_and_the_browser_refuses_one_out_of_range(  # type: ignore[no-untyped-def]
        live_server, page, k2_settings) -> None:
    from ingestion.models import Consumer, Topic
    from tests.platform.browser import sign_in

    topic = Topic.objects.create(name="market.equities.trades.asx", asset_class="equities", data_type="trades",
                                 exchange="asx")
    consumer = Consumer.objects.create(name="bhp", data_type="trades", topic=topic, group_id="g-bhp")
    sign_in(page, live_server.url, "ops", "pw-ops-123")
    change = f"{live_server.url}/admin/ingestion/consumer/{consumer.pk}/change/"
    page.goto(change)
    field = page.locator("#id_min_commit_interval_ms")
    assert "K2_CONSUMER_MIN_COMMIT_INTERVAL_MS" in page.locator(".field-min_commit_interval_ms").inner_text()
    field.fill("60001")
    page.click("input[name=_save]")  # the browser keeps the form: the field says 60000 at most
    assert field.evaluate("el => !el.validity.valid && el.validity.rangeOverflow")
    assert page.url == change
    consumer.refresh_from_db()
    assert consumer.min_commit_interval_ms is None
    field.fill("25")
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist")
    consumer.refresh_from_db()
    assert consumer.min_commit_interval_ms == 25
