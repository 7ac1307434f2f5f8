"""The admin's first page is a dashboard (issue 13, item 4): consumers with state, rows/s and lag,
open gaps, each table's last snapshot, last-hour samples in Redis, candles of one symbol and day
in exchange time with the day's gaps placed at the exchange time of the message after the hole.
Against the real Postgres, Redis and Iceberg catalog; an unreachable catalog is said, not a 500."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import uuid
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
import redis
from django.contrib.auth import get_user_model
from django.utils import timezone

from catalog.engine.iceberg import arrow_schema
from ingestion import samples
from ingestion.models import Consumer, SequenceGap, Topic
from queries.engine.generate import generate_trades
from tests.conftest import free_port

SYDNEY = ZoneInfo("Australia/Sydney")
DAY = dt.date(2024, 3, 12)


@pytest.fixture
def dash_settings(k2_settings, catalog_config, iceberg_tables):  # type: ignore[no-untyped-def]
    k2_settings.K2 = dataclasses.replace(k2_settings.K2, iceberg_namespace=catalog_config.namespace)
    k2_settings.K2_SAMPLES_KEY_PREFIX = f"k2-test:{uuid.uuid4().hex}:"
    from django.core.cache import cache

    cache.delete(f"k2:dashboard:default:{catalog_config.namespace}")
    return k2_settings


@pytest.fixture
def market(iceberg_tables) -> pa.Table:  # type: ignore[no-untyped-def]
    parts = list(generate_trades(start=DAY, days=1, symbols=("BHP", "CBA"), rows_per_symbol_day=200, seed=5,
                                 schema=arrow_schema("trades")))
    for part in parts:
        iceberg_tables["trades"].append(part)
    return pa.concat_tables(parts)


def _staff(client):  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_superuser(f"ops-{uuid.uuid4().hex[:6]}", "o@example.com", "pw-123456")
    client.force_login(user)


def _consumer(name: str, status: str, stats: dict) -> Consumer:
    topic, _ = Topic.objects.get_or_create(name="market.equities.trades.asx",
                                           defaults={"asset_class": "equities", "data_type": "trades", "exchange": "asx"})
    return Consumer.objects.create(name=name, data_type="trades", topic=topic, group_id=f"g-{name}", status=status,
                                   heartbeat_at=timezone.now() - dt.timedelta(seconds=3), stats=stats)


def _gap_at(row: dict, expected: int, state: str = SequenceGap.State.OPEN) -> SequenceGap:
    return SequenceGap.objects.create(
        detected_at=timezone.now(), symbol=row["symbol"], exchange="asx", asset_class="equities", data_type="trades",
        expected_sequence=expected, received_sequence=row["sequence_number"], gap_size=row["sequence_number"] - expected,
        missing_remaining=1, topic="market.equities.trades.asx", partition=row["source_partition"],
        offset=row["source_offset"], state=state)


@pytest.mark.django_db
def test_dashboard_shows_consumers_gaps_tables_and_candles_in_exchange_time(client, dash_settings, market) -> None:  # type: ignore[no-untyped-def]
    _staff(client)
    c = _consumer("trades-dash", Consumer.Status.RUNNING, {"messages": 1234567, "rate": 2500.25, "lag": 42})
    _consumer("quotes-dash", Consumer.Status.STOPPED, {})
    now = time.time()
    samples.record(consumer_id=c.pk, stats={"lag": 40, "rate": 2400.0, "rows_written": 1000}, now=now - 60)
    samples.record(consumer_id=c.pk, stats={"lag": 42, "rate": 2500.25, "rows_written": 31000}, now=now)
    samples.record(consumer_id=c.pk, stats={"lag": 0, "rate": 7.5, "rows_written": 10}, now=now + 1)  # restarted
    rows = market.to_pylist()
    bhp = [r for r in rows if r["symbol"] == "BHP"]
    gap_row = bhp[57]
    _gap_at(gap_row, gap_row["sequence_number"] - 3)
    _gap_at(bhp[150], bhp[150]["sequence_number"] - 1, state=SequenceGap.State.ACKNOWLEDGED)

    response = client.get("/admin/?symbol=BHP&day=2024-03-12&interval=1h")
    assert response.status_code == 200
    html = response.content.decode()
    ctx = response.context
    assert ctx["running"] == 1 and ctx["open_gaps"] == 1
    trades_dash = next(x for x in ctx["consumers"] if x["name"] == "trades-dash")
    assert (trades_dash["rate"], trades_dash["lag"], trades_dash["messages"]) == ("2,500.2", "42", "1,234,567")
    assert re.search(r">\d+ s ago</time>", str(trades_dash["heartbeat"])), trades_dash["heartbeat"]
    assert f'title="{c.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"' in str(trades_dash["heartbeat"])
    spark = next(s for s in ctx["sparks"] if s["name"] == "trades-dash")
    assert [v for _, v in spark["lag"]] == [40, 42, 0]
    assert [v for _, v in spark["rate"]] == [500.0, 7.5]  # 30,000 rows in 60 s; after a restart, its own rate
    trades_table = next(t for t in ctx["tables"] if t["identifier"].endswith(".trades"))
    assert trades_table["rows"] == 400 and trades_table["snapshot_id"] is not None and "s ago" in trades_table["committed_ago"]

    candles = ctx["candles"]
    hours = sorted({r["exchange_timestamp"].replace(minute=0, second=0, microsecond=0) for r in bhp})
    assert len(candles["bars"]) == len(hours) == 6  # a 10:00–16:00 Sydney session, hourly bars
    first = hours[0].astimezone(SYDNEY)
    assert candles["bars"][0][0] == int(first.replace(tzinfo=dt.UTC).timestamp() * 1000)  # Sydney wall time
    assert dt.datetime.fromtimestamp(candles["bars"][0][0] / 1000, dt.UTC).hour == 10  # 10:00 on the axis
    assert candles["zone"] == "Australia/Sydney" and candles["zone_abbr"] == "AEDT"
    assert sum(b[5] for b in candles["bars"]) == sum(r["volume"] for r in bhp)
    first_hour = [r for r in bhp if r["exchange_timestamp"].replace(minute=0, second=0, microsecond=0) == hours[0]]
    assert candles["bars"][0][1] == str(first_hour[0]["price"]) and candles["bars"][0][2] == str(first_hour[-1]["price"])
    placed = {g["received_sequence"]: g for g in candles["gaps"]}
    want = gap_row["exchange_timestamp"].astimezone(SYDNEY).replace(tzinfo=dt.UTC)
    assert placed[gap_row["sequence_number"]]["t"] == int(want.timestamp() * 1000)
    assert len(ctx["gap_timeline"]["gaps"]) == 2
    assert 'id="k2-candles"' in html and "vendor/echarts/echarts.min.js" in html and "cdn" not in html.lower()


@pytest.mark.django_db
def test_dashboard_picks_a_symbol_and_day_with_data_by_default(client, dash_settings, market) -> None:  # type: ignore[no-untyped-def]
    _staff(client)
    response = client.get("/admin/")
    assert response.status_code == 200
    assert response.context["candles"]["day"] == "2024-03-12"
    assert response.context["candles"]["symbol"] in ("BHP", "CBA") and len(response.context["candles"]["bars"]) > 0


@pytest.mark.django_db
def test_dashboard_says_when_the_catalog_is_unreachable_instead_of_failing(client, dash_settings) -> None:  # type: ignore[no-untyped-def]
    from catalog import selectors

    _staff(client)
    _consumer("trades-dark", Consumer.Status.RUNNING, {"lag": 1})
    closed = free_port()  # nothing listens here
    dash_settings.K2 = dataclasses.replace(
        dash_settings.K2, iceberg_catalog_uri=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/nowhere")
    selectors.get_catalog.cache_clear()
    response = client.get("/admin/?symbol=BHP&day=2024-03-12")
    assert response.status_code == 200
    html = response.content.decode()
    assert "the Iceberg catalog is unreachable" in html and "market charts are unavailable" in html
    assert "trades-dark" in html  # what Postgres knows still shows


@pytest.mark.django_db
def test_dashboard_refuses_a_bad_symbol_or_day_with_a_message(client, dash_settings, market) -> None:  # type: ignore[no-untyped-def]
    _staff(client)
    html = client.get("/admin/?symbol=B%27HP&day=2024-03-12").content.decode()
    assert "is not a valid symbol" in html
    html = client.get("/admin/?symbol=BHP&day=12/03/2024").content.decode()
    assert "is not a date (YYYY-MM-DD, exchange-local)" in html


def test_samples_keep_the_last_hour_and_prune_older_ones(settings) -> None:  # type: ignore[no-untyped-def]
    settings.K2_SAMPLES_KEY_PREFIX = prefix = f"k2-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(settings.K2.redis_url)
    now = 1_800_000_000.0
    samples.record(consumer_id=7, stats={"lag": 9, "rate": 1.5}, now=now - 3700, client=client)
    samples.record(consumer_id=7, stats={"lag": 5, "rate": 2.0}, now=now - 1800, client=client)
    samples.record(consumer_id=7, stats={"lag": 0, "rate": 3.0}, now=now, client=client)
    try:
        assert client.zcard(f"{prefix}7") == 2  # the sample older than an hour was pruned on write
        assert [s["lag"] for s in samples.series(consumer_ids=[7, 8], now=now, client=client)[7]] == [5, 0]
        assert samples.series(consumer_ids=[8], now=now, client=client) == {8: []}
        assert 0 < client.ttl(f"{prefix}7") <= 7200
    finally:
        client.delete(f"{prefix}7")


def test_a_redis_outage_does_not_stop_the_heartbeat(settings) -> None:  # type: ignore[no-untyped-def]
    settings.K2 = dataclasses.replace(settings.K2, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    samples.record(consumer_id=1, stats={"lag": 1})  # logs consumer_sample_not_stored, does not raise
