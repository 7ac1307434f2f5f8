"""The on-call operator in a real browser (Debian's Chromium via Playwright), issue 13: sees a
consumer die (SIGKILL of its Celery pool process) and come back, stops it and resets its offsets
(a rewind behind the table refused, a skip applied), acknowledges a gap and finds it in History,
and exports the filtered gaps as CSV. Screenshots go to var/artifacts/ (gitignored)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ingestion.models import Consumer, ConsumerRun, SequenceGap, Topic
from ingestion.tasks import reconcile_consumers
from tests.consumer import test_self_healing
from tests.consumer.conftest import create_topic, encode_trades, produce, trade
from tests.platform import test_admin_browser
from tests.platform.browser import ARTIFACTS, sign_in

workers = test_self_healing.workers  # the real Celery workers fixture
page = test_admin_browser.page  # the Chromium page fixture
_gap = test_admin_browser._gap

def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ops-{name}.png"), full_page=True)


def _sign_in(page, url: str) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, url, "oncall", "pw-oncall-123")


def _status(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator(".field-status .readonly").inner_text().strip().lower()


def _run_action(page, pk: int, action: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"input[name=_selected_action][value='{pk}']").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    page.wait_for_selector("ul.messagelist")


@pytest.mark.timeout(480)  # the killed member's 45 s session must expire before the partition is handed back
@pytest.mark.django_db(transaction=True)
def test_operator_sees_a_consumer_die_and_come_back_then_resets_its_offsets(
        live_server, page, workers, k2_settings, kafka_bootstrap, iceberg_tables, catalog_config, unique,
        monkeypatch) -> None:
    from catalog.registry import EmbeddedRegistry
    from ingestion import consumer_services

    real = consumer_services.consumer_config  # the portal reads this test's table (as the workers write it)
    monkeypatch.setattr(consumer_services, "consumer_config",
                        lambda **kw: real(**kw, namespace=catalog_config.namespace))

    topic_name = f"market.equities.trades.b{unique}"
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    registry = EmbeddedRegistry()
    produce(kafka_bootstrap, topic_name, encode_trades(registry, topic_name, [trade("BHP", s) for s in range(1, 51)]))
    topic = Topic.objects.create(name=topic_name, asset_class="equities", data_type="trades", exchange=f"b{unique}",
                                 partitions=1)
    consumer = Consumer.objects.create(name=f"bhp-{unique}", data_type="trades", topic=topic, group_id=f"g-{unique}",
                                       batch_size=10, max_batch_ms=100)
    _sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/ingestion/consumer/")
    _run_action(page, consumer.pk, "start_selected")
    change = f"{live_server.url}/admin/ingestion/consumer/{consumer.pk}/change/"

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        consumer.refresh_from_db()
        if consumer.status == "running" and (consumer.stats or {}).get("messages", 0) >= 50:
            break
        time.sleep(0.5)
    page.goto(change)
    assert _status(page) == "running", Consumer.objects.get(pk=consumer.pk).last_error
    _shot(page, "1-running")

    dead_member = (consumer.stats or {}).get("member_id")
    os.kill(int(consumer.worker.rsplit(" ", 1)[1]), signal.SIGKILL)  # its pool process dies
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Consumer.objects.get(pk=consumer.pk).status != "failed":
        time.sleep(0.5)
    page.goto(change)
    assert _status(page) == "failed", Consumer.objects.get(pk=consumer.pk).last_error
    assert "WorkerLostError" in page.locator(".field-last_error").inner_text()
    _shot(page, "2-failed")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Consumer.objects.get(pk=consumer.pk).status != "running":
        reconcile_consumers.run(lock_name=f"k2:test:reconcile:{unique}")  # beat's job, every 5 s
        time.sleep(1)
    # as an operator would, wait until the restarted consumer owns its partition again: the killed
    # member never left the group, and the broker hands the partition over once its session expires
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        stats = Consumer.objects.get(pk=consumer.pk).stats or {}
        if stats.get("partitions") and stats.get("member_id") not in (None, dead_member):
            break
        time.sleep(1)
    page.goto(change)
    assert _status(page) == "running", Consumer.objects.get(pk=consumer.pk).last_error
    assert "WorkerLostError" in page.locator("#runs-group").inner_text()  # the dead run, closed with its reason
    assert stats.get("partitions") and stats.get("member_id") != dead_member, stats
    _shot(page, "3-back")

    # stop it, then reset its offsets
    page.goto(f"{live_server.url}/admin/ingestion/consumer/")
    _run_action(page, consumer.pk, "stop_selected")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Consumer.objects.get(pk=consumer.pk).status != "stopped":
        time.sleep(0.5)
    produce(kafka_bootstrap, topic_name, encode_trades(registry, topic_name, [trade("BHP", s) for s in range(51, 61)]))
    page.goto(change)
    page.get_by_role("link", name="Reset offsets…").click()
    page.check("input[name=mode][value=earliest]")
    page.click("input[name=preview]")
    page.wait_for_selector("#reset-plan")
    assert "refused, nothing will change" in page.content()
    assert "up to which the Iceberg table already holds" in page.locator("#reset-plan").inner_text()
    assert page.locator("input[name=apply]").count() == 0
    _shot(page, "4-reset-refused")
    page.check("input[name=mode][value=latest]")
    page.click("input[name=preview]")
    page.wait_for_selector("#reset-plan")
    assert "skips 10 message(s) (offsets 50–59 never reach the table)" in page.locator("#reset-plan").inner_text()
    _shot(page, "5-reset-preview")
    page.click("input[name=apply]")
    page.wait_for_selector("ul.messagelist", timeout=60_000)  # the change page's success, or the reset page's refusal
    _shot(page, "6-reset-applied")
    assert page.url.endswith(f"/admin/ingestion/consumer/{consumer.pk}/change/"), page.locator("ul.messagelist").inner_text()
    assert "offsets reset" in page.locator("ul.messagelist").inner_text()
    page.get_by_role("link", name="History").click()
    history = page.locator("#change-history").inner_text()
    for entry in ("Starting (was stopped", "Stopping (was running", "Offsets reset to latest"):
        assert entry in history, entry
    _shot(page, "7-history")
    assert ConsumerRun.objects.filter(consumer=consumer).count() == 2


@pytest.mark.django_db(transaction=True)
def test_operator_acknowledges_a_gap_finds_it_in_history_and_exports_the_filtered_list(live_server, page) -> None:
    halted = _gap("BHP", 100)
    _gap("RIO", 7)
    _gap("CBA", 3, state=SequenceGap.State.FILLED)
    _sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/ingestion/sequencegap/?state__exact=open")
    assert page.get_by_role("link", name="Add sequence gap").count() == 0
    page.locator(f"input[name=_selected_action][value='{halted.pk}']").check()
    page.select_option("select[name=action]", "acknowledge_selected")
    page.click("button[name=index]")
    page.fill("textarea[name=note]", "ASX trading halt 11:02-11:05")
    page.click("input[type=submit]")
    page.wait_for_selector("ul.messagelist")

    page.goto(f"{live_server.url}/admin/ingestion/sequencegap/{halted.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0  # read-only
    page.get_by_role("link", name="History").click()
    assert "Acknowledged (was open): ASX trading halt 11:02-11:05" in page.locator("#change-history").inner_text()
    _shot(page, "7-gap-history")

    page.goto(f"{live_server.url}/admin/ingestion/sequencegap/?state__exact=open")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV (as filtered)").click()
    text = open(download.value.path()).read()
    lines = text.splitlines()
    assert lines[0].startswith("id,detected_at,symbol") and len(lines) == 2 and ",RIO," in lines[1]
    _shot(page, "8-gaps-export")
