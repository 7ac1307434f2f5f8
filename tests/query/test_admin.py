"""Admin: saved queries validated at save time and runnable (table + OHLCV chart); API keys
issued with the raw key shown once and revoked by an action."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages

from queries import services
from queries.models import ApiKey, SavedQuery

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, query_settings):  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_superuser("admin-" + uuid.uuid4().hex[:6], "a@example.com", "x" * 12)
    client.force_login(user)
    return client


def _form(sql, parameters="{}", slug="q1"):  # type: ignore[no-untyped-def]
    return {"slug": slug, "name": "Q", "description": "", "sql": sql, "parameters": parameters,
            "row_limit": 100, "timeout_seconds": 5}


@pytest.mark.parametrize("sql, words", [
    ("SELECT * FROM read_csv('/etc/passwd')", "sandbox"),
    ("DELETE FROM trades", "DELETE statement is not allowed"),
    ("SELECT nope FROM trades", "does not run against the tables"),
    ("SELECT * FROM trades WHERE symbol = $s", "does not declare it"),
])
def test_saving_bad_sql_is_refused_in_the_admin(admin_client, sql, words):
    r = admin_client.post("/admin/queries/savedquery/add/", _form(sql))
    assert r.status_code == 200 and words in r.content.decode()
    assert not SavedQuery.objects.exists()


def test_saving_good_sql_and_running_it_shows_a_table_and_a_chart(admin_client, generated):
    sql = ("SELECT symbol, time_bucket(INTERVAL 1 HOUR, exchange_timestamp) AS bar_start, min(price) AS low, "
           "max(price) AS high, arg_min(price, exchange_timestamp) AS open, arg_max(price, exchange_timestamp) AS close "
           "FROM trades WHERE symbol = $symbol GROUP BY ALL ORDER BY bar_start")
    r = admin_client.post("/admin/queries/savedquery/add/",
                          _form(sql, json.dumps({"symbol": {"type": "string", "default": "BHP"}})))
    assert r.status_code == 302, r.content.decode()[:2000]
    saved = SavedQuery.objects.get(slug="q1")
    response = admin_client.get(f"/admin/queries/savedquery/{saved.pk}/run/?symbol=CBA")
    page = response.content.decode()
    assert 'id="k2-candles"' in page and "<th>bar_start</th>" in page and "BHP" not in page.split("<table>")[1]
    assert "vendor/echarts/echarts.min.js" in page  # ECharts from this server's static files
    assert "<code>symbol=CBA</code>" in page.split('id="k2-ran-with"')[1]  # the run echoes what it ran with
    chart = response.context["chart"]
    assert chart["symbol"] == "CBA" and chart["zone"] == "Australia/Sydney"
    first = response.context["rows"][0]
    assert chart["bars"][0][1:5] == [first[4], first[5], first[2], first[3]]  # open, close, low, high
    # bar_start 2024-03-10T23:00Z is 10:00 in Sydney (AEDT): the axis reads exchange time
    assert dt.datetime.fromtimestamp(chart["bars"][0][0] / 1000, dt.UTC).strftime("%H:%M") == "10:00"
    default_run = admin_client.get(f"/admin/queries/savedquery/{saved.pk}/run/").content.decode()
    assert "<code>symbol=BHP</code> (default)" in default_run and default_run.count("CBA") == 0


def test_issuing_a_key_shows_it_once_and_stores_a_hash(admin_client):
    r = admin_client.post("/admin/queries/apikey/add/", {"name": "quant", "scope_choices": ["market_data:read"],
                                                         "rate_limit_per_minute": 60}, follow=True)
    shown = [str(m) for m in get_messages(r.wsgi_request)] or [r.content.decode()]
    key = ApiKey.objects.get(name="quant")
    raw = next(part for text in shown for part in text.replace("<", " ").replace(">", " ").split()
               if part.startswith(f"k2_{key.prefix}_"))
    assert services.api_key_authenticate(raw_key=raw).pk == key.pk
    assert key.scopes == ["market_data:read"] and raw not in key.key_hash
    again = admin_client.get(f"/admin/queries/apikey/{key.pk}/change/").content.decode()
    assert raw not in again


def test_revoke_action(admin_client):
    key, raw = services.api_key_create(name="old", scopes=["market_data:read"])
    admin_client.post("/admin/queries/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None
    with pytest.raises(services.KeyRejected, match="revoked"):
        services.api_key_authenticate(raw_key=raw)


def test_issue_api_key_command_prints_a_working_key(query_settings):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("issue_api_key", "--name", "make-run", "--scope", "market_data:read", stdout=out)
    raw = out.getvalue().strip()
    key = services.api_key_authenticate(raw_key=raw)
    assert key.name == "make-run" and key.scopes == ["market_data:read"]


def test_the_admin_saves_through_the_service_and_enforces_its_timeout_rule(admin_client):
    refused = admin_client.post("/admin/queries/savedquery/add/", {**_form("SELECT 1 AS one"), "timeout_seconds": 601})
    assert refused.status_code == 200 and "timeout_seconds must be above 0 and at most 600" in refused.content.decode()
    assert not SavedQuery.objects.exists()
    created = admin_client.post("/admin/queries/savedquery/add/", {**_form("SELECT 1 AS one"), "timeout_seconds": 600})
    assert created.status_code == 302
    saved = SavedQuery.objects.get(slug="q1")
    assert saved.timeout_seconds == 600
    changed = admin_client.post(f"/admin/queries/savedquery/{saved.pk}/change/",
                                {**_form("SELECT 2 AS two"), "timeout_seconds": 0})
    assert changed.status_code == 200 and "timeout_seconds must be above 0" in changed.content.decode()
    saved.refresh_from_db()
    assert saved.sql == "SELECT 1 AS one" and saved.timeout_seconds == 600
    admin_client.post(f"/admin/queries/savedquery/{saved.pk}/change/", {**_form("SELECT 2 AS two"), "timeout_seconds": 9})
    saved.refresh_from_db()
    assert saved.sql == "SELECT 2 AS two" and saved.timeout_seconds == 9


@pytest.mark.parametrize(("changes", "field"), [({"timeout_seconds": 601}, "timeout_seconds"),
                                                ({"timeout_seconds": 0}, "timeout_seconds"),
                                                ({"row_limit": 0}, "row_limit"),
                                                ({"sql": "DELETE FROM trades"}, None)])
def test_saved_query_update_applies_the_create_rules_and_writes_nothing_when_refused(query_settings, changes, field):
    from queries.engine.errors import BadQuery

    saved = services.saved_query_create(slug="upd", name="upd", sql="SELECT 1 AS one", timeout_seconds=30)
    with pytest.raises(BadQuery) as caught:
        services.saved_query_update(saved_query=saved, **changes)
    if field:
        assert caught.value.field == field
    stored = SavedQuery.objects.get(pk=saved.pk)
    assert (stored.sql, stored.timeout_seconds, stored.row_limit) == ("SELECT 1 AS one", 30, 10_000)
