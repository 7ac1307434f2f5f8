"""Issue 14 item 6: a second exchange end to end, from the exchange registry (catalog.models.Exchange).

An NZX CSV (timestamps without an offset: NZ local time) is produced with `manage.py produce
--exchange nzx`, consumed into Iceberg with `manage.py consume`, and queried through the API:
`date=` and 1d bars are NZ trading days, and only NZX's trades are returned although an ASX
file with the same symbol sits in the same table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.engine.exchanges import Exchange as EngineExchange
from catalog.models import Exchange
from ingestion.engine.topics import create_topics, declared_topics
from queries import services
from queries.models import ApiKey
from tests.producer.conftest import TRADE_HEADER, write_csv

pytestmark = pytest.mark.django_db
UTC = dt.UTC
NZ = "Pacific/Auckland"

# NZ local times (NZDT, UTC+13 in March 2024; Sydney is AEDT, UTC+11).
NZX_ROWS = [
    ["FPH", "2001", "2024-03-12T00:30:00", "30.10", "100", "0", "NZX"],   # 2024-03-11 11:30Z: NZ 12 Mar, Sydney 11 Mar
    ["FPH", "2001", "2024-03-12T10:00:00", "30.50", "200", "0", "NZX"],   # 2024-03-11 21:00Z
    ["FPH", "2001", "2024-03-12T16:44:59", "29.90", "300", "0", "NZX"],   # 2024-03-12 03:44:59Z
    ["FPH", "2001", "2024-03-12T23:30:00", "30.00", "400", "0", "NZX"],   # 2024-03-12 10:30Z: NZ 12 Mar, Sydney 12 Mar
    ["AIR", "2002", "2024-03-12T11:00:00", "0.645", "5000", "0", "NZX"],  # 2024-03-11 22:00Z
    ["FPH", "2001", "2024-03-13T01:00:00", "31.00", "500", "0", "NZX"],   # 2024-03-12 12:00Z: NZ 13 Mar, Sydney 12 Mar
]
ASX_ROWS = [  # the same symbol on ASX, inside the same UTC hours: must not count as NZX trades
    ["FPH", "3001", "2024-03-12T10:00:00", "28.00", "7", "0", "ASX"],     # Sydney time: 2024-03-11 23:00Z
    ["FPH", "3001", "2024-03-12T15:00:00", "28.50", "9", "0", "ASX"],     # 2024-03-12 04:00Z
]


def nz_utc(local: str) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(NZ)).astimezone(UTC)


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_registry_is_seeded_with_asx_chix_and_nzx() -> None:
    rows = {e.code: e for e in Exchange.objects.all()}
    assert {"asx", "chix", "nzx"} <= set(rows)
    assert (rows["asx"].timezone, rows["chix"].timezone, rows["nzx"].timezone) == \
        ("Australia/Sydney", "Australia/Sydney", "Pacific/Auckland")
    nzx = rows["nzx"].to_engine()
    assert (nzx.session_open, nzx.session_close, nzx.weekend_days) == (dt.time(10), dt.time(16, 45), (6, 7))
    assert nzx.session(dt.date(2024, 3, 12)) == (dt.datetime(2024, 3, 11, 21, tzinfo=UTC),
                                                 dt.datetime(2024, 3, 12, 3, 45, tzinfo=UTC))
    assert not nzx.is_trading_day(dt.date(2024, 3, 16)) and nzx.is_trading_day(dt.date(2024, 3, 15))


def test_an_exchange_with_a_bad_time_zone_or_code_is_refused() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        Exchange(code="XX-1", name="x", timezone="Mars/Olympus", weekend_days=[8]).full_clean()
    assert {"code", "timezone", "weekend_days"} <= set(caught.value.message_dict)
    with pytest.raises(ValueError, match="lower-case"):
        EngineExchange(code="NZX", name="x", timezone=NZ)


@pytest.fixture
def nzx_settings(k2_settings, catalog_config, iceberg_tables):  # type: ignore[no-untyped-def]
    """Broker, catalog and the API's namespace all this test's."""
    k2_settings.K2 = dataclasses.replace(k2_settings.K2, iceberg_namespace=catalog_config.namespace)
    return k2_settings


def test_a_second_exchange_end_to_end_produce_consume_and_query_in_its_own_time_zone(  # type: ignore[no-untyped-def]
        nzx_settings, client, kafka_bootstrap: str, catalog_config, tmp_path: Path, unique: str) -> None:
    asset_class = f"x{unique}"
    create_topics(kafka_bootstrap, declared_topics(exchanges=("nzx", "asx"), asset_class=asset_class, partitions=3))
    for exchange, rows in (("nzx", NZX_ROWS), ("asx", ASX_ROWS)):
        out = StringIO()
        call_command("produce", csv=write_csv(tmp_path / f"{exchange}.csv", TRADE_HEADER, rows),
                     data_type="trades", exchange=exchange, asset_class=asset_class, dlq_file=tmp_path / "dlq.jsonl",
                     timeout=15, no_progress=True, stdout=out, stderr=StringIO())
        assert f"produced {len(rows)}, acked {len(rows)}, rejected 0" in out.getvalue()
    call_command("consume", topic_pattern=rf"market\.{asset_class}\.trades\.(nzx|asx)", data_type="trades",
                 group=f"g-{unique}", namespace=catalog_config.namespace, max_messages=len(NZX_ROWS) + len(ASX_ROWS),
                 from_beginning=True, max_batch_ms=200, progress_interval=60, stdout=StringIO())

    key = services.api_key_create(name="nzx", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]

    def get(url: str) -> dict:
        response = client.get(url, headers={"X-API-Key": key})
        assert response.status_code == 200, response.content
        return response.json()

    # date= is the NZ trading day: 2024-03-12 NZ = [2024-03-11 11:00Z, 2024-03-12 11:00Z); ASX's FPH rows are not NZX's.
    day = get("/api/v1/trades?symbol=FPH&date=2024-03-12&exchange=nzx")["data"]
    expected = [nz_utc(r[2]) for r in NZX_ROWS if r[0] == "FPH" and r[2].startswith("2024-03-12")]
    assert [instant(t["exchange_timestamp"]) for t in day] == expected
    assert {t["exchange"] for t in day} == {"NZX"} and [t["price"] for t in day] == \
        ["30.100000", "30.500000", "29.900000", "30.000000"]
    # Upper case works too, and the Sydney day of the same date is a different set of rows.
    assert len(get("/api/v1/trades?symbol=FPH&date=2024-03-12&exchange=NZX")["data"]) == 4
    asx_day = get("/api/v1/trades?symbol=FPH&date=2024-03-12&exchange=asx")["data"]
    assert [(t["exchange"], t["price"]) for t in asx_day] == [("ASX", "28.000000"), ("ASX", "28.500000")]

    # 1d bars are NZ trading days, starting at NZ midnight.
    bars = get("/api/v1/ohlcv?interval=1d&date=2024-03-12&end_date=2024-03-13&exchange=nzx")["data"]
    by_key = {(b["symbol"], instant(b["bar_start"])): b for b in bars}
    nz_midnight_12, nz_midnight_13 = dt.datetime(2024, 3, 11, 11, tzinfo=UTC), dt.datetime(2024, 3, 12, 11, tzinfo=UTC)
    assert set(by_key) == {("AIR", nz_midnight_12), ("FPH", nz_midnight_12), ("FPH", nz_midnight_13)}
    fph = by_key[("FPH", nz_midnight_12)]
    assert (fph["open"], fph["high"], fph["low"], fph["close"]) == ("30.100000", "30.500000", "29.900000", "30.000000")
    assert (fph["volume"], fph["trade_count"]) == (1000, 4)
    notional = sum(Decimal(p) * v for p, v in (("30.10", 100), ("30.50", 200), ("29.90", 300), ("30.00", 400)))
    assert Decimal(fph["vwap"]) == (notional / 1000).quantize(Decimal("0.000001"))
    late = by_key[("FPH", nz_midnight_13)]
    assert (late["open"], late["volume"], late["trade_count"]) == ("31.000000", 500, 1)

    # An exchange nobody registered: a clear 400 from the API, exit 2 from the producer.
    response = client.get("/api/v1/trades?symbol=FPH&date=2024-03-12&exchange=lse", headers={"X-API-Key": key})
    assert response.status_code == 400
    assert "unknown exchange 'lse': known exchanges are asx, chix, nzx" in response.json()["message"]
    with pytest.raises(CommandError) as caught:
        call_command("produce", csv=tmp_path / "nzx.csv", data_type="trades", exchange="lse", asset_class=asset_class,
                     timeout=15, no_progress=True, stdout=StringIO(), stderr=StringIO())
    assert caught.value.returncode == 2 and "unknown exchange 'lse'" in str(caught.value)


def test_a_new_exchange_added_to_the_registry_is_used_without_a_restart(  # type: ignore[no-untyped-def]
        nzx_settings, client) -> None:
    """Tokyo (UTC+9, no daylight saving): its trading date 2024-03-12 is [2024-03-11 15:00Z, 2024-03-12 15:00Z)."""
    from queries.engine.timeutil import make_range
    from queries.selectors import exchange

    Exchange.objects.create(code="jpx", name="Japan Exchange Group", timezone="Asia/Tokyo",
                            session_open=dt.time(9), session_close=dt.time(15, 30))
    rng = make_range(date=dt.date(2024, 3, 12), exchange=exchange("JPX"))
    assert (rng.start, rng.end) == (dt.datetime(2024, 3, 11, 15, tzinfo=UTC), dt.datetime(2024, 3, 12, 15, tzinfo=UTC))
    key = services.api_key_create(name="jpx", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    response = client.get("/api/v1/trades?symbol=FPH&date=2024-03-12&exchange=jpx", headers={"X-API-Key": key})
    assert response.status_code == 200 and response.json()["data"] == []


def test_engines_take_the_exchange_as_a_plain_value() -> None:
    """No Django in the engines: the CSV parser and the query time helpers take an Exchange / time zone."""
    import subprocess
    import sys

    code = ("import sys; from ingestion.engine.csv_rows import RowParser; from queries.engine.market import MarketQueries; "
            "from catalog.engine.exchanges import Exchange; from queries.engine.timeutil import make_range; "
            "import datetime as dt; nzx = Exchange(code='nzx', name='NZX', timezone='Pacific/Auckland'); "
            "p = RowParser(data_type='trades', exchange='nzx', header=['symbol','company_id','exchange_timestamp',"
            "'price','volume','qualifiers','venue'], timezone=nzx.timezone); "
            "r = p.parse(['FPH','1','2024-03-12T10:00:00','30.5','1','0','NZX'], 2); "
            "print(r['exchange'], r['exchange_timestamp'], make_range(date=dt.date(2024,3,12), exchange=nzx).start.isoformat()); "
            "print('django' in sys.modules)")
    from k2portal.config import BASE_DIR

    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    stamp = int(nz_utc("2024-03-12T10:00:00").timestamp()) * 1_000_000
    assert out.stdout.split("\n")[:2] == [f"NZX {stamp} 2024-03-11T11:00:00+00:00", "False"]


def test_the_csv_parser_without_a_registry_knows_only_asx() -> None:
    from ingestion.engine.csv_rows import HeaderError, RowParser

    with pytest.raises(HeaderError, match="no time zone known for exchange 'nzx'"):
        RowParser(data_type="trades", exchange="nzx", header=TRADE_HEADER)
    assert str(RowParser(data_type="trades", exchange="asx", header=TRADE_HEADER).tz) == "Australia/Sydney"
