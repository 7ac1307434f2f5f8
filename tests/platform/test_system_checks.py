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


@pytest.mark.parametrize("function", ["Transaction.commit_transaction", "_SnapshotProducer._summary",
                                      "update_table_metadata"])
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
    for name in ("Transaction.append", "Transaction.commit_transaction", "Table._do_commit",
                 "_SnapshotProducer._commit", "_FastAppendFiles._existing_manifests"):
        assert name in fast_commit._SOURCE_HASHES  # noqa: SLF001
    assert "Table.append" not in fast_commit._SOURCE_HASHES  # noqa: SLF001
