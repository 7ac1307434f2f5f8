"""Batch decoding: typed columns from the fast path, and every kind of poison isolated."""

from __future__ import annotations

import json
from decimal import Decimal

import fastavro
import pytest

from catalog.engine import schemas, wire
from ingestion.engine.decode import INDEX_COLUMN, BatchDecoder, uniform_bodies
from tests.consumer.conftest import DictRegistry, encode_trade, trade


def test_fast_path_decodes_decimals_timestamps_and_lineage_exactly(decoder) -> None:
    prices = [Decimal("45.123456"), Decimal("-0.000001"), Decimal("0"), Decimal("999999999999.999999"),
              Decimal("-999999999999.999999")]
    records = [trade("BHP", i + 1) | {"price": p} for i, p in enumerate(prices)]
    result = decoder.decode([encode_trade(r) for r in records], [3] * 5, [10, 11, 12, 13, 14])
    assert result.poison == [] and result.fast_rows == 5
    rows = sorted(result.table.to_pylist(), key=lambda r: r[INDEX_COLUMN])
    assert [r["price"] for r in rows] == prices
    assert rows[0]["exchange_timestamp"] == records[0]["exchange_timestamp"]
    assert rows[0]["exchange_timestamp"].utcoffset().total_seconds() == 0
    assert [(r["source_partition"], r["source_offset"]) for r in rows] == [(3, o) for o in range(10, 15)]


def test_decimal_the_table_cannot_hold_is_poison_and_the_rest_flow(decoder) -> None:
    # a foreign producer that does not enforce precision 18: same bytes layout, wider schema
    wide = json.loads(schemas.schema_text("trades"))
    next(f for f in wide["fields"] if f["name"] == "price")["type"]["precision"] = 38
    too_big = wire.encode(1, fastavro.parse_schema(wide), trade("BHP", 2) | {"price": Decimal("10000000000000.000000")})
    values = [encode_trade(trade("BHP", 1)), too_big, encode_trade(trade("BHP", 3))]
    result = decoder.decode(values, [0] * 3, [0, 1, 2])
    assert [(p.index, p.reason) for p in result.poison] == [(1, "value_out_of_range")]
    assert sorted(result.table.column(INDEX_COLUMN).to_pylist()) == [0, 2]


def test_null_value_and_short_value_are_not_wire_format(decoder) -> None:
    result = decoder.decode([None, b"\x00\x01", encode_trade(trade("BHP", 1))], [0] * 3, [0, 1, 2])
    assert sorted((p.index, p.reason) for p in result.poison) == [(0, "not_wire_format"), (1, "not_wire_format")]
    assert "not Confluent wire format" in result.poison[0].error
    assert result.table.num_rows == 1


def test_quotes_and_reference_data_decode_into_their_table_schemas() -> None:
    from datetime import UTC, datetime

    registry = DictRegistry()
    q_id = registry.register("q-value", schemas.schema_text("quotes"))
    r_id = registry.register("r-value", schemas.schema_text("reference_data"))
    now = datetime(2026, 3, 10, 1, 2, 3, 456789, tzinfo=UTC)
    quote = {"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
             "bid_price": Decimal("45.100000"), "bid_volume": 10, "ask_price": Decimal("45.110001"), "ask_volume": 20,
             "ingestion_timestamp": now, "sequence_number": 1}
    ref = {"company_id": 1, "symbol": "BHP", "company_name": "BHP Group", "sector": None, "market_cap": 10**12,
           "last_updated": now}
    quotes = BatchDecoder(data_type="quotes", registry=registry)
    refs = BatchDecoder(data_type="reference_data", registry=registry)
    try:
        q = quotes.decode([wire.encode(q_id, schemas.parsed_schema("quotes"), quote)], [2], [5])
        r = refs.decode([wire.encode(r_id, schemas.parsed_schema("reference_data"), ref)], [0], [9])
    finally:
        quotes.close()
        refs.close()
    assert q.poison == [] and r.poison == []
    row = q.table.to_pylist()[0]
    assert (row["bid_price"], row["ask_price"], row["exchange_timestamp"]) == (Decimal("45.100000"),
                                                                              Decimal("45.110001"), now)
    assert (row["source_partition"], row["source_offset"]) == (2, 5)
    ref_row = r.table.to_pylist()[0]
    assert (ref_row["company_name"], ref_row["sector"], ref_row["market_cap"], ref_row["last_updated"]) == (
        "BHP Group", None, 10**12, now)


def test_uniform_batch_is_split_with_numpy_exactly_like_slicing_each_value() -> None:
    values = [encode_trade(trade("BHP", i + 1) | {"buyer_id": "B" * i}) for i in range(50)]  # bodies of varying length
    schema_id, data = uniform_bodies(values)
    assert schema_id == 1 and data == b"".join(v[5:] for v in values)


