"""Saved SQL sandbox: one read-only SELECT; every escape refused with a clear error;
parameters bound, never pasted; timeout interrupts; row cap."""

from __future__ import annotations

import pytest

from queries.engine import sandbox
from queries.engine.errors import BadQuery, QueryTimeout, SandboxViolation

DECL = {"symbol": {"type": "string", "default": "BHP"}}


@pytest.fixture
def run(engine):  # type: ignore[no-untyped-def]
    def _run(sql, declarations=None, params=None, **kw):  # type: ignore[no-untyped-def]
        return sandbox.run(source=engine.source, sql=sql, declarations=declarations or {}, params=params, **kw)
    return _run


def test_select_over_the_table_views_works(run, generated):
    result = run("SELECT symbol, count(*) AS n FROM trades WHERE symbol = $symbol GROUP BY symbol", DECL)
    assert result.table.to_pylist() == [{"symbol": "BHP", "n": 900}]


@pytest.mark.parametrize("sql, message", [
    ("SELECT * FROM read_csv('/etc/passwd')", "refused by the sandbox"),
    ("SELECT * FROM read_text('/etc/passwd')", "refused by the sandbox"),
    ("COPY (SELECT 1) TO '/tmp/k2-sandbox-escape.csv'", "COPY statement is not allowed"),
    ("ATTACH '/tmp/k2-sandbox-escape.db' AS x", "ATTACH statement is not allowed"),
    ("INSTALL httpfs", "statement is not allowed"),
    ("LOAD httpfs", "LOAD statement is not allowed"),
    ("PRAGMA version", "PRAGMA statement is not allowed"),
    ("SET threads = 1", "SET statement is not allowed"),
    ("CREATE TABLE x AS SELECT 1", "CREATE statement is not allowed"),
    ("INSERT INTO trades SELECT * FROM trades", "INSERT statement is not allowed"),
    ("DELETE FROM trades", "DELETE statement is not allowed"),
    ("DROP VIEW trades", "DROP statement is not allowed"),
    ("SELECT 1; SELECT 2", "exactly one statement; found 2"),
    ("SELECT 1; DROP VIEW trades", "exactly one statement; found 2"),
])
def test_each_escape_is_refused(run, generated, sql, message):
    with pytest.raises(BadQuery, match=message):
        run(sql)


@pytest.mark.parametrize("sql", ["SELECT * FROM read_csv('/etc/passwd')", "COPY (SELECT 1) TO '/tmp/x.csv'",
                                 "PRAGMA version", "SET threads=1", "SELECT 1; SELECT 2"])
def test_escapes_are_refused_at_save_time_too(sql):
    with pytest.raises(BadQuery):
        sandbox.validate(sql, {})


def test_save_time_validation_catches_unknown_columns_and_undeclared_parameters():
    with pytest.raises(BadQuery, match="does not run against the tables"):
        sandbox.validate("SELECT no_such_column FROM trades", {})
    with pytest.raises(BadQuery, match="does not declare it"):
        sandbox.validate("SELECT * FROM trades WHERE symbol = $sym", {})
    sandbox.validate("WITH b AS (SELECT * FROM trades WHERE symbol = $symbol) SELECT count(*) FROM b", DECL)


def test_parameters_are_bound_not_pasted(run, generated):
    hostile = "BHP' OR '1'='1"
    result = run("SELECT count(*) AS n FROM trades WHERE symbol = $symbol", DECL, {"symbol": hostile})
    assert result.table.to_pylist() == [{"n": 0}]


def test_parameter_type_and_unknown_name_errors_name_the_parameter(run, generated):
    decl = {"n": {"type": "integer", "default": 1}}
    with pytest.raises(BadQuery, match="parameter n='abc' is not a valid integer"):
        run("SELECT $n AS n", decl, {"n": "abc"})
    with pytest.raises(BadQuery, match="unknown parameter"):
        run("SELECT $n AS n", decl, {"m": 1})


def test_timeout_interrupts_the_query(run, generated):
    with pytest.raises(QueryTimeout, match="timeout"):
        run("SELECT count(*) FROM range(100000000000) a, range(10) b WHERE a.range % 7 = b.range", timeout_s=0.5)


def test_row_cap_truncates(run, generated):
    result = run("SELECT * FROM trades", row_limit=10)
    assert result.table.num_rows == 10 and result.truncated


def test_sandbox_violation_is_a_bad_query_subclass():
    assert issubclass(SandboxViolation, BadQuery) and SandboxViolation.status == 400


@pytest.mark.parametrize("sql", ["SHOW TABLES", "DESCRIBE trades", "SUMMARIZE trades", "FROM trades"])
def test_commands_duckdb_rewrites_into_selects_are_refused(run, generated, sql):
    with pytest.raises(SandboxViolation, match="is not allowed"):
        run(sql)


def test_leading_comments_and_parentheses_are_fine(run, generated):
    result = run("-- bars\n/* note */ (SELECT count(*) AS n FROM trades WHERE symbol = $symbol)", DECL)
    assert result.table.to_pylist() == [{"n": 900}]


def test_path_traversal_out_of_the_warehouse_is_refused(run, engine, generated):
    warehouse = engine.source.warehouse().removeprefix("file://").rstrip("/")
    with pytest.raises(SandboxViolation, match="refused by the sandbox"):
        run(f"SELECT * FROM read_text('{warehouse}/../../../../../../etc/passwd')")
