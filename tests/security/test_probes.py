"""Issue 12: every probe of the hostile/careless-user review, against the real services
(Postgres, Redis, Iceberg, DuckDB, the Django stack). Each test asserts status and body."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from catalog.engine.schemas import schema_text
from catalog.models import SchemaSubject, SubjectVersion
from ingestion.models import Consumer, SequenceGap
from queries import services
from queries.models import ApiKey, SavedQuery

pytestmark = pytest.mark.django_db
REG = "/schema-registry"
CT = "application/vnd.schemaregistry.v1+json"
OHLCV = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h"


def _user(*, perms: tuple[str, ...] = (), groups: tuple[str, ...] = (), active: bool = True):  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_user("u-" + uuid.uuid4().hex[:8], password="x" * 12, is_staff=True,
                                                is_active=active)
    for dotted in perms:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def _session(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _register(client: Client, subject: str, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(f"{REG}/subjects/{subject}/versions", data=json.dumps({"schema": schema_text("trades")}),
                       content_type=CT, headers=headers)


@pytest.fixture
def subject() -> str:
    return f"market.t{uuid.uuid4().hex[:8]}.trades.asx-value"


@pytest.fixture
def writer_key() -> str:
    return services.api_key_create(name="writer", scopes=[ApiKey.Scope.SCHEMAS_WRITE])[1]


# --- 1. the schema registry -----------------------------------------------------------------


def test_anonymous_registry_writes_are_401_and_change_nothing(client: Client, subject: str) -> None:
    response = _register(client, subject)
    assert response.status_code == 401 and response["Content-Type"] == CT
    assert response.json()["error_code"] == 401 and "schemas:write" in response.json()["message"]
    assert not SchemaSubject.objects.filter(name=subject).exists()
    put = client.put(f"{REG}/config/{subject}", data=json.dumps({"compatibility": "NONE"}), content_type=CT)
    assert put.status_code == 401 and put.json()["error_code"] == 401
    assert not SchemaSubject.objects.filter(name=subject).exists()
    delete = client.delete(f"{REG}/subjects/{subject}")
    assert delete.status_code == 401 and delete.json()["error_code"] == 401


def test_registry_reads_stay_open(client: Client, subject: str, writer_key: str) -> None:
    assert _register(client, subject, **{"X-API-Key": writer_key}).status_code == 200
    assert Client().get(f"{REG}/subjects/{subject}/versions").json() == [1]


def test_registry_key_without_the_scope_is_403_and_bad_key_401(client: Client, subject: str) -> None:
    reader = services.api_key_create(name="reader", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    response = _register(client, subject, **{"X-API-Key": reader})
    assert response.status_code == 403 and response.json() == {
        "error_code": 403, "message": "Forbidden: this API key lacks the 'schemas:write' scope needed to register, "
                                      "reconfigure or delete schemas"}
    bad = _register(client, subject, **{"X-API-Key": "k2_nope_nope"})
    assert bad.status_code == 401 and "not known" in bad.json()["message"]
    assert not SchemaSubject.objects.filter(name=subject).exists()


def test_registry_accepts_the_key_as_basic_auth_password(client: Client, subject: str, writer_key: str) -> None:
    token = base64.b64encode(f"k2:{writer_key}".encode()).decode()
    response = _register(client, subject, Authorization=f"Basic {token}")
    assert response.status_code == 200 and set(response.json()) == {"id"}


def test_registry_session_needs_the_write_permission(subject: str) -> None:
    plain = _session(_user())
    assert _register(plain, subject).status_code == 403
    assert _register(plain, subject).json()["message"] == "Forbidden: your user lacks the catalog.write_schemas permission"
    allowed = _session(_user(perms=("catalog.write_schemas",)))
    assert _register(allowed, subject).status_code == 200


def test_registry_session_write_needs_csrf(subject: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(_user(perms=("catalog.write_schemas",)))
    response = _register(client, subject)
    assert response.status_code == 403 and "CSRF" in response.json()["message"]


def test_registry_delete_soft_then_permanent_as_confluent(client: Client, subject: str, writer_key: str) -> None:
    auth = {"X-API-Key": writer_key}
    assert _register(client, subject, **auth).status_code == 200
    early = client.delete(f"{REG}/subjects/{subject}?permanent=true", headers=auth)
    assert early.status_code == 404 and early.json()["error_code"] == 40405
    soft = client.delete(f"{REG}/subjects/{subject}", headers=auth)
    assert soft.status_code == 200 and soft.json() == [1]
    assert client.get(f"{REG}/subjects/{subject}/versions").json()["error_code"] == 40401
    assert subject not in client.get(f"{REG}/subjects").json()
    again = client.delete(f"{REG}/subjects/{subject}", headers=auth)
    assert again.status_code == 404 and again.json()["error_code"] == 40404
    hard = client.delete(f"{REG}/subjects/{subject}?permanent=true", headers=auth)
    assert hard.status_code == 200 and hard.json() == [1]
    assert not SchemaSubject.objects.filter(name=subject).exists()


def test_registry_delete_version_and_register_again(client: Client, subject: str, writer_key: str) -> None:
    auth = {"X-API-Key": writer_key}
    schema_id = _register(client, subject, **auth).json()["id"]
    assert client.delete(f"{REG}/subjects/{subject}/versions/1", headers=auth).json() == 1
    assert client.delete(f"{REG}/subjects/{subject}/versions/1", headers=auth).json()["error_code"] == 40406
    assert SubjectVersion.objects.get(subject__name=subject, version=1).deleted
    assert _register(client, subject, **auth).json() == {"id": schema_id}
    assert client.get(f"{REG}/subjects/{subject}/versions").json() == [1]
    anon = client.delete(f"{REG}/subjects/{subject}/versions/1")
    assert anon.status_code == 401


def test_registry_unknown_route_and_wrong_method_are_json(client: Client) -> None:
    missing = client.get(f"{REG}/no/such/route")
    assert missing.status_code == 404 and missing["Content-Type"] == CT
    assert missing.json() == {"error_code": 404, "message": "HTTP 404 Not Found"}
    wrong = client.patch(f"{REG}/subjects")
    assert wrong.status_code == 405 and wrong.json() == {"error_code": 405, "message": "HTTP 405 Method Not Allowed"}
    assert wrong["Allow"] == "GET"


def test_registry_hostile_bodies_and_subjects_are_4xx(client: Client, writer_key: str) -> None:
    auth = {"X-API-Key": writer_key}
    deep = "[" * 100_000 + "]" * 100_000
    body = client.post(f"{REG}/subjects/x-value/versions", data=deep, content_type=CT, headers=auth)
    assert body.status_code == 400 and "nested too deeply" in body.json()["message"]
    nested_schema = client.post(f"{REG}/subjects/x-value/versions", data=json.dumps({"schema": deep}),
                                content_type=CT, headers=auth)
    assert nested_schema.status_code == 422 and nested_schema.json()["error_code"] == 42201
    long_subject = "s" * 256
    too_long = _register(client, long_subject, **auth)
    assert too_long.status_code == 422 and too_long.json()["error_code"] == 42208
    assert client.get(f"{REG}/subjects/{long_subject}/versions").status_code == 422
    nul = client.put(f"{REG}/config/a%00b", data=json.dumps({"compatibility": "NONE"}), content_type=CT, headers=auth)
    assert nul.status_code == 422 and nul.json()["error_code"] == 42208
    huge_id = client.get(f"{REG}/schemas/ids/99999999999999999999999")
    assert huge_id.status_code == 404 and huge_id.json()["error_code"] == 40403


# --- 2. permissions ---------------------------------------------------------------------------


def _consumer(status: str) -> Consumer:
    return Consumer.objects.create(name="c-" + uuid.uuid4().hex[:8], data_type="trades", group_id="g", status=status)


def _gap() -> SequenceGap:
    return SequenceGap.objects.create(
        detected_at=timezone.now(), symbol="S" + uuid.uuid4().hex[:6], exchange="asx", asset_class="equities",
        data_type="trades", expected_sequence=5, received_sequence=7, gap_size=2, missing_remaining=2,
        topic="market.equities.trades.asx", partition=0, offset=1)


def test_view_only_staff_cannot_start_or_stop_consumers() -> None:
    client = _session(_user(perms=("ingestion.view_consumer",)))
    stopped, running = _consumer("stopped"), _consumer("running")
    page = client.get("/admin/ingestion/consumer/")
    assert page.status_code == 200 and b"start_selected" not in page.content
    for action, row in (("start_selected", stopped), ("stop_selected", running)):
        response = client.post("/admin/ingestion/consumer/", {"action": action, "_selected_action": [row.pk]},
                               follow=True)
        assert response.status_code == 200 and b'class="success"' not in response.content
    stopped.refresh_from_db()
    running.refresh_from_db()
    assert (stopped.status, running.status) == ("stopped", "running")


def test_operators_can_stop_consumers() -> None:
    client = _session(_user(groups=("operators",)))
    running = _consumer("running")
    response = client.post("/admin/ingestion/consumer/", {"action": "stop_selected", "_selected_action": [running.pk]},
                           follow=True)
    assert response.status_code == 200 and f"{running.name}: stopping".encode() in response.content.lower()
    running.refresh_from_db()
    assert running.status == "stopping"


def test_acknowledging_gaps_needs_the_permission() -> None:
    gap = _gap()
    viewer = _session(_user(perms=("ingestion.view_sequencegap",)))
    form = {"action": "acknowledge_selected", "_selected_action": [gap.pk], "confirm": "1", "note": "halt"}
    refused = viewer.post("/admin/ingestion/sequencegap/", form, follow=True)
    assert refused.status_code == 200 and b"acknowledged." not in refused.content
    gap.refresh_from_db()
    assert gap.state == SequenceGap.State.OPEN
    operator = _session(_user(groups=("operators",)))
    done = operator.post("/admin/ingestion/sequencegap/", form, follow=True)
    assert b"1 gap(s) acknowledged." in done.content
    gap.refresh_from_db()
    assert gap.state == SequenceGap.State.ACKNOWLEDGED


def test_revoking_keys_needs_the_permission() -> None:
    key, _ = services.api_key_create(name="victim", scopes=[ApiKey.Scope.MARKET_DATA_READ])
    viewer = _session(_user(perms=("queries.view_apikey",)))
    viewer.post("/admin/queries/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True)
    key.refresh_from_db()
    assert key.revoked_at is None
    revoker = _session(_user(perms=("queries.view_apikey", "queries.revoke_apikey")))
    revoker.post("/admin/queries/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True)
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_admin_run_view_needs_run_permission(query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    saved = services.saved_query_create(slug="n-" + uuid.uuid4().hex[:6], name="n", sql="SELECT count(*) AS n FROM trades")
    url = f"/admin/queries/savedquery/{saved.pk}/run/"
    assert _session(_user()).get(url).status_code == 403
    assert _session(_user(perms=("queries.view_savedquery",))).get(url).status_code == 403
    allowed = _session(_user(groups=("analysts",))).get(url)
    assert allowed.status_code == 200 and b"3600" in allowed.content


def test_session_api_calls_need_the_scope_permission(query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    SavedQuery.objects.create(slug="cnt", name="cnt", sql="SELECT count(*) AS n FROM trades")
    bare = _session(_user())
    market = bare.get(OHLCV)
    assert market.status_code == 403 and market.json()["error"] == "forbidden"
    assert "queries.read_market_data" in market.json()["message"]
    run = bare.post("/api/v1/queries/cnt/run", data="{}", content_type="application/json")
    assert run.status_code == 403 and "queries.run_savedquery" in run.json()["message"]
    analyst = _session(_user(groups=("analysts",)))
    assert analyst.get(OHLCV).status_code == 200
    ran = analyst.post("/api/v1/queries/cnt/run", data="{}", content_type="application/json")
    assert ran.status_code == 200 and ran.json()["data"] == [{"n": 3600}]
    operator = _session(_user(groups=("operators",)))
    assert operator.get(OHLCV).status_code == 403


def test_groups_hold_the_documented_permissions() -> None:
    operators = set(Group.objects.get(name="operators").permissions.values_list("codename", flat=True))
    analysts = set(Group.objects.get(name="analysts").permissions.values_list("codename", flat=True))
    assert {"operate_consumer", "acknowledge_gap", "view_consumer", "view_sequencegap", "view_apikey"} <= operators
    assert not {"run_savedquery", "revoke_apikey", "write_schemas"} & operators
    assert {"run_savedquery", "read_market_data", "view_savedquery"} <= analysts
    assert not {"operate_consumer", "acknowledge_gap", "revoke_apikey", "view_apikey"} & analysts


# --- 3. keys of deactivated users -------------------------------------------------------------


def test_key_of_a_deactivated_owner_is_401_and_shown_so(client: Client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    owner = _user()
    key, raw = services.api_key_create(name="leaver", scopes=[ApiKey.Scope.MARKET_DATA_READ], owner=owner)
    assert client.get(OHLCV, headers={"X-API-Key": raw}).status_code == 200
    owner.is_active = False
    owner.save()
    refused = client.get(OHLCV, headers={"X-API-Key": raw})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert "owner is deactivated" in refused.json()["message"]
    admin = _session(get_user_model().objects.create_superuser("a-" + uuid.uuid4().hex[:6], "a@x.io", "x" * 12))
    assert b"refused: owner deactivated" in admin.get("/admin/queries/apikey/").content


def test_admin_key_hash_filter_is_not_an_oracle() -> None:
    key, _ = services.api_key_create(name="secret", scopes=[ApiKey.Scope.MARKET_DATA_READ])
    admin = _session(get_user_model().objects.create_superuser("a-" + uuid.uuid4().hex[:6], "a@x.io", "x" * 12))
    probe = admin.get(f"/admin/queries/apikey/?key_hash__startswith={key.key_hash[:4]}")
    assert probe.status_code in (302, 400)  # Django refuses a disallowed lookup (?e=1 redirect)
    assert key.name.encode() not in probe.content


# --- 4. saved-query bounds ---------------------------------------------------------------------


@pytest.fixture
def run_key(query_settings, generated) -> str:  # type: ignore[no-untyped-def]
    return services.api_key_create(name="runner", scopes=[ApiKey.Scope.QUERIES_RUN, ApiKey.Scope.MARKET_DATA_READ],
                                   rate_limit_per_minute=100_000)[1]


def _saved(sql: str, **kw) -> SavedQuery:  # type: ignore[no-untyped-def]
    return services.saved_query_create(slug="q-" + uuid.uuid4().hex[:8], name="q", sql=sql, **kw)


def _run(client: Client, saved: SavedQuery, key: str, body: object = None, fmt: str | None = None):  # type: ignore[no-untyped-def]
    url = f"/api/v1/queries/{saved.slug}/run" + (f"?format={fmt}" if fmt else "")
    return client.post(url, data=json.dumps(body if body is not None else {}), content_type="application/json",
                       headers={"X-API-Key": key})


def _k2(settings, **changes):  # type: ignore[no-untyped-def]
    import dataclasses

    settings.K2 = dataclasses.replace(settings.K2, **changes)


def test_default_bounds_are_configured() -> None:
    from k2portal.config import load

    cfg = load({})
    assert (cfg.query_memory_limit, cfg.query_max_result_bytes, cfg.query_max_concurrent_runs) == ("1GB", 268_435_456, 2)


def test_memory_hungry_query_is_stopped_at_the_memory_limit(client: Client, settings, run_key: str) -> None:  # type: ignore[no-untyped-def]
    _k2(settings, query_memory_limit="64MB")
    saved = _saved("SELECT a.range AS x FROM range(50000000) a ORDER BY x DESC", timeout_seconds=60)
    response = _run(client, saved, run_key)
    assert response.status_code == 422, response.content[:300]
    assert response.json()["error"] == "resource_limit" and "64MB memory limit" in response.json()["message"]


def test_huge_value_is_refused_by_the_result_size_cap(client: Client, settings, run_key: str) -> None:  # type: ignore[no-untyped-def]
    _k2(settings, query_max_result_bytes=10_000_000)
    saved = _saved("SELECT repeat('x', 50000000) AS s")
    response = _run(client, saved, run_key)
    assert response.status_code == 422 and response.json()["error"] == "resource_limit"
    assert "larger than the 10,000,000 bytes" in response.json()["message"]


def test_many_rows_are_refused_by_the_result_size_cap(client: Client, settings, run_key: str) -> None:  # type: ignore[no-untyped-def]
    _k2(settings, query_max_result_bytes=1_000_000)
    saved = _saved("SELECT range AS n, repeat('y', 100) AS pad FROM range(100000)", row_limit=100_000)
    response = _run(client, saved, run_key)
    assert response.status_code == 422 and "1,000,000 bytes" in response.json()["message"]


def test_timeout_covers_the_encoding(settings, run_key: str) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    from queries.engine.errors import QueryTimeout

    saved = _saved("SELECT 1 AS one", timeout_seconds=3.0)
    finished = threading.Event()

    def slow_encode(result):  # type: ignore[no-untyped-def]
        time.sleep(8)  # an encoding that outlives the query's 3 s timeout
        finished.set()
        return b"late"

    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="encoding"):
        services.saved_query_answer(saved_query=saved, encode=slow_encode, runner="key:enc-" + uuid.uuid4().hex[:6])
    assert time.monotonic() - started < 6.0 and not finished.is_set()


def test_concurrent_runs_per_key_are_limited(client: Client, settings, run_key: str) -> None:  # type: ignore[no-untyped-def]
    import threading

    _k2(settings, query_max_concurrent_runs=1)
    saved = _saved("SELECT count(*) AS n FROM trades", timeout_seconds=30)
    prefix = run_key.split("_")[1]
    release, holding = threading.Event(), threading.Event()

    def held_encode(result):  # type: ignore[no-untyped-def]
        holding.set()
        release.wait(20)
        return b"{}"

    worker = threading.Thread(target=lambda: services.saved_query_answer(saved_query=saved, encode=held_encode,
                                                                         runner=f"key:{prefix}"))
    worker.start()
    try:
        assert holding.wait(20)
        refused = _run(client, saved, run_key)
        assert refused.status_code == 429 and refused.json()["error"] == "too_many_runs"
        assert "1 saved-query run(s) of yours are already in flight" in refused.json()["message"]
    finally:
        release.set()
        worker.join(20)
    assert _run(client, saved, run_key).status_code == 200


# --- 5. no 500s ------------------------------------------------------------------------------


@pytest.mark.parametrize("url, field", [
    ("/api/v1/gaps?detected_from=0001-01-01T00:00:00%2B14:00", "detected_from"),
    ("/api/v1/gaps?detected_to=9999-12-31T23:59:59-14:00", "detected_to"),
])
def test_out_of_calendar_instants_are_400(client: Client, run_key: str, url: str, field: str) -> None:
    response = client.get(url, headers={"X-API-Key": run_key})
    assert response.status_code == 400 and response.json()["field"] == field


def test_cursor_with_an_out_of_calendar_instant_is_400(client: Client, run_key: str) -> None:
    raw = json.dumps({"t": "0001-01-01T00:00:00+14:00", "s": "BHP", "p": 0, "o": 1, "d": "asc"})
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    response = client.get(f"/api/v1/trades?symbol=BHP&date=2024-03-12&cursor={cursor}", headers={"X-API-Key": run_key})
    assert response.status_code == 400 and response.json()["field"] == "cursor"


ODD_COLUMNS = ("SELECT [1, 2] AS l, {'a': 1} AS st, MAP([1], ['x']) AS m, '\\xAA'::BLOB AS b, INTERVAL 1 DAY AS i, "
               "union_value(k := 1)::UNION(k INT, s VARCHAR) AS u, 'infinity'::TIMESTAMP AS ts, "
               "'-infinity'::TIMESTAMPTZ AS tz, 'infinity'::DATE AS d, 'nan'::DOUBLE AS f, 'inf'::DOUBLE AS g")


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "arrow"])
def test_odd_column_types_encode_in_every_format(client: Client, run_key: str, fmt: str) -> None:
    response = _run(client, _saved(ODD_COLUMNS), run_key, fmt=fmt)
    assert response.status_code == 200, response.content[:300]
    if fmt == "json":
        assert b"NaN," not in response.content and b":NaN" not in response.content and b":Infinity" not in response.content
        row = response.json()["data"][0]
        assert (row["ts"], row["tz"], row["d"], row["f"], row["g"]) == ("infinity", "-infinity", "infinity", "NaN",
                                                                         "Infinity")
        assert row["l"] == [1, 2] and row["st"] == {"a": 1} and row["b"] == "aa"
    if fmt == "csv":
        header, line = response.content.decode().splitlines()[:2]
        assert header.startswith('"l","st","m","b","i","u","ts","tz","d"') and "infinity" in line


def test_admin_run_view_renders_odd_ohlc_rows(query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    saved = _saved("SELECT * FROM (VALUES (TIMESTAMPTZ '2024-03-12 00:00:00+00', 1.0, 2.0, 0.5, 1.5), "
                   "(TIMESTAMPTZ '2024-03-12 00:01:00+00', NULL, 2.0, 0.5, 1.5), "
                   "(TIMESTAMPTZ '2024-03-12 00:02:00+00', 'nan'::DOUBLE, 2.0, 0.5, 1.5)) "
                   "AS t(bar_start, open, high, low, close)")
    text_saved = _saved("SELECT 'x' AS bar_start, 'a' AS open, 'b' AS high, 'c' AS low, 'd' AS close")
    infinite = _saved("SELECT 'infinity'::TIMESTAMP AS bar_start, 1 AS open, 2 AS high, 0 AS low, 1 AS close")
    admin = _session(get_user_model().objects.create_superuser("a-" + uuid.uuid4().hex[:6], "a@x.io", "x" * 12))
    for query in (saved, text_saved, infinite):
        page = admin.get(f"/admin/queries/savedquery/{query.pk}/run/")
        assert page.status_code == 200
    chart = b"background:#fff;border:1px solid #ccc"
    assert chart in admin.get(f"/admin/queries/savedquery/{saved.pk}/run/").content
    assert chart not in admin.get(f"/admin/queries/savedquery/{text_saved.pk}/run/").content


# --- 6. silent wrong answers -----------------------------------------------------------------


def test_unknown_as_of_is_404_not_an_empty_200(client: Client, run_key: str) -> None:
    saved = _saved("SELECT count(*) AS n FROM trades")
    unknown = _run(client, saved, run_key, {"as_of": "123456789"})
    assert unknown.status_code == 404 and unknown.json()["field"] == "as_of"
    assert "snapshot 123456789 is not in the table's history" in unknown.json()["message"]
    before = _run(client, saved, run_key, {"as_of": "2000-01-01T00:00:00Z"})
    assert before.status_code == 404 and before.json()["field"] == "as_of"


def test_parameters_outside_params_are_422(client: Client, run_key: str) -> None:
    saved = _saved("SELECT count(*) AS n FROM trades WHERE symbol = $symbol",
                   parameters={"symbol": {"type": "string", "default": "BHP"}})
    response = _run(client, saved, run_key, {"symbol": "CBA"})
    assert response.status_code == 422 and response.json()["field"] == "symbol"
    assert 'parameter values go under "params"' in response.json()["message"]
    assert _run(client, saved, run_key, {"params": {"symbol": "CBA"}}).json()["data"] == [{"n": 900}]


# --- 7. error shape ------------------------------------------------------------------------------


def test_api_errors_outside_the_handlers_have_the_documented_shape(client: Client, run_key: str) -> None:
    auth = {"X-API-Key": run_key}
    saved = _saved("SELECT 1 AS one")
    missing = client.get("/api/v1/no-such-endpoint", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.delete("/api/v1/trades", headers=auth)
    assert wrong.status_code == 405 and wrong.json() == {"error": "method_not_allowed",
                                                         "message": "this endpoint does not take DELETE: use GET"}
    garbled = client.post(f"/api/v1/queries/{saved.slug}/run", data="{nope", content_type="application/json",
                          headers=auth)
    assert garbled.status_code == 400 and garbled.json()["field"] == "body"
    big = client.post(f"/api/v1/queries/{saved.slug}/run", data=json.dumps({"params": {"x": "y" * 3_000_000}}),
                      content_type="application/json", headers=auth)
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"


# --- 8. save-time checks = run-time checks ---------------------------------------------------


@pytest.mark.parametrize("sql", ["SELECT count(*) AS n FROM trades;", "SELECT count(*) AS n FROM trades -- all of them",
                                 "SELECT count(*) AS n FROM trades /* all */"])
def test_trailing_semicolon_and_comments_save_and_run(client: Client, run_key: str, sql: str) -> None:
    response = _run(client, _saved(sql), run_key)
    assert response.status_code == 200 and response.json()["data"] == [{"n": 3600}]


@pytest.mark.parametrize("kw, field", [({"row_limit": 0}, "row_limit"), ({"row_limit": 100_001}, "row_limit"),
                                       ({"timeout_seconds": 0}, "timeout_seconds"),
                                       ({"timeout_seconds": 601}, "timeout_seconds")])
def test_service_enforces_row_limit_and_timeout_bounds(query_settings, kw: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    from queries.engine.errors import BadQuery

    with pytest.raises(BadQuery) as caught:
        _saved("SELECT 1 AS one", **kw)
    assert caught.value.field == field


# --- 9. leaks --------------------------------------------------------------------------------


@pytest.mark.parametrize("sql, words", [
    ("SELECT current_setting('allowed_directories') AS d", "current_setting()"),
    ("SELECT * FROM duckdb_settings()", "duckdb_settings()"),
    ("SELECT sql FROM duckdb_views()", "duckdb_views()"),
    ("SELECT view_definition FROM information_schema.views", "information_schema.views"),
    ("SELECT * FROM glob('/tmp/*')", "glob()"),
    ("SELECT * FROM read_text('.tmp/*')", "read_text()"),
    ("SELECT * FROM 'metadata.json'", "metadata.json"),
])
def test_configuration_and_paths_are_not_reachable(query_settings, sql: str, words: str) -> None:  # type: ignore[no-untyped-def]
    from queries.engine.errors import SandboxViolation

    with pytest.raises(SandboxViolation) as caught:
        _saved(sql)
    assert words in caught.value.message and "refused by the sandbox" in caught.value.message


def test_raw_warehouse_files_are_not_readable(client: Client, run_key: str, trades_table) -> None:  # type: ignore[no-untyped-def]
    location = trades_table.metadata_location.replace("file://", "")
    saved = SavedQuery.objects.create(slug="raw-" + uuid.uuid4().hex[:6], name="raw",
                                      sql=f"SELECT * FROM read_json_auto('{location}')")
    response = _run(client, saved, run_key)
    assert response.status_code == 400 and response.json()["error"] == "sandbox_violation"
    assert location not in response.json()["message"]


def test_error_messages_hide_the_warehouse_path(client: Client, run_key: str, trades_table) -> None:  # type: ignore[no-untyped-def]
    import os
    from urllib.parse import urlparse

    data_file = next(iter(trades_table.inspect.files().column("file_path").to_pylist()))
    os.remove(urlparse(data_file).path)  # a real fault: a data file gone from the warehouse
    saved = _saved("SELECT sum(volume) AS v FROM trades")
    response = _run(client, saved, run_key)
    assert response.status_code == 400, response.content[:300]
    warehouse = str(urlparse(trades_table.metadata_location).path).split("/t_")[0]
    assert warehouse not in response.json()["message"] and "<warehouse>/" in response.json()["message"]
