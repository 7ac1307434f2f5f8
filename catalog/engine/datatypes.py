"""One spec per data type (trades, quotes, reference data), read from its `.avsc` file.

Everything that differs between the data types is an attribute here, and every other module
asks the spec instead of comparing names: the Iceberg schema, the Arrow schema a batch must
have, the partition spec and sort order, the decimal columns the decoder converts, the message
key, whether a stream carries sequence numbers (gap tracking), whether queries read it as of a
point in time. The columns and their types come from the Avro schema; what Avro cannot say
(key, partitioning, sort order, time travel) is declared beside the file name, and checked
against the schema when the spec is built.

Iceberg field ids follow the column order (pyiceberg assigns fresh ids the same way when it
creates a table): the Avro fields, then the lineage columns. Columns added after tables
existed (`added_later`) are appended at the end, so a table created by an older K2 and brought
up to date by schema evolution (`catalog.engine.iceberg.evolve_schema`) has the same ids as a
table created today.

Plain Python, no Django import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DecimalType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from k2core.datatypes import DATA_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SEQUENCE_COLUMN = "sequence_number"
PARTITION_FIELD_ID = 1000  # Iceberg's first partition field id
DAY_PARTITION_NAME = "exchange_date"  # data model: day(exchange_timestamp) named exchange_date (ADR #002)


@dataclass(frozen=True)
class Lineage:
    """A column the consumer fills with where a row came from in Kafka (not in the Avro record)."""

    name: str
    type: IcebergType
    required: bool
    added_later: bool = False  # not in tables created before it: added by schema evolution, optional


# The Kafka position of a row (data model: source_partition, source_offset). With the topic they
# identify a row; the topic name alone is not unique across broker lifetimes (a re-created topic
# starts again at offset 0), its Kafka topic id is: both are kept, the id NULL where the broker has
# none. Rows written before the topic columns existed read NULL there.
LINEAGE: tuple[Lineage, ...] = (
    Lineage("source_partition", IntegerType(), required=True),
    Lineage("source_offset", LongType(), required=True),
    Lineage("source_topic", StringType(), required=False, added_later=True),
    Lineage("source_topic_id", StringType(), required=False, added_later=True),
)
LINEAGE_COLUMNS = tuple(c.name for c in LINEAGE)


def _iceberg_type(avro: Any, where: str) -> tuple[IcebergType, bool]:
    """(Iceberg type, required) of an Avro field type; ValueError naming the field otherwise."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1 or len(avro) != 2:
            raise ValueError(f"{where}: only [null, T] unions are supported, got {avro!r}")
        return _iceberg_type(branches[0], where)[0], False
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if avro.get("type") == "bytes" and logical == "decimal":
            return DecimalType(int(avro["precision"]), int(avro.get("scale", 0))), True
        if avro.get("type") == "long" and logical == "timestamp-micros":
            return TimestamptzType(), True
        if logical is None and isinstance(avro.get("type"), str):
            return _iceberg_type(avro["type"], where)
        raise ValueError(f"{where}: Avro type {avro!r} has no Iceberg column type in K2")
    simple = {"string": StringType(), "int": IntegerType(), "long": LongType()}
    if avro in simple:
        return simple[avro], True
    raise ValueError(f"{where}: Avro type {avro!r} has no Iceberg column type in K2")


