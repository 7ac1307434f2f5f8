"""Operations in the admin (issue 13): the reconciler's decisions, recovering any state, and the
audit trail — a LogEntry per action, gaps read-only except acknowledge, CSV exports, request
log lines naming the API key and user. Real Postgres and Redis; no broker needed here."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.utils import timezone

from ingestion import consumer_services
from ingestion.models import Consumer, ConsumerRun, SequenceGap
from ingestion.tasks import reconcile_consumers


def _consumer(name: str = "c", **kw) -> Consumer:  # type: ignore[no-untyped-def]
    return Consumer.objects.create(name=name, data_type="trades", group_id=f"g-{name}", **kw)


def _running(name: str, *, beat_age_s: float, task_id: str = "t-1") -> Consumer:
    """A row a task claims (status running, a run open) whose last heartbeat is `beat_age_s` old."""
    row = _consumer(name, status="running", desired_status="running", task_id=task_id)
    old = timezone.now() - dt.timedelta(seconds=beat_age_s)
    Consumer.objects.filter(pk=row.pk).update(heartbeat_at=old, updated_at=old)
    ConsumerRun.objects.create(consumer=row, task_id=task_id)
    row.refresh_from_db()
    return row


# --- the reconciler ----------------------------------------------------------------------
@pytest.mark.django_db
def test_stale_consumer_is_failed_with_the_reason_its_run_closed_and_restarted() -> None:
    dead = _running("dead", beat_age_s=60)
    alive = _running("alive", beat_age_s=1, task_id="t-2")
    report = consumer_services.reconcile_consumers()
    assert report.failed == ["dead"] and report.restarted == ["dead"]
    dead.refresh_from_db()
    run = ConsumerRun.objects.get(consumer=dead)
    assert run.ended_at is not None and "heartbeat stale for 60 s" in run.end_reason
    assert "K2_CONSUMER_STALE_SECONDS=15" in dead.last_error
    assert dead.status == "starting" and dead.task_id not in ("", "t-1") and len(dead.restart_times) == 1
    alive.refresh_from_db()
    assert alive.status == "running" and alive.task_id == "t-2"


@pytest.mark.django_db
def test_restarts_back_off_and_stop_after_the_limit() -> None:
    now = timezone.now()
    row = _consumer("flaky", status="failed", desired_status="running", last_error="boom",
                    restart_times=[(now - dt.timedelta(seconds=30)).isoformat()])
    consumer_services.reconcile_consumers(now=now)
    row.refresh_from_db()
    assert row.status == "failed" and row.next_restart_at == now + dt.timedelta(seconds=5)  # the 2nd waits 5 s
    consumer_services.reconcile_consumers(now=now + dt.timedelta(seconds=3))
    row.refresh_from_db()
    assert row.status == "failed"
    consumer_services.reconcile_consumers(now=now + dt.timedelta(seconds=6))
    row.refresh_from_db()
    assert row.status == "starting" and len(row.restart_times) == 2

    k2 = settings.K2
    limit = k2.consumer_max_restarts
    exhausted = _consumer("exhausted", status="failed", desired_status="running", last_error="config is wrong",
                          restart_times=[(now - dt.timedelta(seconds=i)).isoformat() for i in range(limit)])
    report = consumer_services.reconcile_consumers(now=now)
    exhausted.refresh_from_db()
    assert report.gave_up == ["exhausted"] and exhausted.status == "failed"
    assert f"gave up restarting: {limit} automatic restarts in the last {k2.consumer_restart_window_minutes} min" \
        in exhausted.last_error and exhausted.last_error.startswith("config is wrong")
    # once the window has passed, it is tried again
    later = now + dt.timedelta(minutes=k2.consumer_restart_window_minutes, seconds=1)
    assert "exhausted" in consumer_services.reconcile_consumers(now=later).restarted


@pytest.mark.django_db
def test_failed_consumer_an_operator_stopped_is_not_restarted() -> None:
    row = _consumer("off", status="failed", desired_status="running")
    consumer_services.stop_consumer(consumer=row)
    row.refresh_from_db()
    assert (row.status, row.desired_status) == ("stopped", "stopped")
    assert consumer_services.reconcile_consumers().restarted == []


@pytest.mark.django_db
def test_stop_and_start_work_on_a_dead_consumer_and_stopping_does_not_last_forever() -> None:
    dead = _running("d1", beat_age_s=120)
    consumer_services.stop_consumer(consumer=dead)
    dead.refresh_from_db()
    assert dead.status == "stopped" and "heartbeat stale" in ConsumerRun.objects.get(consumer=dead).end_reason
    dead2 = _running("d2", beat_age_s=120)
    consumer_services.start_consumer(consumer=dead2)  # not refused
    dead2.refresh_from_db()
    assert dead2.status == "starting" and ConsumerRun.objects.get(consumer=dead2).ended_at is not None
    stopping = _running("d3", beat_age_s=120)
    Consumer.objects.filter(pk=stopping.pk).update(status="stopping")
    assert consumer_services.reconcile_consumers().stopped == ["d3"]
    stopping.refresh_from_db()
    assert stopping.status == "stopped"


@pytest.mark.django_db
def test_a_task_whose_config_fails_marks_the_row_failed_and_closes_its_run() -> None:
    row = _consumer("noconf", status="starting", desired_status="running", task_id="t-9")
    with pytest.raises(ValueError, match="Specify either topics or topic_pattern"):
        consumer_services.run_consumer_row(consumer_id=row.pk, task_id="t-9")
    row.refresh_from_db()
    run = ConsumerRun.objects.get(consumer=row)
    assert row.status == "failed" and "Specify either topics" in row.last_error
    assert run.ended_at is not None and run.end_reason.startswith("failed: ValueError")
    assert consumer_services.reconcile_consumers().restarted == ["noconf"]


@pytest.mark.django_db
def test_a_superseded_task_exits_without_touching_the_row() -> None:
    row = _consumer("sup", status="starting", desired_status="running", task_id="new")
    assert consumer_services.run_consumer_row(consumer_id=row.pk, task_id="old") is None
    row.refresh_from_db()
    assert row.status == "starting" and not ConsumerRun.objects.filter(consumer=row).exists()


@pytest.mark.django_db
def test_only_one_reconciler_runs_at_a_time(unique: str) -> None:
    lock_name = f"k2:test:lock:{unique}"
    client = redis.Redis.from_url(settings.K2.redis_url)
    held = client.lock(lock_name, timeout=30)
    assert held.acquire(blocking=False)
    try:
        _running("dead", beat_age_s=60)
        assert reconcile_consumers.run(lock_name=lock_name) is None  # another pass holds the lock
        assert Consumer.objects.get(name="dead").status == "running"
    finally:
        held.release()
    assert reconcile_consumers.run(lock_name=lock_name)["failed"] == ["dead"]


@pytest.mark.django_db
def test_celery_worker_lost_hook_marks_the_consumer_failed() -> None:
    from billiard.exceptions import WorkerLostError
    from celery.signals import task_failure

    from ingestion.tasks import run_consumer

    row = _running("lost", beat_age_s=1, task_id="t-lost")
    task_failure.send(sender=run_consumer, task_id="t-lost", args=[row.pk],
                      exception=WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3."))
    row.refresh_from_db()
    assert row.status == "failed" and "WorkerLostError" in row.last_error and "SIGKILL" in row.last_error
    assert ConsumerRun.objects.get(consumer=row).ended_at is not None


# --- admin: actions and History ------------------------------------------------------------
def _history(obj) -> list[str]:  # type: ignore[no-untyped-def]
    from django.contrib.contenttypes.models import ContentType

    return [e.get_change_message() for e in LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk), action_flag=CHANGE
    ).order_by("action_time", "id")]


@pytest.mark.django_db
def test_start_stop_and_reset_from_the_admin_are_in_history(admin_client) -> None:
    row = _consumer("audited")
    url = "/admin/ingestion/consumer/"
    admin_client.post(url, {"action": "start_selected", "_selected_action": [row.pk]})
    admin_client.post(url, {"action": "stop_selected", "_selected_action": [row.pk]})
    Consumer.objects.filter(pk=row.pk).update(status="stopping")  # stuck
    admin_client.post(url, {"action": "reset_selected", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == "stopped"
    assert _history(row) == ["Starting (was stopped, now starting) from the admin",
                             "Stopping (was starting, now stopping) from the admin",
                             "Reset to stopped (was stopping, now stopped) from the admin"]
    page = admin_client.get(f"/admin/ingestion/consumer/{row.pk}/history/")
    assert b"Reset to stopped (was stopping, now stopped)" in page.content


@pytest.mark.django_db
def test_reset_action_needs_the_operate_permission(client, django_user_model) -> None:
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_consumer", "change_consumer"]))
    client.force_login(user)
    row = _consumer("guarded", status="stopping")
    page = client.get("/admin/ingestion/consumer/")
    assert b"reset_selected" not in page.content
    client.post("/admin/ingestion/consumer/", {"action": "reset_selected", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == "stopping"
    assert client.get(f"/admin/ingestion/consumer/{row.pk}/reset-offsets/").status_code == 403


def _gap(symbol: str, state: str = "open", **kw) -> SequenceGap:  # type: ignore[no-untyped-def]
    common = {"detected_at": dt.datetime(2026, 3, 10, 1, 2, 3, tzinfo=dt.UTC), "exchange": "ASX",
              "asset_class": "equities", "data_type": "trades", "received_sequence": 9, "gap_size": 2,
              "missing_remaining": 2, "topic": "t", "partition": 0, "offset": 1}
    return SequenceGap.objects.create(symbol=symbol, state=state, **{**common, "expected_sequence": 7, **kw})


@pytest.mark.django_db
def test_gaps_cannot_be_added_edited_or_deleted_only_acknowledged_with_history(admin_client) -> None:
    gap = _gap("BHP")
    base = "/admin/ingestion/sequencegap/"
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}{gap.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"{base}{gap.pk}/change/", {"symbol": "XXX", "note": "edited"}).status_code == 403
    listing = admin_client.get(base)
    assert b"delete_selected" not in listing.content and b"acknowledge_selected" in listing.content
    gap.refresh_from_db()
    assert gap.symbol == "BHP" and SequenceGap.objects.count() == 1

    admin_client.post(base, {"action": "acknowledge_selected", "_selected_action": [gap.pk], "confirm": "1",
                             "note": "ASX halt 10:02-10:05"})
    gap.refresh_from_db()
    assert gap.state == "acknowledged"
    assert _history(gap) == ["Acknowledged (was open): ASX halt 10:02-10:05"]
    assert b"ASX halt 10:02-10:05" in admin_client.get(f"{base}{gap.pk}/history/").content


@pytest.mark.django_db
def test_gap_csv_export_keeps_the_filters_admin_and_api(admin_client) -> None:
    _gap("OPENSYM")
    _gap("ACKSYM", state="acknowledged", expected_sequence=8, note='halt, "planned"')
    listing = admin_client.get("/admin/ingestion/sequencegap/?state__exact=open")
    assert b'href="/admin/ingestion/sequencegap/export.csv?state__exact=open"' in listing.content
    response = admin_client.get("/admin/ingestion/sequencegap/export.csv?state__exact=open")
    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode().splitlines()
    assert lines[0].startswith("id,detected_at,symbol,exchange,") and len(lines) == 2
    assert ",2026-03-10T01:02:03+00:00,OPENSYM,ASX,equities,trades,7,9,2,2,t,0,1,open," in lines[1]

    everything = admin_client.post("/admin/ingestion/sequencegap/", {
        "action": "export_csv", "select_across": "1", "index": "0",
        "_selected_action": list(SequenceGap.objects.values_list("pk", flat=True))})
    text = everything.content.decode()
    assert text.count("\n") == 3 and '"halt, ""planned"""' in text

    api = admin_client.get("/api/v1/gaps?format=csv&state=acknowledged")
    assert api.status_code == 200 and api["Content-Type"].startswith("text/csv")
    rows = api.content.decode().splitlines()
    assert len(rows) == 2 and ",ACKSYM," in rows[1]
    assert admin_client.get("/api/v1/gaps?format=xml").status_code == 422


@pytest.mark.django_db
def test_api_key_revoke_is_in_history_and_api_log_lines_name_key_and_user(admin_client, admin_user, json_log) -> None:
    from django.test import Client

    from queries import services
    from queries.models import ApiKey
    from tests.conftest import log_records

    key, raw = services.api_key_create(name="quant", scopes=[ApiKey.Scope.MARKET_DATA_READ], owner=admin_user)
    assert Client().get("/api/v1/gaps", headers={"X-API-Key": raw}).status_code == 200
    admin_client.get("/api/v1/gaps")
    finished = [r for r in log_records(json_log) if r["event"] == "request_finished"]
    assert finished[0]["api_key"] == key.prefix and finished[0]["user"] == admin_user.username
    assert "api_key" not in finished[1] and finished[1]["user"] == admin_user.username

    admin_client.post("/admin/queries/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None and _history(key) == [f"Revoked API key {key.prefix}"]
