"""How the engine finds a table: a small interface over the Iceberg catalog.

The Django side passes `catalog.selectors.get_catalog()` and the namespace; tests and
benchmarks pass a catalog built from a `CatalogConfig`. The engine only needs the current
metadata location of a table and its snapshots, so time travel (`as_of`) is resolved here,
against the table's own snapshot log, before DuckDB is asked to read.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from k2core.datatypes import DATA_TYPES  # noqa: F401 - re-exported
from queries.engine.errors import BadQuery, NotFound


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: int
    parent_id: int | None
    committed_at: dt.datetime
    operation: str | None
    summary: dict[str, str]


@dataclass(frozen=True)
class ResolvedTable:
    """A table pinned to one snapshot (None: the table has no snapshot yet, so it is empty)."""

    name: str
    metadata_location: str
    snapshot_id: int | None
    table: Table | None = None


class TailRows(Protocol):
    """What a fresh read returns (`ingestion.engine.tail.TailRead`)."""

    table: Any  # pa.Table in the data type's Arrow schema

    def describe(self) -> dict[str, Any]: ...


class StreamTail(Protocol):
    """Reads what is on a data type's topics beyond a pinned table (`ingestion.engine.tail.KafkaTail`).
    `metadata_ttl_s`: how old what a fresh read takes as where things stand may be (the table it
    reads beyond included: the rows beyond it come from the stream)."""

    metadata_ttl_s: float

    def read(self, data_type: str, table: Table | None) -> TailRows: ...


class TableSource(Protocol):
    def resolve(self, data_type: str, as_of: int | dt.datetime | None = None, *,
                max_age_s: float = 0.0) -> ResolvedTable: ...

    def snapshots(self, data_type: str) -> list[SnapshotInfo]: ...

    def warehouse(self) -> str: ...


class IcebergSource:
    """A `TableSource` over a pyiceberg catalog and one namespace.

    Loading a table reads and validates its whole metadata JSON (every snapshot kept: ~1 KB each,
    so megabytes for a long-running table). Metadata files are immutable (each commit writes a new
    one under a new name), so with an SQL catalog each query asks only for the table's current
    metadata location (one indexed row) and loads the table again only when that has changed.

    `max_age_s` (a fresh read's): the table as loaded or checked at most that long ago is taken
    without asking the catalog. A fresh read reads the stream beyond whatever snapshot it is given,
    so its answer holds the same rows; it is spared a catalog round trip, and the load of a new
    metadata file after every commit (tens of milliseconds for a table with many snapshots)."""

    def __init__(self, catalog: Catalog, namespace: str) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self._loaded: dict[str, Table] = {}
        self._checked: dict[str, float] = {}  # when each held table was last loaded or found current (monotonic)

    def load(self, data_type: str, max_age_s: float = 0.0) -> Table:
        if data_type not in DATA_TYPES:
            raise NotFound(f"unknown table {data_type!r}: the tables are {', '.join(DATA_TYPES)}", field="table")
        identifier = f"{self.namespace}.{data_type}"
        held = self._loaded.get(identifier)
        now = time.monotonic()
        if held is not None and max_age_s > 0 and now - self._checked.get(identifier, -math.inf) < max_age_s:
            return held
        if held is not None and held.metadata_location == self._current_location(data_type):
            self._checked[identifier] = now
            return held
        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            raise NotFound(f"table {self.namespace}.{data_type} does not exist yet: start a consumer for {data_type} "
                           "(or run `manage.py init_catalog`) so it is created", field="table") from None
        self._loaded[identifier] = table
        self._checked[identifier] = now
        return table

    def _current_location(self, data_type: str) -> str | None:
        """The table's current metadata location, from the SQL catalog's row (None for another
        kind of catalog or no row: the caller then loads the table)."""
        if not isinstance(self.catalog, SqlCatalog):
            return None
        with Session(self.catalog.engine) as session:
            return session.execute(select(IcebergTables.metadata_location).where(
                IcebergTables.catalog_name == self.catalog.name, IcebergTables.table_namespace == self.namespace,
                IcebergTables.table_name == data_type)).scalar()

    def resolve(self, data_type: str, as_of: int | dt.datetime | None = None, *,
                max_age_s: float = 0.0) -> ResolvedTable:
        table = self.load(data_type, max_age_s)
        return ResolvedTable(name=data_type, metadata_location=table.metadata_location,
                             snapshot_id=resolve_snapshot(table, as_of), table=table)

    def snapshots(self, data_type: str) -> list[SnapshotInfo]:
        return snapshot_infos(self.load(data_type))

    def warehouse(self) -> str:
        props: dict[str, Any] = getattr(self.catalog, "properties", {}) or {}
        return str(props.get("warehouse", ""))


def snapshot_infos(table: Table) -> list[SnapshotInfo]:
    out = []
    for snap in table.snapshots():
        summary = snap.summary.model_dump() if snap.summary is not None else {}
        operation = summary.pop("operation", None)
        out.append(SnapshotInfo(
            snapshot_id=snap.snapshot_id, parent_id=snap.parent_snapshot_id,
            committed_at=dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=dt.UTC),
            operation=str(getattr(operation, "value", operation)) if operation is not None else None,
            summary={k: str(v) for k, v in summary.items()}))
    return out


def resolve_snapshot(table: Table, as_of: int | dt.datetime | None) -> int | None:
    """The snapshot to read: the current one, the one with this id, or the one current at
    this instant (the newest committed at or before it)."""
    if as_of is None:
        current = table.current_snapshot()
        return current.snapshot_id if current else None
    if isinstance(as_of, int):
        if table.snapshot_by_id(as_of) is None:
            raise NotFound(f"snapshot {as_of} is not in the table's history (it never existed or was expired): "
                           "list the snapshots with /snapshots", field="as_of")
        return as_of
    if as_of.tzinfo is None:
        raise BadQuery("as_of must be a UTC instant with an offset, e.g. 2024-03-11T05:00:00Z", field="as_of")
    millis = int(as_of.timestamp() * 1000)
    candidates = [s for s in table.snapshots() if s.timestamp_ms <= millis]
    if not candidates:
        first = min((s.timestamp_ms for s in table.snapshots()), default=None)
        hint = (f"the oldest snapshot kept was committed at {dt.datetime.fromtimestamp(first / 1000, tz=dt.UTC).isoformat()}"
                if first is not None else "the table has no snapshots yet")
        raise NotFound(f"no snapshot of {table.name()[-1]} existed at {as_of.isoformat()}: {hint}", field="as_of")
    return max(candidates, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)).snapshot_id
