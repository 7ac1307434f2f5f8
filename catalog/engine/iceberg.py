"""The Iceberg catalog `k2` and the market_data tables (data model, ADR #002).

The catalog is pyiceberg's SQL catalog (the Iceberg JDBC-catalog tables in Postgres), or, for
an http(s):// URI, an Iceberg REST catalog; either way Spark, Trino or Flink can read the same
tables. Data files are Parquet (zstd) under the warehouse (local disk or S3: the catalog gets
the S3 FileIO properties, see `catalog.engine.storage`). Tables are partitioned by `day(exchange_timestamp)` (field `exchange_date`, UTC
days) and carry the sort order symbol, exchange_timestamp, sequence_number: pyiceberg
records a sort order but does not sort on write, so the writer sorts each batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
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

from catalog.engine.storage import S3Options

CATALOG_NAME = "k2"
NAMESPACE = "market_data"
PRICE = DecimalType(18, 6)
# A consumer commits a snapshot per batch and a fast append adds one manifest per commit: the
# manifest list (rewritten by every commit) and every DuckDB query (which opens every manifest)
# then cost more with each batch until maintenance compacts. Merge appends fold small
# manifests into one once 16 of them fill a bin of 64 KB, so the count stays in single digits
# and each merge rewrites little (docs/benchmarks.md: "Manifests per commit").
# Each commit also writes a new metadata JSON (every snapshot kept is in it, ~1 KB each); with a
# commit every 50-500 ms, keeping the old files until orphan cleanup (an hour) would mean
# gigabytes of them: the newest 100 are kept, older ones deleted by the commit itself.
MANIFEST_PROPERTIES = {
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    "commit.manifest.target-size-bytes": str(64 * 1024),
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(256 * 1024 * 1024),
    "format-version": "2",
    **MANIFEST_PROPERTIES,
}


@dataclass(frozen=True)
class CatalogConfig:
    uri: str
    warehouse: str
    namespace: str = NAMESPACE
    name: str = CATALOG_NAME
    s3: S3Options | None = None  # how to reach an s3:// warehouse (endpoint, region, credentials)

    @property
    def is_rest(self) -> bool:
        return is_rest_uri(self.uri)


def is_rest_uri(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in ("http", "https")


def load_catalog(config: CatalogConfig) -> Catalog:
    """The SQL catalog (its tables are created in the database on first use), or pyiceberg's
    RestCatalog for an http(s):// URI; with the S3 FileIO properties when `config.s3` is set."""
    properties = {"warehouse": config.warehouse, **(config.s3.fileio_properties() if config.s3 else {})}
    if is_rest_uri(config.uri):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(config.name, uri=config.uri, **properties)
    return SqlCatalog(config.name, uri=config.uri, **properties)


def _trade_schema() -> Schema:
    return Schema(
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
    )


def _quote_schema() -> Schema:
    return Schema(
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
    )


def _reference_schema() -> Schema:
    return Schema(
        NestedField(1, "company_id", IntegerType(), required=True),
        NestedField(2, "symbol", StringType(), required=True),
        NestedField(3, "company_name", StringType(), required=True),
        NestedField(4, "sector", StringType(), required=False),
        NestedField(5, "market_cap", LongType(), required=False),
        NestedField(6, "last_updated", TimestamptzType(), required=True),
        NestedField(7, "source_partition", IntegerType(), required=True),
        NestedField(8, "source_offset", LongType(), required=True),
    )


SCHEMAS = {"trades": _trade_schema, "quotes": _quote_schema, "reference_data": _reference_schema}


def table_schema(data_type: str) -> Schema:
    return SCHEMAS[data_type]()


def arrow_schema(data_type: str) -> pa.Schema:
    """The Arrow schema a batch must have to be appended (timestamps in µs, UTC)."""
    return table_schema(data_type).as_arrow()


def partition_spec(data_type: str) -> PartitionSpec:
    if data_type == "reference_data":
        return UNPARTITIONED_PARTITION_SPEC
    # ADR #002: day(exchange_timestamp) named exchange_date; field 4 is exchange_timestamp.
    return PartitionSpec(PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="exchange_date"))


def sort_order(data_type: str) -> SortOrder:
    if data_type == "reference_data":
        return UNSORTED_SORT_ORDER
    schema = table_schema(data_type)
    return SortOrder(*(SortField(source_id=schema.find_field(name).field_id, transform=IdentityTransform())
                       for name in ("symbol", "exchange_timestamp", "sequence_number")))


SORT_COLUMNS = ("symbol", "exchange_timestamp", "sequence_number")


def table_identifier(data_type: str, namespace: str = NAMESPACE) -> str:
    return f"{namespace}.{data_type}"


def _with_properties(table: Table, wanted: dict[str, str]) -> Table:
    """Set table properties an older K2 did not (tables created before them), once."""
    missing = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
    if missing:
        with table.transaction() as tx:
            tx.set_properties(**missing)
    return table


def ensure_tables(catalog: Catalog, namespace: str = NAMESPACE) -> dict[str, Table]:
    """Create the namespace and the three tables when missing, and bring the table properties
    of existing ones up to date (idempotent)."""
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    tables: dict[str, Table] = {}
    for data_type in SCHEMAS:
        identifier = table_identifier(data_type, namespace)
        try:
            tables[data_type] = _with_properties(catalog.load_table(identifier), MANIFEST_PROPERTIES)
        except NoSuchTableError:
            try:
                tables[data_type] = catalog.create_table(
                    identifier,
                    schema=table_schema(data_type),
                    partition_spec=partition_spec(data_type),
                    sort_order=sort_order(data_type),
                    properties=TABLE_PROPERTIES,
                )
            except TableAlreadyExistsError:  # another process won the race
                tables[data_type] = catalog.load_table(identifier)
    return tables
