"""`manage.py check` runs the audit of the pyiceberg code that `catalog.engine.fast_commit`
mirrors, so an upgraded pyiceberg fails every deploy and CI run, not a consumer's first append."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from catalog.engine import fast_commit

ROOT = Path(__file__).resolve().parents[2]


def test_manage_py_check_passes_on_the_audited_pyiceberg() -> None:
    env = {**os.environ, "DEBUG": "1"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("function", ["pyiceberg.table:Transaction.commit_transaction",
                                      "pyiceberg.table.update.snapshot:_SnapshotProducer._summary",
                                      "pyiceberg.table.update:update_table_metadata",
                                      "pyiceberg.utils.properties:property_as_int"])
def test_manage_py_check_fails_when_a_mirrored_pyiceberg_function_changed(monkeypatch, function) -> None:
    monkeypatch.setitem(fast_commit._SOURCE_HASHES, function, "0" * 16)  # noqa: SLF001 - the audit's record
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert "catalog.E001" in str(raised.value) and function in str(raised.value)


def test_manage_py_check_fails_on_another_pyiceberg_version(monkeypatch) -> None:
    import pyiceberg

    monkeypatch.setattr(pyiceberg, "__version__", "0.13.0")
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert "catalog.E001" in str(raised.value) and "0.13.0" in str(raised.value)


def test_the_audit_covers_the_transaction_path_that_appends_take() -> None:
    """`Table.append` is not on the path (`fast_commit.append` drives a `Transaction`): the audit
    names the functions that are, commit retry included."""
    for name in ("Transaction.append", "Transaction.commit_transaction", "Table._do_commit"):
        assert f"pyiceberg.table:{name}" in fast_commit._SOURCE_HASHES  # noqa: SLF001
    for name in ("_SnapshotProducer._commit", "_MergeAppendFiles._process_manifests"):
        assert f"pyiceberg.table.update.snapshot:{name}" in fast_commit._SOURCE_HASHES  # noqa: SLF001
    assert "pyiceberg.table:Table.append" not in fast_commit._SOURCE_HASHES  # noqa: SLF001


# pyiceberg's modules whose functions an append and an expiry run through (outside file IO,
# Avro, Parquet and type code, which never see the table metadata)
AUDITED_MODULES = {"table/__init__.py": "pyiceberg.table", "table/update/__init__.py": "pyiceberg.table.update",
                   "table/update/snapshot.py": "pyiceberg.table.update.snapshot",
                   "table/metadata.py": "pyiceberg.table.metadata", "table/snapshots.py": "pyiceberg.table.snapshots",
                   "catalog/__init__.py": "pyiceberg.catalog", "catalog/sql.py": "pyiceberg.catalog.sql",
                   "serializers.py": "pyiceberg.serializers", "utils/properties.py": "pyiceberg.utils.properties"}


def test_the_audit_covers_every_pyiceberg_function_an_append_and_an_expiry_run(iceberg_tables) -> None:
    """Traced, not listed by hand: every function of those modules that a fast append (merge
    append, manifests merged) and a fast expiry call is hashed by the audit (singledispatch
    handlers by their registry key, nested functions with the function that holds them)."""
    import sys
    from datetime import UTC, datetime
    from decimal import Decimal

    import pyarrow as pa

    from catalog.engine.iceberg import arrow_schema
    from catalog.engine.writer import offsets_properties

    now = datetime(2026, 3, 10, 1, tzinfo=UTC)

    def batch(start: int) -> pa.Table:
        return pa.Table.from_pylist([{
            "symbol": "BHP", "company_id": 1, "exchange": "ASX", "exchange_timestamp": now,
            "price": Decimal("1.000001"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
            "ingestion_timestamp": now, "sequence_number": i, "source_partition": 0, "source_offset": i}
            for i in range(start, start + 2)], schema=arrow_schema("trades"))

    table = iceberg_tables["trades"]
    fast_commit.append(table, batch(0))  # the hooks are installed outside the trace
    called: set[str] = set()

    def profile(frame, event, _arg) -> None:  # noqa: ANN001
        if event == "call" and "/pyiceberg/" in frame.f_code.co_filename:
            module = AUDITED_MODULES.get(frame.f_code.co_filename.split("/pyiceberg/", 1)[1])
            name = frame.f_code.co_qualname
            if module and "<" not in name and name.split(".")[-1] != "_":
                called.add(f"{module}:{name}")

    sys.setprofile(profile)
    try:
        for i in range(1, 20):  # past commit.manifest.min-count-to-merge: the merge runs too
            fast_commit.append(table, batch(2 * i), snapshot_properties=offsets_properties("g", {("t", 0): 2 * i + 2}))
        fast_commit.expire_snapshots(table, [s.snapshot_id for s in table.metadata.snapshots[:5]])
    finally:
        sys.setprofile(None)
    assert "pyiceberg.table:Transaction.commit_transaction" in called  # the trace saw the path
    missing = sorted(called - set(fast_commit._SOURCE_HASHES))  # noqa: SLF001
    assert not missing, f"pyiceberg functions on the fast path that the audit does not hash: {missing}"


def test_manage_py_check_fails_on_a_changed_pyiceberg_function(tmp_path) -> None:
    """`manage.py check` itself (a process, as CI and a deploy run it) against a pyiceberg whose
    `_SnapshotProducer._summary` is not the audited code: exit 1 naming it, catalog.E001."""
    script = tmp_path / "check_with_changed_pyiceberg.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import pyiceberg.table.update.snapshot as snapshot\n"
        "def _summary(self, snapshot_properties=None):  # a pyiceberg that changed here\n"
        "    return None\n"
        "snapshot._SnapshotProducer._summary = _summary\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'k2portal.settings')\n"
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(['manage.py', 'check'])\n")
    env = {**os.environ, "DEBUG": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "catalog.E001" in result.stderr
    assert "pyiceberg.table.update.snapshot:_SnapshotProducer._summary" in result.stderr
