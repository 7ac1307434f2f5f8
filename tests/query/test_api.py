"""The JSON API: auth (PD-002), scopes, revocation, rate limit, formats and JSON errors."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model

from ingestion.models import SequenceGap
from queries import services
from queries.models import ApiKey, SavedQuery

pytestmark = pytest.mark.django_db
READ = ApiKey.Scope.MARKET_DATA_READ
RUN = ApiKey.Scope.QUERIES_RUN
OHLCV = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h"


@pytest.fixture
def key(query_settings):  # type: ignore[no-untyped-def]
    return services.api_key_create(name="test", scopes=[READ, RUN])[1]


def get(client, url, key=None, **extra):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": key} if key else {}
    return client.get(url, headers=headers, **extra)


def test_no_key_is_401_with_advice(client, query_settings, generated):
    r = get(client, OHLCV)
    assert r.status_code == 401
    assert "X-API-Key" in r.json()["message"]


def test_unknown_and_malformed_keys_are_401(client, query_settings, generated):
    assert get(client, OHLCV, "k2_abcdef123456_wrong").status_code == 401
    r = get(client, OHLCV, "garbage")
    assert r.status_code == 401 and "k2_<prefix>_<secret>" in r.json()["message"]


def test_wrong_scope_is_403(client, query_settings, generated):
    _, raw = services.api_key_create(name="runner", scopes=[RUN])
    r = get(client, OHLCV, raw)
    assert r.status_code == 403 and "market_data:read" in r.json()["message"]


def test_revoked_key_is_401(client, query_settings, generated):
    key, raw = services.api_key_create(name="x", scopes=[READ])
    assert get(client, OHLCV, raw).status_code == 200
    services.api_key_revoke(api_key=key)
    r = get(client, OHLCV, raw)
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_keys_are_stored_hashed(query_settings):
    key, raw = services.api_key_create(name="x", scopes=[READ])
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
    assert raw.startswith(f"k2_{stored.prefix}_")


def test_staff_session_works_in_the_browser(client, query_settings, generated):
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user("staff-" + uuid.uuid4().hex[:6], password="x" * 12, is_staff=True)
    user.groups.add(Group.objects.get(name="analysts"))
    client.force_login(user)
    assert get(client, OHLCV).status_code == 200


def test_rate_limit_is_429_per_key(client, query_settings, generated):
    _, raw = services.api_key_create(name="slow", scopes=[READ], rate_limit_per_minute=3)
    _, other = services.api_key_create(name="other", scopes=[READ], rate_limit_per_minute=3)
    while True:  # the window is the wall-clock minute: redo if the burst straddled a boundary
        minute = int(time.time() // 60)
        responses = [get(client, "/api/v1/tables", raw) for _ in range(4)]
        if int(time.time() // 60) == minute:
            break
        _, raw = services.api_key_create(name="slow", scopes=[READ], rate_limit_per_minute=3)
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    r = responses[-1]
    assert "rate limit of 3 requests per minute" in r.json()["message"] and 0 < int(r["Retry-After"]) <= 60
    assert get(client, "/api/v1/tables", other).status_code == 200  # limits are per key


def test_ohlcv_json_has_decimal_strings(client, key, generated):
    r = get(client, OHLCV, key)
    assert r.status_code == 200
    body = r.json()
    bar = body["data"][0]
    assert isinstance(bar["open"], str) and isinstance(bar["vwap"], str) and "." in bar["open"]
    assert bar["bar_start"].endswith("Z") and body["meta"]["table"] == "trades"
    assert body["meta"]["snapshot_id"] is not None


def test_csv_parquet_and_arrow_on_request(client, key, generated):
    r = get(client, OHLCV + "&format=csv", key)
    assert r["Content-Type"] == "text/csv" and r.content.decode().startswith('"symbol","bar_start"')
    parquet = pq.read_table(io.BytesIO(get(client, OHLCV + "&format=parquet", key).content))
    assert parquet.schema.field("open").type == pa.decimal128(18, 6)
    arrow = get(client, OHLCV, key, HTTP_ACCEPT="application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.num_rows == parquet.num_rows == len(get(client, OHLCV, key).json()["data"])


def test_trades_pagination_and_time_travel_through_the_api(client, key, generated, trades_table):
    first = trades_table.current_snapshot().snapshot_id
    url = "/api/v1/trades?symbol=BHP,CBA&date=2024-03-12&limit=400"
    page = get(client, url, key).json()
    rest = get(client, url + f"&cursor={page['meta']['next_cursor']}", key).json()
    assert len(page["data"]) + len(rest["data"]) == 600 and rest["meta"]["next_cursor"] is None
    snaps = get(client, "/api/v1/snapshots?table=trades", key).json()["data"]
    assert len(snaps) == 3 and snaps[-1]["snapshot_id"] == first and snaps[0]["summary"]["added-records"] == "1200"
    earliest = snaps[0]["snapshot_id"]  # only trading day 2024-03-11 was in the table then
    old = get(client, f"/api/v1/trades?symbol=BHP&date=2024-03-12&as_of={earliest}", key).json()
    assert old["meta"]["snapshot_id"] == earliest and len(old["data"]) == 0
    assert len(get(client, "/api/v1/trades?symbol=BHP&date=2024-03-12", key).json()["data"]) == 300


@pytest.mark.parametrize("url, status, words", [
    ("/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=2m", 422, "interval"),
    ("/api/v1/ohlcv?symbol=BHP", 400, "time range is required"),
    ("/api/v1/trades?symbol=BHP&start=2024-03-12T00:00:00&end=2024-03-13T00:00:00", 400, "no UTC offset"),
    ("/api/v1/trades?symbol=BHP&date=2024-03-12&as_of=yesterday", 400, "as_of"),
    ("/api/v1/trades?symbol=BHP&date=2024-03-12&as_of=12345", 404, "snapshot 12345"),
    ("/api/v1/trades?symbol=BHP&date=2024-03-12&limit=0", 422, "limit"),
    ("/api/v1/trades?symbol=BHP&date=9999-12-31", 400, "calendar"),
    ("/api/v1/snapshots?table=nope", 422, "table"),
    ("/api/v1/queries/nope", 404, "no saved query"),
])
def test_errors_are_json_with_an_actionable_message(client, key, generated, url, status, words):
    r = get(client, url, key)
    assert r.status_code == status, r.content
    assert words in r.json()["message"]


def test_tables_lists_current_snapshots(client, key, generated):
    data = {t["table"]: t for t in get(client, "/api/v1/tables", key).json()["data"]}
    assert data["trades"]["total_records"] == generated.num_rows and data["quotes"]["current_snapshot_id"] is None


def test_gaps_are_filtered(client, key):
    now = dt.datetime.now(dt.UTC)
    common = dict(exchange="ASX", asset_class="equities", topic="t", partition=0, offset=1, gap_size=2,
                  missing_remaining=2, received_sequence=12, detected_at=now)
    SequenceGap.objects.create(symbol="BHP", data_type="trades", expected_sequence=10, state="open", **common)
    SequenceGap.objects.create(symbol="CBA", data_type="trades", expected_sequence=10, state="filled", **common)
    body = get(client, "/api/v1/gaps?state=open&data_type=trades", key).json()
    assert [g["symbol"] for g in body["data"]] == ["BHP"]
    assert get(client, "/api/v1/gaps?detected_from=2024-01-01T00:00:00", key).status_code == 400


def test_saved_query_run_list_and_errors(client, key, generated):
    services.saved_query_create(slug="bars", name="Bars", sql="SELECT symbol, count(*) AS n FROM trades "
                                "WHERE symbol = $symbol GROUP BY symbol", parameters={"symbol": {"type": "string", "default": "BHP"}})
    SavedQuery.objects.create(slug="slow", name="slow", timeout_seconds=0.3,
                              sql="SELECT count(*) FROM range(100000000000) a, range(10) b WHERE a.range % 7 = b.range")
    SavedQuery.objects.create(slug="evil", name="evil", sql="SELECT * FROM read_csv('/etc/passwd')")
    assert [q["slug"] for q in get(client, "/api/v1/queries", key).json()["data"]] == ["bars", "evil", "slow"]
    assert "sql" in get(client, "/api/v1/queries/bars", key).json()["data"]
    post = lambda slug, body: client.post(f"/api/v1/queries/{slug}/run", json.dumps(body),  # noqa: E731
                                          content_type="application/json", headers={"X-API-Key": key})
    assert post("bars", {"params": {"symbol": "CBA"}}).json()["data"] == [{"symbol": "CBA", "n": 900}]
    r = post("evil", {})
    assert r.status_code == 400 and "sandbox" in r.json()["message"]
    r = post("slow", {})
    assert r.status_code == 504 and "timeout" in r.json()["message"]
    r = post("bars", {"params": {"nope": 1}})
    assert r.status_code == 400 and "unknown parameter" in r.json()["message"]


@pytest.mark.django_db
def test_a_timeout_that_passes_before_the_query_starts_still_stops_it(client, key, generated) -> None:
    """A run whose timeout passes while it is still being set up is stopped, not left unbounded. The
    race this guards (an interrupt landing before DuckDB starts the statement is lost) depends on
    thread timing: it hung `test_saved_query_run_list_and_errors` for 300 s once in CI; here it
    does not reproduce on demand."""
    SavedQuery.objects.create(slug="instant", name="instant", timeout_seconds=0.001,
                              sql="SELECT count(*) FROM range(100000000000) a, range(10) b WHERE a.range % 7 = b.range")
    r = client.post("/api/v1/queries/instant/run", "{}", content_type="application/json", headers={"X-API-Key": key})
    assert r.status_code == 504 and "timeout" in r.json()["message"]
