"""The fused encoder writes exactly the bytes fastavro writes for the same rows, and defers every
unusual or bad row to the general parser (so errors and edge cases behave the same)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import fastavro
import pytest

from catalog.engine.schemas import parsed_schema
from ingestion.engine.csv_rows import RowError, RowParser
from ingestion.engine.fast_encode import FastEncoder
from ingestion.engine.sample import write_sample

NOW = 1_393_801_234_567_000


def fastavro_bytes(data_type: str, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema(data_type), record)
    return buf.getvalue()


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fast")
    write_sample(out_dir=out, seed=5, trades=1500, days=2, gaps=2, duplicates=1, out_of_order=1)
    return out


@pytest.mark.parametrize("data_type", ["trades", "quotes"])
def test_fast_bytes_equal_fastavro_bytes_for_generated_rows(sample_dir: Path, data_type: str) -> None:
    with open(sample_dir / f"{data_type}.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    reference = RowParser(data_type=data_type, exchange="asx", header=header, now_micros=lambda: NOW)
    fast = FastEncoder(RowParser(data_type=data_type, exchange="asx", header=header), now_micros=lambda: NOW)
    for line, row in enumerate(rows, 2):
        encoded = fast.encode(row, line)
        assert encoded is not None, row
        key, buf = encoded
        record = reference.parse(row, line)
        assert bytes(buf[5:]) == fastavro_bytes(data_type, record), row
        assert key == record["symbol"].encode()


EDGE_TRADES = [
    ["BHP", "1001", "2014-03-03T10:00:00", "37.8", "0", "-3", "ASX", ""],
    ["QAN", "-7", "2014-03-03T10:00:00.000001+11:00", "0.001", "9223372036854775", "2147483647", "", "B1"],
    ["BRK.B", "2147483647", "2014-03-03T10:00:00Z", "999999999999.999999", "1", "0", "Ω venue", "ß"],
    ["ABCDEFGHIJKL", "1", "2014-03-03T10:00:00", "128", "128", "0", "V" * 9000, ""],  # a 9,000-byte venue: long varint length
]


def test_fast_bytes_equal_fastavro_bytes_at_the_edges() -> None:
    header = ["symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue", "buyer_id"]
    reference = RowParser(data_type="trades", exchange="asx", header=header, now_micros=lambda: NOW)
    fast = FastEncoder(RowParser(data_type="trades", exchange="asx", header=header), now_micros=lambda: NOW)
    for row in EDGE_TRADES:
        encoded = fast.encode(row, 2)
        assert encoded is not None, row
        assert bytes(encoded[1][5:]) == fastavro_bytes("trades", reference.parse(row, 2)), row


@pytest.mark.parametrize("symbol", ["bhp", "BH P", "ÅBC", "X" * 13, "BHP\x00", "", "BH\udcffP"])
def test_symbols_outside_the_pattern_go_to_the_general_parser_which_rejects_them(symbol: str) -> None:
    header = ["symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue"]
    parser = RowParser(data_type="trades", exchange="asx", header=header)
    row = [symbol, "1", "2014-03-03T10:00:00", "37.80", "1", "0", "ASX"]
    assert FastEncoder(parser).encode(row, 2) is None
    with pytest.raises(RowError) as caught:
        parser.parse(row, 2)
    assert caught.value.reason in {"bad_symbol", "empty_symbol", "bad_encoding"}


@pytest.mark.parametrize("price", ["1e3", "0", "-1", "37.1234567", "abc", " 37.80", "1234567890123"])
def test_unusual_or_bad_prices_go_to_the_general_parser(price: str) -> None:
    header = ["symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue"]
    fast = FastEncoder(RowParser(data_type="trades", exchange="asx", header=header))
    assert fast.encode(["BHP", "1", "2014-03-03T10:00:00", price, "1", "0", "ASX"], 2) is None


def test_a_row_the_fast_path_defers_does_not_use_a_sequence_number() -> None:
    header = ["symbol", "company_id", "exchange_timestamp", "bid_price", "bid_volume", "ask_price", "ask_volume"]
    parser = RowParser(data_type="quotes", exchange="asx", header=header)
    fast = FastEncoder(parser)
    assert fast.encode(["BHP", "1", "2014-03-03T10:00:00", "2.00", "1", "2.01", "1"], 2) is not None
    assert fast.encode(["BHP", "1", "2014-03-03T10:00:00", "2.02", "1", "2.01", "1"], 3) is None  # crossed: deferred
    assert parser.next_sequence["BHP"] == 2
    assert parser.parse(["BHP", "1", "2014-03-03T10:00:00", "2.00", "1", "2.01", "1"], 4)["sequence_number"] == 2
