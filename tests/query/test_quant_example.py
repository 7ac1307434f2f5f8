"""docs/quant_example.py, the quant's script, runs against a live K2 server: it pulls a day of
trades as Arrow (following the cursor over several pages) into pandas with an API key."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from k2portal.config import BASE_DIR
from queries import services
from queries.models import ApiKey

SYDNEY = ZoneInfo("Australia/Sydney")


@pytest.mark.django_db(transaction=True)
def test_quant_example_pulls_a_day_of_trades_as_arrow_into_pandas(live_server, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    _, raw = services.api_key_create(name="quant", scopes=[ApiKey.Scope.MARKET_DATA_READ])
    day = dt.date(2024, 3, 12)
    expected = [r for r in generated.to_pylist()
                if r["symbol"] == "BHP" and r["exchange_timestamp"].astimezone(SYDNEY).date() == day]
    assert len(expected) == 300
    vwap = (sum(r["price"] * r["volume"] for r in expected) / sum(r["volume"] for r in expected)).quantize(Decimal("0.000001"))

    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "docs" / "quant_example.py"), "--base-url", live_server.url,
         "--api-key", raw, "--date", day.isoformat(), "--symbol", "BHP", "--page-size", "70"],
        capture_output=True, text=True, timeout=120, cwd=BASE_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("300 trades, columns: symbol,"), result.stdout
    bhp = next(line for line in result.stdout.splitlines() if line.startswith("BHP"))
    assert " 300 " in f" {bhp} " and str(vwap) in bhp, (bhp, vwap)
    assert "+11:00" in bhp  # first/last trade shown in Sydney time (AEDT in March)

    refused = subprocess.run(
        [sys.executable, str(BASE_DIR / "docs" / "quant_example.py"), "--base-url", live_server.url,
         "--api-key", "k2_not_a_key", "--date", day.isoformat()], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "K2 API 401" in refused.stderr
