"""The consumer and topic admin pages tell the truth about what editing does (issue 13, item 6):
running consumers' config is read-only, the topic drop-down leaves out dead-letter topics, an
existing topic's broker-side fields are read-only, runs have meaningful labels, figures are humane."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from ingestion import admin_display as show
from ingestion.models import Consumer, ConsumerRun, Topic

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):  # type: ignore[no-untyped-def]
    client.force_login(get_user_model().objects.create_superuser(f"s-{uuid.uuid4().hex[:6]}", "s@example.com", "pw-123456"))
    return client


def _topics() -> tuple[Topic, Topic]:
    good = Topic.objects.create(name="market.equities.trades.asx", asset_class="equities", data_type="trades", exchange="asx")
    dlq = Topic.objects.create(name="market.equities.trades.asx.dlq", asset_class="equities", data_type="trades", exchange="asx")
    return good, dlq


def test_running_consumers_config_is_read_only_and_stopped_ones_editable(staff) -> None:  # type: ignore[no-untyped-def]
    topic, _ = _topics()
    running = Consumer.objects.create(name="run", data_type="trades", topic=topic, group_id="g", status="running")
    stopped = Consumer.objects.create(name="stop", data_type="trades", topic=topic, group_id="g2", status="stopped")
    page = staff.get(f"/admin/ingestion/consumer/{running.pk}/change/").content.decode()
    assert 'name="batch_size"' not in page and 'name="topic"' not in page and 'name="group_id"' not in page
    page = staff.get(f"/admin/ingestion/consumer/{stopped.pk}/change/").content.decode()
    assert 'name="batch_size"' in page and 'name="topic"' in page
    # a POST to a running consumer's page cannot change its config either
    staff.post(f"/admin/ingestion/consumer/{running.pk}/change/", {"batch_size": "5"})
    running.refresh_from_db()
    assert running.batch_size is None


def test_topic_dropdown_leaves_out_dead_letter_topics(staff) -> None:  # type: ignore[no-untyped-def]
    _topics()
    page = staff.get("/admin/ingestion/consumer/add/").content.decode()
    assert ">market.equities.trades.asx<" in page and "market.equities.trades.asx.dlq" not in page


def test_an_existing_topics_broker_fields_are_read_only(staff) -> None:  # type: ignore[no-untyped-def]
    topic, _ = _topics()
    page = staff.get(f"/admin/ingestion/topic/{topic.pk}/change/").content.decode()
    assert 'name="partitions"' not in page and 'name="name"' not in page
    staff.post(f"/admin/ingestion/topic/{topic.pk}/change/", {"name": "renamed", "partitions": "3"})
    topic.refresh_from_db()
    assert (topic.name, topic.partitions) == ("market.equities.trades.asx", 30)
    assert 'name="partitions"' in staff.get("/admin/ingestion/topic/add/").content.decode()


def test_runs_are_labelled_by_consumer_time_and_outcome() -> None:
    topic, _ = _topics()
    consumer = Consumer.objects.create(name="trades-asx", data_type="trades", topic=topic, group_id="g")
    run = ConsumerRun.objects.create(consumer=consumer)
    ConsumerRun.objects.filter(pk=run.pk).update(started_at=dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC))
    run.refresh_from_db()
    assert str(run) == f"trades-asx run {run.pk} · 2026-12-03 09:30 UTC · running"
    run.ended_at, run.error = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC), "broker unreachable"
    assert str(run).endswith("· failed: broker unreachable")
    run.error = ""
    assert str(run).endswith("· ended 10:00")


def test_figures_and_instants_are_humane() -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)
    assert show.number(1234567) == "1,234,567" and show.number(812.54, 1) == "812.5" and show.number(None) == "—"
    assert show.duration(3605) == "1 h 0 min" and show.duration(42) == "42 s" and show.duration(93_600) == "1 d 2 h"
    html = str(show.ago(now - dt.timedelta(seconds=3), now=now))
    assert ">3 s ago</time>" in html and 'title="2026-12-03 11:59:57 UTC"' in html
    assert ">1 h 0 min ago<" in str(show.ago(now.timestamp() - 3600, now=now))  # epoch seconds from stats
    assert ">2 min 0 s ago<" in str(show.ago("2026-12-03T11:58:00Z", now=now))   # ISO from stats
    table = str(show.stats_table({"messages": 2080, "started_at": now.timestamp() - 60, "rate": 1.25}))
    assert "2,080" in table and "1.2" in table and str(int(now.timestamp())) not in table
    assert "no per-partition figures" in str(show.partitions_table({"lag": 3}))  # stats from before partitions


def test_consumer_list_shows_key_columns_first(staff) -> None:  # type: ignore[no-untyped-def]
    topic, _ = _topics()
    Consumer.objects.create(name="trades-asx", data_type="trades", topic=topic, group_id="g", status="running",
                            heartbeat_at=timezone.now(), stats={"rate": 1500.0, "lag": 12345, "messages": 10})
    page = staff.get("/admin/ingestion/consumer/").content.decode()
    head = page.split("<thead>")[1].split("</thead>")[0]
    order = [head.index(f"column-{c}") for c in ("name", "status_badge", "heartbeat", "rows_per_s", "total_lag")]
    assert "msgs/s" in head.lower()
    assert order == sorted(order)
    assert "1,500.0" in page and "12,345" in page and "s ago</time>" in page


def test_a_stale_heartbeat_of_a_running_consumer_is_flagged(staff) -> None:  # type: ignore[no-untyped-def]
    topic, _ = _topics()
    Consumer.objects.create(name="stale", data_type="trades", topic=topic, group_id="g", status="running",
                            heartbeat_at=timezone.now() - dt.timedelta(minutes=2))
    Consumer.objects.create(name="fresh", data_type="trades", topic=topic, group_id="g2", status="running",
                            heartbeat_at=timezone.now())
    page = staff.get("/admin/ingestion/consumer/").content.decode()
    rows = {name: row for row in page.split("<tr") for name in ("stale", "fresh") if f">{name}</a>" in row}
    assert 'class="k2-stale"' in rows["stale"] and re.search(r">2 min \d+ s ago<", rows["stale"])
    assert 'class="k2-stale"' not in rows["fresh"]


def test_a_consumers_commit_interval_is_set_in_the_admin_and_a_bad_one_is_refused_saying_why(staff) -> None:  # type: ignore[no-untyped-def]
    topic, _ = _topics()
    form = {"name": "fresh", "data_type": "trades", "topic": str(topic.pk), "topic_pattern": "", "group_id": "g-fresh",
            "batch_size": "", "max_batch_ms": "", "runs-TOTAL_FORMS": "0", "runs-INITIAL_FORMS": "0"}
    for bad, why in (("60001", "less than or equal to 60000"), ("-1", "greater than or equal to 0"),
                     ("soon", "Enter a whole number")):
        page = staff.post("/admin/ingestion/consumer/add/", {**form, "min_commit_interval_ms": bad}).content.decode()
        assert why in page and not Consumer.objects.filter(name="fresh").exists()
    assert 'name="min_commit_interval_ms"' in staff.get("/admin/ingestion/consumer/add/").content.decode()
    response = staff.post("/admin/ingestion/consumer/add/", {**form, "min_commit_interval_ms": "0"})
    assert response.status_code == 302
    assert Consumer.objects.get(name="fresh").min_commit_interval_ms == 0  # 0 is a value, not "blank"
    staff.post("/admin/ingestion/consumer/add/", {**form, "name": "default", "group_id": "g-default",
                                                  "min_commit_interval_ms": ""})
    assert Consumer.objects.get(name="default").min_commit_interval_ms is None  # the setting decides