@dataclass(frozen=True)
class DataType:
    """A data type: its table, topic segment and Avro record, and how each is handled."""

    name: str  # table name and the `{data_type}` of `market.{asset_class}.{data_type}.{exchange}`
    avsc: str  # file in catalog/schemas/
    key_field: str  # the Kafka message key (ADR #009)
    partition_source: str | None  # day(<column>) partitioning (ADR #002); None: unpartitioned
    sort_columns: tuple[str, ...]  # the table's sort order; the writer sorts each batch by it
    time_travel: bool = True  # queries read it as of a snapshot/instant; False: always the latest
    schema_dir: Path = field(default=SCHEMA_DIR, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = set(self.avro_field_names)
        for what, column in [("key_field", self.key_field), ("partition_source", self.partition_source),
                             *(("sort_columns", c) for c in self.sort_columns)]:
            if column is not None and column not in names:
                raise ValueError(f"data type {self.name!r}: {what} {column!r} is not a field of {self.avsc}")
        if self.partition_source is not None and self.column_type(self.partition_source) != TimestamptzType():
            raise ValueError(f"data type {self.name!r}: day partitioning needs a timestamp, "
                             f"{self.partition_source!r} is not one")

    # --- from the .avsc -------------------------------------------------------------------
    @cached_property
    def avro(self) -> dict[str, Any]:
        return json.loads((self.schema_dir / self.avsc).read_text())

    @property
    def schema_text(self) -> str:
        """The canonical JSON text of the Avro schema (what is registered)."""
        return json.dumps(self.avro, separators=(",", ":"))

    @property
    def avro_field_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.avro["fields"])

    @cached_property
    def _columns(self) -> tuple[tuple[str, IcebergType, bool], ...]:
        cols = [(f["name"], *_iceberg_type(f["type"], f"{self.avsc} field {f['name']!r}")) for f in self.avro["fields"]]
        return (*cols, *((c.name, c.type, c.required) for c in LINEAGE))

    def column_type(self, name: str) -> IcebergType:
        return next(t for n, t, _ in self._columns if n == name)

    @property
    def decimal_columns(self) -> tuple[str, ...]:
        """Avro `bytes`/decimal fields: the decoder turns their big-endian bytes into Decimal128."""
        return tuple(n for n, t, _ in self._columns if isinstance(t, DecimalType))

    @property
    def sequenced(self) -> bool:
        """Each event carries `sequence_number` per stream (exchange, symbol): gaps are tracked
        (ADR #014) and the producer numbers a file without one."""
        return SEQUENCE_COLUMN in self.avro_field_names

    @property
    def partitioned(self) -> bool:
        return self.partition_source is not None

    # --- what is built from it --------------------------------------------------------------
    def iceberg_schema(self) -> Schema:
        return Schema(*(NestedField(i, name, typ, required=required)
                        for i, (name, typ, required) in enumerate(self._columns, start=1)))

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema a batch must have to be appended (timestamps in µs, UTC)."""
        return self.iceberg_schema().as_arrow()

    def partition_spec(self) -> PartitionSpec:
        if self.partition_source is None:
            return UNPARTITIONED_PARTITION_SPEC
        source = self.iceberg_schema().find_field(self.partition_source).field_id
        return PartitionSpec(PartitionField(source_id=source, field_id=PARTITION_FIELD_ID, transform=DayTransform(),
                                            name=DAY_PARTITION_NAME))

    def sort_order(self) -> SortOrder:
        if not self.sort_columns:
            return UNSORTED_SORT_ORDER
        schema = self.iceberg_schema()
        return SortOrder(*(SortField(source_id=schema.find_field(name).field_id, transform=IdentityTransform())
                           for name in self.sort_columns))

    def key_of(self, record: dict[str, Any]) -> bytes:
        """The message key of a record (UTF-8 of the key field)."""
        return str(record[self.key_field]).encode()


# Symbol first lets a one-symbol query skip every other symbol's row groups (data model).
EVENT_SORT_COLUMNS = ("symbol", "exchange_timestamp", SEQUENCE_COLUMN)
SPECS: dict[str, DataType] = {spec.name: spec for spec in (
    DataType("trades", "trade.avsc", key_field="symbol", partition_source="exchange_timestamp",
             sort_columns=EVENT_SORT_COLUMNS),
    DataType("quotes", "quote.avsc", key_field="symbol", partition_source="exchange_timestamp",
             sort_columns=EVENT_SORT_COLUMNS),
    # Reference data describes companies, not events: keyed and read by company, unpartitioned,
    # unsorted, no sequence numbers, and queries read its latest state whatever the as-of point.
    DataType("reference_data", "reference_data.avsc", key_field="company_id", partition_source=None,
             sort_columns=(), time_travel=False),
)}
if tuple(SPECS) != DATA_TYPES:  # the names are declared once, in k2core (the bottom layer)
    raise RuntimeError(f"data-type specs {tuple(SPECS)} do not match k2core.datatypes.DATA_TYPES {DATA_TYPES}")
PARTITIONED_TYPES: tuple[str, ...] = tuple(name for name, s in SPECS.items() if s.partitioned)  # what compaction rewrites


def spec(data_type: str) -> DataType:
    """The spec of a data type; ValueError naming the known ones otherwise."""
    try:
        return SPECS[data_type]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data type {data_type!r}: expected one of {', '.join(DATA_TYPES)}") from None
