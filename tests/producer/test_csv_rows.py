"""CSV validation (data model "CSV input"): every malformed row is rejected with its line and reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ingestion.engine.csv_rows import HeaderError, RowError, RowParser, check_header, key_of

TRADE_HEADER = ["symbol", "company_id", "exchange_timestamp", "price", "volume", "qualifiers", "venue"]
GOOD_TRADE = ["BHP", "1001", "2014-03-03T10:00:00.5", "37.80", "100", "0", "ASX"]
QUOTE_HEADER = ["symbol", "company_id", "exchange_timestamp", "bid_price", "bid_volume", "ask_price", "ask_volume"]
GOOD_QUOTE = ["BHP", "1001", "2014-03-03T10:00:00+11:00", "37.79", "300", "37.81", "200"]


def trade_parser(header: list[str] = TRADE_HEADER) -> RowParser:
    return RowParser(data_type="trades", exchange="asx", header=header, now_micros=lambda: 42)


def test_naive_timestamp_is_sydney_time_and_stored_as_utc_micros() -> None:
    record = trade_parser().parse(GOOD_TRADE, 2)
    # 2014-03-03 10:00:00.5 AEDT (+11:00) = 2014-03-02T23:00:00.5Z = 1393801200.5 s (date -u -d ... +%s)
    assert record["exchange_timestamp"] == 1_393_801_200_500_000
    assert record["price"] == Decimal("37.800000") and isinstance(record["price"], Decimal)
    assert record["exchange"] == "ASX" and record["ingestion_timestamp"] == 42


def test_timestamp_with_offset_is_taken_as_given() -> None:
    row = [*GOOD_TRADE[:2], "2014-03-02T23:00:00.5+00:00", *GOOD_TRADE[3:]]
    assert trade_parser().parse(row, 2)["exchange_timestamp"] == 1_393_801_200_500_000


def test_sequence_numbers_assigned_per_symbol_in_file_order_when_the_file_has_none() -> None:
    parser = trade_parser()
    symbols = ["BHP", "RIO", "BHP", "BHP", "RIO"]
    seqs = [parser.parse(["BHP" if s == "BHP" else s, *GOOD_TRADE[1:]], i)["sequence_number"] for i, s in enumerate(symbols, 2)]
    assert seqs == [1, 1, 2, 3, 2]


def test_rejected_rows_do_not_consume_a_sequence_number() -> None:
    parser = trade_parser()
    assert parser.parse(GOOD_TRADE, 2)["sequence_number"] == 1
    with pytest.raises(RowError):
        parser.parse([*GOOD_TRADE[:3], "abc", *GOOD_TRADE[4:]], 3)
    assert parser.parse(GOOD_TRADE, 4)["sequence_number"] == 2


def test_sequence_numbers_in_the_file_are_kept() -> None:
    parser = trade_parser([*TRADE_HEADER, "sequence_number"])
    assert parser.parse([*GOOD_TRADE, "977"], 2)["sequence_number"] == 977


@pytest.mark.parametrize(("row", "reason", "words"), [
    (GOOD_TRADE[:-1], "missing_column", "has 6 field(s), the header has 7"),
    ([*GOOD_TRADE, "x"], "extra_column", "has 8 field(s), the header has 7"),
    ([*GOOD_TRADE[:3], "37,80", *GOOD_TRADE[4:]], "bad_price", "price '37,80' is not a decimal number"),
    ([*GOOD_TRADE[:3], "NaN", *GOOD_TRADE[4:]], "bad_price", "not a finite number"),
    ([*GOOD_TRADE[:3], "-1.5", *GOOD_TRADE[4:]], "bad_price", "not positive"),
    ([*GOOD_TRADE[:3], "1.1234567", *GOOD_TRADE[4:]], "bad_price", "more than 6 decimal places"),
    ([*GOOD_TRADE[:3], "1e13", *GOOD_TRADE[4:]], "bad_price", "does not fit decimal(18,6)"),
    ([*GOOD_TRADE[:2], "03/03/2014 10:00", *GOOD_TRADE[3:]], "bad_timestamp", "is not an ISO 8601 timestamp"),
    ([GOOD_TRADE[0], "12.5", *GOOD_TRADE[2:]], "bad_integer", "company_id '12.5' is not an integer"),
    ([*GOOD_TRADE[:4], "many", *GOOD_TRADE[5:]], "bad_integer", "volume 'many' is not an integer"),
    ([*GOOD_TRADE[:4], "-100", *GOOD_TRADE[5:]], "negative_volume", "volume -100 is below 0"),
    (["", *GOOD_TRADE[1:]], "empty_symbol", "symbol is empty"),
    (["  ", *GOOD_TRADE[1:]], "empty_symbol", "symbol is empty"),
])
def test_bad_trade_row_is_rejected_with_line_reason_and_message(row: list[str], reason: str, words: str) -> None:
    with pytest.raises(RowError) as caught:
        trade_parser().parse(row, 17)
    assert caught.value.line == 17
    assert caught.value.reason == reason
    assert words in caught.value.message
    assert str(caught.value).startswith("line 17: ")


def test_quote_with_bid_above_ask_is_rejected() -> None:
    parser = RowParser(data_type="quotes", exchange="asx", header=QUOTE_HEADER)
    with pytest.raises(RowError) as caught:
        parser.parse([*GOOD_QUOTE[:3], "37.85", "300", "37.81", "200"], 5)
    assert caught.value.reason == "crossed_quote"
    assert "bid_price 37.85 is above ask_price 37.81" in caught.value.message


def test_locked_quote_with_bid_equal_to_ask_is_accepted() -> None:
    parser = RowParser(data_type="quotes", exchange="asx", header=QUOTE_HEADER)
    record = parser.parse([*GOOD_QUOTE[:3], "37.81", "300", "37.81", "200"], 5)
    assert record["bid_price"] == record["ask_price"] == Decimal("37.81")


def test_quote_with_negative_volume_is_rejected() -> None:
    parser = RowParser(data_type="quotes", exchange="asx", header=QUOTE_HEADER)
    with pytest.raises(RowError) as caught:
        parser.parse([*GOOD_QUOTE[:6], "-5"], 3)
    assert caught.value.reason == "negative_volume" and "ask_volume -5" in caught.value.message


def test_row_for_another_exchange_is_rejected() -> None:
    parser = trade_parser([*TRADE_HEADER, "exchange"])
    with pytest.raises(RowError) as caught:
        parser.parse([*GOOD_TRADE, "NZX"], 9)
    assert caught.value.reason == "wrong_exchange"


def test_header_missing_a_required_column_is_refused_naming_it() -> None:
    with pytest.raises(HeaderError) as caught:
        check_header("trades", [c for c in TRADE_HEADER if c != "price"])
    assert "missing required column(s) price" in str(caught.value)


def test_header_with_an_unknown_column_is_refused_naming_it() -> None:
    with pytest.raises(HeaderError) as caught:
        check_header("trades", [*TRADE_HEADER, "colour"])
    assert "unknown column(s) 'colour'" in str(caught.value)


def test_columns_may_come_in_any_order() -> None:
    header = list(reversed(TRADE_HEADER))
    record = trade_parser(header).parse(list(reversed(GOOD_TRADE)), 2)
    assert record["symbol"] == "BHP" and record["volume"] == 100


def test_reference_data_key_is_company_id_and_trade_key_is_symbol() -> None:
    parser = RowParser(data_type="reference_data", exchange="asx", header=["company_id", "symbol", "company_name"])
    ref = parser.parse(["1001", "BHP", "BHP Billiton Limited"], 2)
    assert key_of("reference_data", ref) == b"1001"
    assert key_of("trades", trade_parser().parse(GOOD_TRADE, 2)) == b"BHP"
