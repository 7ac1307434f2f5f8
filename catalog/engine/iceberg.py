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
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortOrder

from catalog.engine.datatypes import DATA_TYPES, EVENT_SORT_COLUMNS, LINEAGE, spec
from catalog.engine.storage import S3Options

CATALOG_NAME = "k2"
NAMESPACE = "market_data"
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


def table_schema(data_type: str) -> Schema:
    """The table's Iceberg schema, built from the data type's `.avsc` (catalog.engine.datatypes)."""
    return spec(data_type).iceberg_schema()


def arrow_schema(data_type: str) -> pa.Schema:
    """The Arrow schema a batch must have to be appended (timestamps in µs, UTC)."""
    return spec(data_type).arrow_schema()


def partition_spec(data_type: str) -> PartitionSpec:
    """ADR #002: day(exchange_timestamp) named exchange_date, or none (the spec says which)."""
    return spec(data_type).partition_spec()


def sort_order(data_type: str) -> SortOrder:
    return spec(data_type).sort_order()


SORT_COLUMNS = EVENT_SORT_COLUMNS  # the sort of the event tables (trades, quotes)


def table_identifier(data_type: str, namespace: str = NAMESPACE) -> str:
    return f"{namespace}.{data_type}"


def _with_properties(table: Table, wanted: dict[str, str]) -> Table:
    """Set table properties an older K2 did not (tables created before them), once."""
    missing = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
    if missing:
        with table.transaction() as tx:
            tx.set_properties(**missing)
    return table


def evolve_schema(table: Table) -> Table:
    """Add the columns a table created by an older K2 lacks (lineage columns added later), by
    Iceberg schema evolution: no file is rewritten, rows written before read NULL there, and the
    new field ids are the ones a table created today has (they come last in both). Idempotent."""
    present = set(table.schema().column_names)
    missing = [c for c in LINEAGE if c.added_later and c.name not in present]
    if not missing:
        return table
    with table.update_schema() as update:
        for column in missing:  # optional: a column added to a table with rows cannot be required
            update.add_column(column.name, column.type, doc="Kafka lineage (added by K2 schema evolution)")
    return table


def add_missing_columns(table: Table, names: list[str]) -> bool:
    """Evolve `table` to hold lineage columns a batch carries and the table lacks (a table
    created by an older K2, evolved by the writer at its first append). True when the table
    changed; False when nothing of `names` is such a column (a mismatch then fails the append)."""
    present = set(table.schema().column_names)
    later = {c.name for c in LINEAGE if c.added_later}
    if not any(n in later and n not in present for n in names):
        return False
    evolve_schema(table)
    return True


def ensure_tables(catalog: Catalog, namespace: str = NAMESPACE) -> dict[str, Table]:
    """Create the namespace and the three tables when missing, and bring existing ones up to
    date: table properties and the columns added since they were created (idempotent)."""
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    tables: dict[str, Table] = {}
    for data_type in DATA_TYPES:
        identifier = table_identifier(data_type, namespace)
        try:
            table = _with_properties(catalog.load_table(identifier), MANIFEST_PROPERTIES)
            tables[data_type] = evolve_schema(table)
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
                tables[data_type] = evolve_schema(catalog.load_table(identifier))
    return tables