@pytest.mark.parametrize("odd", [None, b"\x00\x01", b"\x01\x00\x00\x00\x01body", b"\x00\x00\x00\x00\x02body"],
                         ids=["null", "short", "bad-magic", "other-schema-id"])
def test_batch_that_is_not_uniform_is_left_to_the_per_message_grouping(odd) -> None:
    values = [encode_trade(trade("BHP", 1)), odd, encode_trade(trade("BHP", 2))]
    assert uniform_bodies(values) is None


def test_mixed_schema_ids_in_one_batch_decode_per_group_and_keep_positions() -> None:
    registry = DictRegistry()
    first = registry.register("t-value", schemas.schema_text("trades"))
    evolved = json.loads(schemas.schema_text("trades"))
    evolved["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    second = registry.register("t-value", json.dumps(evolved))
    parsed2 = fastavro.parse_schema(evolved)
    values = [wire.encode(first, schemas.parsed_schema("trades"), trade("BHP", 1)),
              wire.encode(second, parsed2, trade("BHP", 2) | {"note": "x"}),
              wire.encode(first, schemas.parsed_schema("trades"), trade("BHP", 3))]
    dec = BatchDecoder(data_type="trades", registry=registry)
    try:
        result = dec.decode(values, [0, 0, 0], [7, 8, 9])
    finally:
        dec.close()
    assert result.poison == [] and result.fast_rows == 3
    rows = sorted(result.table.to_pylist(), key=lambda r: r[INDEX_COLUMN])
    assert [(r[INDEX_COLUMN], r["sequence_number"], r["source_offset"]) for r in rows] == [(0, 1, 7), (1, 2, 8), (2, 3, 9)]


def test_avro_decimal_bytes_convert_exactly_and_values_beyond_decimal_18_are_null() -> None:
    """The numpy conversion of Avro decimal bytes (big-endian two's complement) against Python's
    own int.from_bytes, at every width and at the edges of decimal(18, 6)."""
    import pyarrow as pa

    from ingestion.engine.decode import avro_decimals

    raw = [b"", b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\x00\x80", b"\xff\x7f", b"\x01\x00\x00",
           (10**18 - 1).to_bytes(8, "big", signed=True), (-(10**18) + 1).to_bytes(8, "big", signed=True),
           (10**18).to_bytes(8, "big", signed=True), (-(10**18)).to_bytes(8, "big", signed=True),
           (-(2**63)).to_bytes(8, "big", signed=True), (2**63 - 1).to_bytes(8, "big", signed=True),
           b"\x00" + (5).to_bytes(8, "big"), None, (-123456789).to_bytes(4, "big", signed=True)]
    got = avro_decimals(pa.array(raw, pa.binary()), pa.decimal128(18, 6)).to_pylist()
    expected = []
    for b in raw:
        unscaled = None if b is None or len(b) > 8 else int.from_bytes(b, "big", signed=True)
        ok = unscaled is not None and abs(unscaled) < 10**18
        expected.append(Decimal(unscaled).scaleb(-6) if ok else None)
    assert got == expected


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
@pytest.mark.parametrize("extra", [b"\x00", b"\x02\x02", b"\x06BHP"], ids=["zero-byte", "two-bytes", "a-string"])
def test_a_body_with_trailing_bytes_is_poison_wherever_it_sits_in_the_batch(decoder, position, extra) -> None:
    """DuckDB's reader ignores bytes left over after a block's last record: before the sentinel
    record, a last body with trailing bytes passed as a good row while the same body anywhere
    else was poison. Now it is poison at any position, with the per-message reader's reason."""
    values = [encode_trade(trade("BHP", i + 1)) for i in range(3)]
    values[position] += extra
    result = decoder.decode(values, [0] * 3, [0, 1, 2])
    assert [(p.index, p.reason) for p in result.poison] == [(position, "undecodable")]
    assert f"{len(extra)} trailing bytes after the record" in result.poison[0].error
    assert sorted(result.table.column(INDEX_COLUMN).to_pylist()) == [i for i in range(3) if i != position]
    assert sorted(result.table.column("sequence_number").to_pylist()) == [i + 1 for i in range(3) if i != position]


def test_good_batch_stays_on_the_fast_path_with_the_sentinel_record(decoder) -> None:
    """The sentinel (the first body once more) is read and dropped: the table holds exactly the
    batch's rows, none twice, all decoded by DuckDB."""
    values = [encode_trade(trade(f"S{i % 3}", i + 1)) for i in range(7)]
    result = decoder.decode(values, [1] * 7, list(range(100, 107)))
    assert result.poison == [] and result.fast_rows == 7 and result.slow_rows == 0
    rows = sorted(result.table.to_pylist(), key=lambda r: r[INDEX_COLUMN])
    assert [(r[INDEX_COLUMN], r["symbol"], r["sequence_number"], r["source_offset"]) for r in rows] == [
        (i, f"S{i % 3}", i + 1, 100 + i) for i in range(7)]
