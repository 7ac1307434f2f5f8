"""One data-type spec (catalog.engine.datatypes): the tables it builds are the tables K2 had, and
each of its attributes drives the behaviour it names."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DecimalType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from catalog.engine import datatypes, wire
from catalog.engine.datatypes import SPECS, DataType, spec
from catalog.engine.iceberg import TABLE_PROPERTIES, ensure_tables, load_catalog
from catalog.engine.writer import IcebergWriter
from ingestion.engine.csv_rows import RowParser, key_of
from ingestion.engine.decode import INDEX_COLUMN, BatchDecoder
from tests.consumer.conftest import DictRegistry
from tests.faults import PG_TEST_URL, duckdb_scan

PRICE = DecimalType(18, 6)

# The schemas K2 created before the spec, written by hand in catalog/engine/iceberg.py (commit
# f84b52e): tables in existing warehouses have exactly these field ids and types.
OLD_SCHEMAS = {
    "trades": Schema(
        NestedField(1, "symbol", StringType(), required=True),
        NestedField(2, "company_id", IntegerType(), required=True),
        NestedField(3, "exchange", StringType(), required=True),
        NestedField(4, "exchange_timestamp", TimestamptzType(), required=True),
        NestedField(5, "price", PRICE, required=True),
        NestedField(6, "volume", LongType(), required=True),
        NestedField(7, "qualifiers", IntegerType(), required=True),
        NestedField(8, "venue", StringType(), required=True),
        NestedField(9, "buyer_id", StringType(), required=False),
        NestedField(10, "ingestion_timestamp", TimestamptzType(), required=True),
        NestedField(11, "sequence_number", LongType(), required=False),
        NestedField(12, "source_partition", IntegerType(), required=True),
        NestedField(13, "source_offset", LongType(), required=True),
    ),
    "quotes": Schema(
        NestedField(1, "symbol", StringType(), required=True),
        NestedField(2, "company_id", IntegerType(), required=True),
        NestedField(3, "exchange", StringType(), required=True),
        NestedField(4, "exchange_timestamp", TimestamptzType(), required=True),
        NestedField(5, "bid_price", PRICE, required=True),
        NestedField(6, "bid_volume", LongType(), required=True),
        NestedField(7, "ask_price", PRICE, required=True),
        NestedField(8, "ask_volume", LongType(), required=True),
        NestedField(9, "ingestion_timestamp", TimestamptzType(), required=True),
        NestedField(10, "sequence_number", LongType(), required=False),
        NestedField(11, "source_partition", IntegerType(), required=True),
        NestedField(12, "source_offset", LongType(), required=True),
    ),
    "reference_data": Schema(
        NestedField(1, "company_id", IntegerType(), required=True),
        NestedField(2, "symbol", StringType(), required=True),
        NestedField(3, "company_name", StringType(), required=True),
        NestedField(4, "sector", StringType(), required=False),
        NestedField(5, "market_cap", LongType(), required=False),
        NestedField(6, "last_updated", TimestamptzType(), required=True),
        NestedField(7, "source_partition", IntegerType(), required=True),
        NestedField(8, "source_offset", LongType(), required=True),
    ),
}
OLD_PARTITION = PartitionSpec(PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="exchange_date"))
OLD_SORT = SortOrder(SortField(source_id=1, transform=IdentityTransform()),
                     SortField(source_id=4, transform=IdentityTransform()))  # + sequence_number, per type below


def _old_sort(data_type: str) -> SortOrder:
    if data_type == "reference_data":
        return UNSORTED_SORT_ORDER
    seq = OLD_SCHEMAS[data_type].find_field("sequence_number").field_id
    return SortOrder(*OLD_SORT.fields, SortField(source_id=seq, transform=IdentityTransform()))


def _create_old_tables(catalog, namespace: str) -> dict:  # noqa: ANN001
    """The three tables as K2 created them before the spec (its hand-written schemas)."""
    catalog.create_namespace(namespace)
    return {dt: catalog.create_table(f"{namespace}.{dt}", schema=schema,
                                     partition_spec=UNPARTITIONED_PARTITION_SPEC if dt == "reference_data" else OLD_PARTITION,
                                     sort_order=_old_sort(dt), properties=TABLE_PROPERTIES)
            for dt, schema in OLD_SCHEMAS.items()}


def _fields(schema: Schema) -> list[tuple[int, str, str, bool]]:
    return [(f.field_id, f.name, str(f.field_type), f.required) for f in schema.fields]


def test_built_schemas_keep_the_field_ids_and_types_of_tables_created_before_the_spec(catalog_config) -> None:
    for data_type, old in OLD_SCHEMAS.items():
        built = spec(data_type).iceberg_schema()
        assert _fields(built)[:len(old.fields)] == _fields(old), data_type
        n = len(old.fields)
        assert _fields(built)[n:] == [(n + 1, "source_topic", "string", False), (n + 2, "source_topic_id", "string", False)]
        assert spec(data_type).arrow_schema().remove(n + 1).remove(n) == old.as_arrow()
        assert spec(data_type).partition_spec() == (UNPARTITIONED_PARTITION_SPEC if data_type == "reference_data"
                                                    else OLD_PARTITION)
        assert spec(data_type).sort_order() == _old_sort(data_type)


def test_a_table_created_before_the_spec_is_evolved_to_what_the_spec_creates_today(catalog_config) -> None:
    catalog = load_catalog(catalog_config)
    old = _create_old_tables(catalog, catalog_config.namespace)
    evolved = ensure_tables(catalog, catalog_config.namespace)
    fresh = ensure_tables(catalog, catalog_config.namespace + "_new")
    for data_type, table in old.items():
        table.refresh()
        assert _fields(evolved[data_type].schema()) == _fields(fresh[data_type].schema()), data_type
        assert _fields(evolved[data_type].schema())[:len(OLD_SCHEMAS[data_type].fields)] == _fields(OLD_SCHEMAS[data_type])
        assert evolved[data_type].schema().as_arrow() == spec(data_type).arrow_schema()
        assert evolved[data_type].spec() == fresh[data_type].spec()
        assert evolved[data_type].sort_order() == fresh[data_type].sort_order()
    # idempotent: a second run changes nothing
    before = {dt: t.metadata_location for dt, t in evolved.items()}
    again = ensure_tables(catalog, catalog_config.namespace)
    assert {dt: t.metadata_location for dt, t in again.items()} == before


def _old_trade_rows(n: int) -> pa.Table:
    t0 = datetime(2026, 3, 10, 1, tzinfo=UTC)
    return pa.Table.from_pylist([
        {"symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": t0, "price": Decimal("1.5"),
         "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None, "ingestion_timestamp": t0,
         "sequence_number": i, "source_partition": 0, "source_offset": i} for i in range(n)],
        schema=OLD_SCHEMAS["trades"].as_arrow())


def test_old_table_gains_the_topic_columns_at_the_first_append_old_rows_read_null(catalog_config) -> None:
    catalog = load_catalog(catalog_config)
    table = _create_old_tables(catalog, catalog_config.namespace)["trades"]
    table.append(_old_trade_rows(3))  # rows written by the old K2
    old_files = {t.file.file_path for t in table.scan().plan_files()}
    new = _old_trade_rows(2).append_column("source_topic", pa.array(["market.equities.trades.asx"] * 2)) \
        .append_column("source_topic_id", pa.array(["AaI8n9fle8KHaiPTYmwr3Q"] * 2))
    new = new.set_column(new.schema.get_field_index("source_offset"), "source_offset", pa.array([3, 4], pa.int64()))
    IcebergWriter(table, table_name="trades").append(new.cast(spec("trades").arrow_schema()))
    table = catalog.load_table(f"{catalog_config.namespace}.trades")
    assert [f.name for f in table.schema().fields][-2:] == ["source_topic", "source_topic_id"]
    assert old_files <= {t.file.file_path for t in table.scan().plan_files()}  # nothing rewritten
    rows = duckdb_scan(PG_TEST_URL, catalog_config.namespace,
                       "SELECT source_offset, source_topic, source_topic_id FROM {scan} ORDER BY source_offset")
    assert rows == [(0, None, None), (1, None, None), (2, None, None),
                    (3, "market.equities.trades.asx", "AaI8n9fle8KHaiPTYmwr3Q"),
                    (4, "market.equities.trades.asx", "AaI8n9fle8KHaiPTYmwr3Q")]


# --- each attribute drives its behaviour -------------------------------------------------------
TICK_AVSC = {
    "type": "record", "name": "Tick", "namespace": "com.k2.market_data",
    "fields": [
        {"name": "venue_code", "type": "string"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "mid", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 6}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


@pytest.fixture
def tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataType:
    (tmp_path / "tick.avsc").write_text(json.dumps(TICK_AVSC))
    made = DataType("ticks", "tick.avsc", key_field="venue_code", partition_source="at", sort_columns=("venue_code",),
                    schema_dir=tmp_path)
    monkeypatch.setitem(SPECS, "ticks", made)
    return made


def test_columns_types_and_decimals_come_from_the_avsc(tick: DataType) -> None:
    assert _fields(tick.iceberg_schema()) == [
        (1, "venue_code", "string", True), (2, "at", "timestamptz", True), (3, "mid", "decimal(18, 6)", True),
        (4, "note", "string", False), (5, "source_partition", "int", True), (6, "source_offset", "long", True),
        (7, "source_topic", "string", False), (8, "source_topic_id", "string", False)]
    assert tick.decimal_columns == ("mid",)
    assert spec("quotes").decimal_columns == ("bid_price", "ask_price")


def test_partitioning_and_sort_order_follow_the_spec(tick: DataType) -> None:
    assert tick.partition_spec() == PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="exchange_date"))
    assert tick.sort_order() == SortOrder(SortField(source_id=1, transform=IdentityTransform()))
    flat = dataclasses.replace(tick, partition_source=None, sort_columns=())
    assert flat.partition_spec() == UNPARTITIONED_PARTITION_SPEC and not flat.partitioned
    assert flat.sort_order() == UNSORTED_SORT_ORDER
    assert datatypes.PARTITIONED_TYPES == ("trades", "quotes")


def test_decoder_converts_the_decimal_columns_the_spec_names(tick: DataType) -> None:
    registry = DictRegistry()
    schema_id = registry.register("ticks-value", tick.schema_text)
    import fastavro

    parsed = fastavro.parse_schema(TICK_AVSC)
    at = datetime(2026, 3, 10, 1, tzinfo=UTC)
    value = wire.encode(schema_id, parsed, {"venue_code": "X", "at": at, "mid": Decimal("12.345678"), "note": None})
    decoder = BatchDecoder(data_type="ticks", registry=registry)
    try:
        result = decoder.decode([value], [0], [9], topics="market.equities.ticks.asx")
    finally:
        decoder.close()
    assert result.poison == []
    row = result.table.drop_columns([INDEX_COLUMN]).to_pylist()[0]
    assert row == {"venue_code": "X", "at": at, "mid": Decimal("12.345678"), "note": None, "source_partition": 0,
                   "source_offset": 9, "source_topic": "market.equities.ticks.asx", "source_topic_id": None}


def test_unsequenced_type_gets_no_sequence_numbers_and_keys_by_its_key_field(tick: DataType) -> None:
    assert spec("trades").sequenced and spec("quotes").sequenced
    assert not spec("reference_data").sequenced and not tick.sequenced
    trades = RowParser(data_type="trades", exchange="asx", header=["symbol", "company_id", "exchange_timestamp",
                                                                   "price", "volume", "qualifiers", "venue"])
    assert trades.assign_sequence
    ref = RowParser(data_type="reference_data", exchange="asx", header=["company_id", "symbol", "company_name"])
    assert not ref.assign_sequence
    record = ref.parse(["42", "BHP", "BHP Group"], 2)
    assert "sequence_number" not in record
    assert key_of("reference_data", record) == b"42"
    assert key_of("trades", {"symbol": "BHP", "company_id": 42}) == b"BHP"
    assert tick.key_of({"venue_code": "XASX"}) == b"XASX"


def test_reference_data_is_read_at_its_latest_whatever_the_as_of_point() -> None:
    assert spec("trades").time_travel and spec("quotes").time_travel
    assert not spec("reference_data").time_travel


def test_a_spec_that_does_not_match_its_avsc_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tick.avsc").write_text(json.dumps(TICK_AVSC))
    with pytest.raises(ValueError, match="key_field 'symbol' is not a field of tick.avsc"):
        DataType("ticks", "tick.avsc", key_field="symbol", partition_source=None, sort_columns=(), schema_dir=tmp_path)
    with pytest.raises(ValueError, match="day partitioning needs a timestamp, 'venue_code' is not one"):
        DataType("ticks", "tick.avsc", key_field="venue_code", partition_source="venue_code", sort_columns=(),
                 schema_dir=tmp_path)
    odd = {**TICK_AVSC, "fields": [*TICK_AVSC["fields"], {"name": "x", "type": ["null", "string", "long"]}]}
    (tmp_path / "odd.avsc").write_text(json.dumps(odd))
    with pytest.raises(ValueError, match="odd.avsc field 'x': only \\[null, T\\] unions"):
        DataType("odd", "odd.avsc", key_field="venue_code", partition_source=None, sort_columns=(),
                 schema_dir=tmp_path).iceberg_schema()
    with pytest.raises(ValueError, match="unknown data type 'candles'"):
        spec("candles")
