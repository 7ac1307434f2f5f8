"""Saved SQL, read-only and sandboxed.

Exactly one SELECT (or WITH … SELECT) statement, checked by DuckDB's own parser. It runs on
a fresh DuckDB connection where `trades`, `quotes` and `reference_data` are views over
`iceberg_scan`, after which file access outside the warehouse is disabled
(`allowed_directories` = the warehouse, `enable_external_access=false`) and the
configuration is locked (`lock_configuration=true`), so `read_csv('/etc/passwd')`, COPY,
ATTACH, INSTALL, LOAD, PRAGMA, SET and writes fail. Before that, DuckDB's own parse tree
(`json_serialize_sql`) is walked: the statement may read only those three tables (and its own
WITH names), the table functions `range`/`generate_series`/`unnest`, and no function that shows
the server's configuration (`current_setting`, `duckdb_*`, …), so neither the warehouse's raw
files nor server paths are reachable. Parameters are bound by DuckDB (`$name`), never pasted
into the SQL. Each run has its own DuckDB database with a memory limit and no spill directory;
a timer thread interrupts a query that runs past its timeout; results are capped at a row
limit and a size in bytes, checked batch by batch while they are fetched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import duckdb
import pyarrow as pa

from catalog.engine.datatypes import spec as data_type_spec
from k2core.datatypes import DATA_TYPES
from k2core.duckdb_conn import connect
from queries.engine.connection import EngineConfig
from queries.engine.errors import BadQuery, NotFound, QueryError, QueryTimeout, ResourceLimit, SandboxViolation
from queries.engine.market import scan_expr
from queries.engine.source import TableSource

PARAM_TYPES = ("string", "integer", "decimal", "float", "boolean", "date", "timestamp")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ROW_CAP = 100_000
FETCH_ROWS = 1024  # rows per fetched batch: the size cap is checked this often
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
DENIED_FUNCTIONS = frozenset({"current_setting", "getenv", "current_schemas", "which_secret", "version",
                              "platform", "pragma_version", "pragma_platform"})
_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)


@dataclass
class SandboxResult:
    table: pa.Table
    truncated: bool
    snapshot_ids: dict[str, int | None]
    deadline: float = float("inf")  # time.monotonic() by which the caller must have answered (encoding included)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def referenced_tables(sql: str) -> set[str]:
    """The market tables the statement reads; SandboxViolation for anything else it would read
    (files, catalog views, other table functions, configuration functions). The sandbox's
    `allowed_directories` alone is not enough on S3: DuckDB compares the URL as text, so
    's3://bucket/warehouse/../elsewhere' passes its check and the HTTP layer resolves the '..';
    a path used as a table name or a file-reading function never gets that far."""
    conn = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        text = conn.execute("SELECT json_serialize_sql($1)", [sql]).fetchone()[0]
    except duckdb.Error as exc:
        raise BadQuery(f"the SQL does not parse: {exc}", field="sql") from None
    finally:
        conn.close()
    try:
        tree = json.loads(text)
    except RecursionError:
        raise BadQuery("the SQL is nested too deeply", field="sql") from None
    if tree.get("error"):
        raise BadQuery(f"the SQL does not parse: {tree.get('error_message', 'unknown error')}", field="sql")
    nodes = list(_nodes(tree))
    ctes = {entry["key"].lower() for node in nodes if isinstance(node.get("cte_map"), dict)
            for entry in node["cte_map"].get("map", []) if isinstance(entry, dict) and "key" in entry}
    tables: set[str] = set()
    for node in nodes:
        kind = node.get("type")
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", "")).lower()
            qualified = node.get("schema_name") or node.get("catalog_name")
            if qualified or name not in (*DATA_TYPES, *ctes):
                shown = ".".join(str(p) for p in (node.get("catalog_name"), node.get("schema_name"), node.get("table_name")) if p)
                raise SandboxViolation(f"refused by the sandbox: saved SQL may read only {', '.join(DATA_TYPES)} (and its own WITH names); "
                                       f"it reads {shown!r}", field="sql")
            if name in DATA_TYPES and name not in ctes:
                tables.add(name)
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS or function.get("schema") or function.get("catalog"):
                raise SandboxViolation(f"refused by the sandbox: saved SQL may not call the table function {name}(): only "
                                       f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))} are allowed", field="sql")
        elif node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in DENIED_FUNCTIONS or name.startswith(("duckdb_", "pragma_")):
                raise SandboxViolation(f"refused by the sandbox: saved SQL may not call {name}(): it shows the server's configuration",
                                       field="sql")
    return tables


def check_statement(sql: str) -> duckdb.Statement:
    """The one SELECT statement of `sql`; SandboxViolation naming what else was found."""
    if not sql or not sql.strip():
        raise BadQuery("the SQL is empty: write one SELECT statement", field="sql")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadQuery(f"the SQL does not parse: {exc}", field="sql") from None
    if len(statements) != 1:
        raise SandboxViolation(f"saved SQL must be exactly one statement; found {len(statements)}: "
                               "remove the extra statements (a trailing ';' is fine)", field="sql")
    statement = statements[0]
    # DuckDB turns some non-SELECT commands (PRAGMA, SHOW, DESCRIBE, SUMMARIZE) into SELECTs,
    # so the statement's own first keyword must be SELECT or WITH as well.
    stripped = _LEADING.sub("", sql)
    first = re.split(r"[\s(;]", stripped, maxsplit=1)[0].upper() if stripped else ""
    if statement.type != duckdb.StatementType.SELECT or first not in ("SELECT", "WITH"):
        kind = statement.type.name if statement.type != duckdb.StatementType.SELECT else first
        raise SandboxViolation(f"saved SQL is read-only: a {kind} statement is not allowed; write one SELECT "
                               "(or WITH … SELECT) statement", field="sql")
    referenced_tables(statement.query)
    return statement


def coerce_param(name: str, kind: str, value: Any) -> Any:
    """A parameter value converted to its declared type; BadQuery naming the parameter."""
    if value is None:
        return None
    try:
        if kind == "string":
            return str(value)
        if kind == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "decimal":
            return Decimal(str(value))
        if kind == "float":
            return float(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low in ("1", "true", "yes"):
                return True
            if low in ("0", "false", "no"):
                return False
            raise ValueError
        if kind == "date":
            return value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else dt.date.fromisoformat(str(value))
        if kind == "timestamp":
            stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                raise BadQuery(f"parameter {name}={value!r} needs a UTC offset, e.g. 2024-03-11T05:00:00Z", field=name)
            return stamp.astimezone(dt.UTC)
    except (ValueError, TypeError, InvalidOperation):
        raise BadQuery(f"parameter {name}={value!r} is not a valid {kind}", field=name) from None
    raise BadQuery(f"parameter {name} has an unknown type {kind!r}: use one of {', '.join(PARAM_TYPES)}", field=name)


def check_declarations(declarations: Mapping[str, Mapping[str, Any]]) -> None:
    if not isinstance(declarations, Mapping):
        raise BadQuery('parameters must be an object: {"name": {"type": "string", "default": "BHP"}}', field="parameters")
    for name, spec in declarations.items():
        if not PARAM_NAME_RE.match(name):
            raise BadQuery(f"parameter name {name!r} is not valid: letters, digits and _", field="parameters")
        if not isinstance(spec, Mapping) or spec.get("type") not in PARAM_TYPES:
            raise BadQuery(f"parameter {name} needs a type, one of {', '.join(PARAM_TYPES)}", field="parameters")
        if spec.get("default") is not None:
            coerce_param(name, spec["type"], spec["default"])


def bind_params(statement: duckdb.Statement, declarations: Mapping[str, Mapping[str, Any]],
                values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters DuckDB binds: declared ones only, given value or default, typed."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(declarations))
    if unknown:
        raise BadQuery(f"unknown parameter(s) {', '.join(unknown)}; this query takes: "
                       f"{', '.join(sorted(declarations)) or 'no parameters'}", field=unknown[0])
    used = set(statement.named_parameters)
    undeclared = sorted(used - set(declarations))
    if undeclared:
        raise BadQuery(f"the SQL uses ${', $'.join(undeclared)} but does not declare it: add it to the parameters",
                       field="parameters")
    bound: dict[str, Any] = {}
    for name in sorted(used):
        spec = declarations[name]
        value = values.get(name, spec.get("default"))
        if value is None and spec.get("required", True) and "default" not in spec:
            raise BadQuery(f"parameter {name} is required (type {spec['type']})", field=name)
        bound[name] = coerce_param(name, spec["type"], value)
    return bound


def validate(sql: str, declarations: Mapping[str, Mapping[str, Any]]) -> None:
    """Save-time check: one SELECT, declared parameters, and it binds against empty tables
    with the real schemas (unknown columns or tables are caught before anyone runs it)."""
    statement = check_statement(sql)
    check_declarations(declarations)
    from catalog.engine.iceberg import arrow_schema

    conn = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        for data_type in DATA_TYPES:
            conn.register(f"_empty_{data_type}", arrow_schema(data_type).empty_table())
            conn.execute(f"CREATE VIEW {data_type} AS SELECT * FROM _empty_{data_type}")
        _lock(conn, allowed=[])
        params = {name: (coerce_param(name, spec["type"], spec.get("default")) if spec.get("default") is not None
                         else _sample(spec["type"])) for name, spec in declarations.items()
                  if name in statement.named_parameters}
        missing = set(statement.named_parameters) - set(declarations)
        if missing:
            raise BadQuery(f"the SQL uses ${', $'.join(sorted(missing))} but does not declare it: add it to the parameters",
                           field="parameters")
        query = statement.query.strip().rstrip(";")  # a trailing ';' is fine at run time, so at save time too
        conn.execute(f"SELECT * FROM ({query}\n) LIMIT 0", params)  # \n: a trailing -- comment ends there
    except duckdb.PermissionException as exc:
        raise SandboxViolation(f"refused by the sandbox: {exc}. Saved SQL may read only trades, quotes and reference_data",
                               field="sql") from None
    except duckdb.Error as exc:
        raise BadQuery(f"the SQL does not run against the tables: {exc}", field="sql") from None
    finally:
        conn.close()


def _sample(kind: str) -> Any:
    return {"string": "X", "integer": 1, "decimal": Decimal("1"), "float": 1.0, "boolean": True,
            "date": dt.date(2024, 1, 1), "timestamp": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}[kind]


def _lock(conn: duckdb.DuckDBPyConnection, allowed: list[str]) -> None:
    if allowed:
        listed = ", ".join("'" + a.replace("'", "''") + "'" for a in allowed)
        conn.execute(f"SET allowed_directories = [{listed}]")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def _allowed_dirs(warehouse: str) -> list[str]:
    if not warehouse:
        return []
    dirs = [warehouse.rstrip("/") + "/"]
    if warehouse.startswith("file://"):
        dirs.append(warehouse[len("file://"):].rstrip("/") + "/")
    return dirs


def _scrub(message: str, hidden: list[str]) -> str:
    """An error message without server paths (the warehouse's location)."""
    for path in sorted(hidden, key=len, reverse=True):
        if path and path != "/":
            message = message.replace(path, "<warehouse>/")
    return message


def run(*, source: TableSource, sql: str, declarations: Mapping[str, Mapping[str, Any]],
        params: Mapping[str, Any] | None = None, row_limit: int = 10_000, timeout_s: float = 30.0,
        as_of: int | dt.datetime | None = None, config: EngineConfig | None = None,
        memory_limit: str | None = "1GB", max_result_bytes: int | None = None) -> SandboxResult:
    """Run saved SQL in the sandbox. Raises BadQuery/SandboxViolation (400), NotFound (404: an
    `as_of` no table read has), ResourceLimit (422: memory or result size), QueryTimeout (504)."""
    deadline = time.monotonic() + timeout_s
    statement = check_statement(sql)
    used = referenced_tables(statement.query)
    bound = bind_params(statement, declarations, params)
    row_limit = max(1, min(int(row_limit), ROW_CAP))
    config = dataclasses.replace(config or EngineConfig(), memory_limit=memory_limit)
    conn = connect(config)
    hidden = _allowed_dirs(source.warehouse())
    snapshot_ids: dict[str, int | None] = {}
    locations: list[str] = []  # the tables' own directories (a REST catalog's warehouse may be a name)
    try:
        conn.execute("SET temp_directory = ''")  # nothing spills to disk: the memory limit is the bound
        for data_type in DATA_TYPES:
            resolved = None
            if data_type in used:
                try:
                    resolved = source.resolve(data_type, as_of if data_type_spec(data_type).time_travel else None)
                except NotFound as exc:
                    if exc.field == "as_of":  # the time-travel point does not exist: say so, never "no rows"
                        raise
                    resolved = None  # a table not created yet reads as empty
                except QueryError:
                    raise
                except Exception:  # noqa: BLE001 - a missing table is an empty view, not a failure
                    resolved = None
            if resolved is not None:
                snapshot_ids[data_type] = resolved.snapshot_id
                if resolved.table is not None:
                    locations.append(resolved.table.location())
            if resolved is None or resolved.snapshot_id is None:
                conn.register(f"_empty_{data_type}", _empty(data_type))
                conn.execute(f"CREATE VIEW {data_type} AS SELECT * FROM _empty_{data_type}")
            else:
                conn.execute(f"CREATE VIEW {data_type} AS SELECT * FROM {scan_expr(resolved)}")
        hidden = sorted({d for where in (source.warehouse(), *locations) for d in _allowed_dirs(where)})
        _lock(conn, hidden)
        # Interrupt at the deadline and keep interrupting until the run ends: an interrupt that
        # lands before DuckDB starts executing the statement is lost (a short timeout on a busy
        # machine), and the query would then run unbounded.
        finished = threading.Event()

        def interrupt_past_deadline() -> None:
            if finished.wait(max(deadline - time.monotonic(), 0.001)):
                return
            while not finished.is_set():
                conn.interrupt()
                finished.wait(0.05)

        timer = threading.Thread(target=interrupt_past_deadline, daemon=True, name="k2-query-deadline")
        timer.start()
        try:
            reader = conn.execute(statement.query, bound).to_arrow_reader(min(row_limit + 1, FETCH_ROWS))
            batches, rows, size = [], 0, 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                size += batch.nbytes
                if max_result_bytes is not None and size > max_result_bytes:
                    raise ResourceLimit(f"the result is larger than the {max_result_bytes:,} bytes a saved query may "
                                        "return: select fewer columns or rows, or aggregate", field="sql")
                if rows > row_limit:
                    break
                if time.monotonic() > deadline:
                    raise duckdb.InterruptException("deadline")
            table = pa.Table.from_batches(batches, schema=reader.schema)
        finally:
            finished.set()
    except duckdb.InterruptException:
        raise QueryTimeout(f"the query ran longer than its {timeout_s:g} s timeout and was stopped: "
                           "narrow the time range or add filters, or raise the saved query's timeout") from None
    except duckdb.OutOfMemoryException:
        raise ResourceLimit(f"the query needed more than its {memory_limit} memory limit and was stopped: "
                            "narrow the time range, add filters or aggregate earlier", field="sql") from None
    except duckdb.PermissionException as exc:
        raise SandboxViolation(f"refused by the sandbox: {_scrub(str(exc), hidden)}. Saved SQL may read only trades, "
                               "quotes and reference_data", field="sql") from None
    except duckdb.Error as exc:
        raise BadQuery(f"the query failed: {_scrub(str(exc), hidden)}", field="sql") from None
    finally:
        conn.close()
    truncated = table.num_rows > row_limit
    return SandboxResult(table.slice(0, row_limit) if truncated else table, truncated, snapshot_ids, deadline)


def _empty(data_type: str) -> pa.Table:
    from catalog.engine.iceberg import arrow_schema

    return arrow_schema(data_type).empty_table()
