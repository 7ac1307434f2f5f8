"""A quant's first look at a day of trades: pull them from K2's API as Arrow, into pandas.

    K2_API_KEY=k2_… python docs/quant_example.py --date 2014-03-10 --symbol BHP --symbol CBA
    python docs/quant_example.py --base-url http://127.0.0.1:8000 --date 2014-03-10 --api-key k2_…

The key needs the `market_data:read` scope (Admin → API keys, or `manage.py issue_api_key`).
`date` is an ASX (Australia/Sydney) trading date. Pages of `--page-size` rows are followed with
the `X-K2-Next-Cursor` header until the day is read. Prices arrive as Arrow decimals and stay
`decimal.Decimal` in pandas (never floats); timestamps are UTC, shown here in exchange time.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal

import httpx
import pandas as pd
import pyarrow as pa

MICRO = Decimal("0.000001")


def fetch_trades(*, base_url: str, api_key: str, date: str, symbols: list[str] | None = None,
                 page_size: int = 50_000, client: httpx.Client | None = None) -> pa.Table:
    """Every trade of an exchange-local `date` (optionally of `symbols`) as one Arrow table."""
    http = client or httpx.Client(base_url=base_url, timeout=120)
    params: dict[str, object] = {"date": date, "format": "arrow", "limit": page_size}
    if symbols:
        params["symbol"] = symbols
    pages: list[pa.Table] = []
    cursor: str | None = None
    while True:
        response = http.get("/api/v1/trades", params={**params, **({"cursor": cursor} if cursor else {})},
                            headers={"X-API-Key": api_key})
        if response.status_code != 200:
            raise SystemExit(f"K2 API {response.status_code}: {response.text}")
        with pa.ipc.open_stream(response.content) as reader:
            pages.append(reader.read_all())
        cursor = response.headers.get("X-K2-Next-Cursor")
        if not cursor:
            break
    return pa.concat_tables(pages) if pages else pa.table({})


def summarise(trades: pa.Table) -> pd.DataFrame:
    """Per symbol: trades, volume, first/last trade in Sydney time, and VWAP (exact, in Decimal)."""
    frame = trades.to_pandas()
    frame["exchange_time"] = frame["exchange_timestamp"].dt.tz_convert("Australia/Sydney")
    frame["notional"] = frame["price"] * frame["volume"]  # Decimal × int stays Decimal
    out = frame.groupby("symbol").agg(trades=("price", "size"), volume=("volume", "sum"),
                                      notional=("notional", "sum"), first=("exchange_time", "min"),
                                      last=("exchange_time", "max"))
    out["vwap"] = [(n / v).quantize(MICRO) if v else None for n, v in zip(out["notional"], out["volume"], strict=True)]
    return out.drop(columns="notional")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("K2_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("K2_API_KEY"))
    parser.add_argument("--date", required=True, help="ASX trading date, YYYY-MM-DD")
    parser.add_argument("--symbol", action="append", help="repeat for several; omit for all")
    parser.add_argument("--page-size", type=int, default=50_000)
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an API key is needed: --api-key or K2_API_KEY")
    trades = fetch_trades(base_url=args.base_url, api_key=args.api_key, date=args.date, symbols=args.symbol,
                          page_size=args.page_size)
    sys.stdout.write(f"{trades.num_rows} trades, columns: {', '.join(trades.column_names)}\n")
    if trades.num_rows:
        sys.stdout.write(summarise(trades).to_string() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
