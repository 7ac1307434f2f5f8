"""The API's hot path (issue 15 item 3): key rows and the exchange registry kept in the process,
one Redis round trip per request, the fast JSON encoding; and that none of it lets a revoked key
or a deactivated owner through, nor changes a response."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import pyarrow as pa
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from queries import caches, services
from queries.engine import formats
from queries.models import ApiKey

pytestmark = pytest.mark.django_db
READ = ApiKey.Scope.MARKET_DATA_READ
OHLCV = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h"


def get(client, key):  # type: ignore[no-untyped-def]
    return client.get(OHLCV, headers={"X-API-Key": key})


def test_a_cached_key_and_exchange_registry_cost_no_postgres_query(client, query_settings, generated,  # type: ignore[no-untyped-def]
                                                                    django_assert_num_queries):
    _, raw = services.api_key_create(name="hot", scopes=[READ])
    assert get(client, raw).status_code == 200  # reads the key row, the exchanges, notes last use
    with django_assert_num_queries(0):
        assert get(client, raw).status_code == 200


def test_a_key_revoked_by_another_process_is_refused_at_the_next_request(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    """Another process's revocation reaches this one through the generation number in Redis, which
    the rate-limit round trip reads: no waiting for the cached row to expire."""
    key, raw = services.api_key_create(name="elsewhere", scopes=[READ])
    assert get(client, raw).status_code == 200
    assert caches.rows[key.prefix][0].revoked_at is None  # the row is cached here
    # What the other process does: write the row (no signal reaches this process) and, once
    # committed, increment the generation (caches.keys_changed's on_commit hook).
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    caches.redis_client(settings.K2.redis_url).incr(caches.KEY_GENERATION)
    refused = get(client, raw)
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]


def test_a_revocation_in_this_process_drops_the_cached_row_at_once(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    key, raw = services.api_key_create(name="here", scopes=[READ])
    assert get(client, raw).status_code == 200
    services.api_key_revoke(api_key=ApiKey.objects.get(pk=key.pk))
    assert key.prefix not in caches.rows
    assert get(client, raw).status_code == 401


def test_a_change_nothing_announced_takes_effect_once_the_row_is_older_than_the_bound(client, query_settings,  # type: ignore[no-untyped-def]
                                                                                       generated) -> None:
    """A queryset update (no signal, no generation change) is seen when the cached row expires:
    never later than KEY_CACHE_SECONDS."""
    owner = get_user_model().objects.create_user("leaver-hot", password="x" * 12)
    key, raw = services.api_key_create(name="quiet", scopes=[READ], owner=owner)
    assert get(client, raw).status_code == 200
    get_user_model().objects.filter(pk=owner.pk).update(is_active=False)
    assert get(client, raw).status_code == 200  # still within the bound: the cached row answers
    row, _, generation = caches.rows[key.prefix]
    caches.rows[key.prefix] = (row, time.monotonic() - caches.KEY_CACHE_SECONDS - 0.01, generation)
    refused = get(client, raw)
    assert refused.status_code == 401 and "owner is deactivated" in refused.json()["message"]


def test_a_cached_key_still_needs_the_right_secret_and_scope(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    key, raw = services.api_key_create(name="scoped", scopes=[ApiKey.Scope.QUERIES_RUN])
    assert client.get("/api/v1/queries", headers={"X-API-Key": raw}).status_code == 200  # cached now
    assert key.prefix in caches.rows
    assert get(client, raw).status_code == 403
    assert get(client, f"k2_{key.prefix}_{'x' * 32}").status_code == 401


def test_the_rate_limit_still_counts_every_request_of_a_cached_key(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    _, raw = services.api_key_create(name="limited", scopes=[READ], rate_limit_per_minute=2)
    while True:  # the window is the wall-clock minute: redo if the burst straddled a boundary
        minute = int(time.time() // 60)
        codes = [get(client, raw).status_code for _ in range(3)]
        if int(time.time() // 60) == minute:
            break
        _, raw = services.api_key_create(name="limited", scopes=[READ], rate_limit_per_minute=2)
    assert codes == [200, 200, 429]


def test_a_new_exchange_is_known_at_once_in_this_process(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    from catalog.models import Exchange

    _, raw = services.api_key_create(name="ex", scopes=[READ])
    url = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h&exchange=xhot"
    assert client.get(url, headers={"X-API-Key": raw}).status_code == 400  # the registry is cached now
    Exchange.objects.create(code="xhot", name="Hot path exchange", timezone="UTC")
    assert client.get(url, headers={"X-API-Key": raw}).status_code == 200


# --- the JSON encoding ---------------------------------------------------------------------------


def test_instants_are_encoded_exactly_as_before_in_and_out_of_the_fast_range() -> None:
    """Expected texts as the encoder before issue 15 wrote them (Arrow's strftime for every value)."""
    utc = dt.UTC
    values = [dt.datetime(2024, 3, 12, 0, 0, 1, 5, tzinfo=utc), None, dt.datetime(1, 1, 1, tzinfo=utc),
              dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc)]
    table = pa.table({"at": pa.array(values, pa.timestamp("us", tz="UTC")),
                      "local": pa.array([v.replace(tzinfo=None) if v else None for v in values], pa.timestamp("us")),
                      "sec": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7)] * 4, pa.timestamp("s", tz="UTC")),
                      "secn": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7)] * 4, pa.timestamp("s")),
                      "ns": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7)] * 4, pa.timestamp("ns")),
                      "syd": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7, tzinfo=utc)] * 4,
                                      pa.timestamp("ms", tz="Australia/Sydney")),
                      "infinite": pa.array([2**63 - 1, -(2**63 - 1), 0, None], pa.int64()).cast(pa.timestamp("us")),
                      "beyond": pa.array([400_000_000_000_000_000, 0, 0, 0], pa.int64()).cast(pa.timestamp("us"))})
    out = json.loads(formats.encode(table, "json", {"rows": 4}))["data"]
    assert [r["at"] for r in out] == ["2024-03-12T00:00:01.000005Z", None, "0001-01-01T00:00:00.000000Z",
                                      "9999-12-31T23:59:59.999999Z"]
    assert [r["local"] for r in out] == ["2024-03-12T00:00:01.000005", None, "0001-01-01T00:00:00.000000",
                                         "9999-12-31T23:59:59.999999"]
    # instants with a zone: in UTC, in microseconds (the API's JSON has always written them so)
    assert (out[0]["sec"], out[0]["syd"]) == ("2024-03-12T05:06:07.000000Z", "2024-03-12T05:06:07.000000Z")
    assert (out[0]["secn"], out[0]["ns"]) == ("2024-03-12T05:06:07", "2024-03-12T05:06:07.000000000")
    assert [r["infinite"] for r in out] == ["infinity", "-infinity", "1970-01-01T00:00:00.000000", None]
    assert [r["beyond"] for r in out[:2]] == ["14645-06-30T15:06:40.000000", "1970-01-01T00:00:00.000000"]


def test_decimals_stay_exact_strings_and_big_integers_fall_back_to_the_standard_encoder() -> None:
    table = pa.table({"price": pa.array([Decimal("45.120000"), Decimal("-0.000001")], pa.decimal128(18, 6))})
    body = formats.encode(table, "json", {"rows": 2, "snapshot_id": 2**70})
    assert body == b'{"data":[{"price":"45.120000"},{"price":"-0.000001"}],"meta":{"rows":2,"snapshot_id":1180591620717411303424}}'
