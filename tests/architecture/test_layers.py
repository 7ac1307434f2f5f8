"""Issue #10: the layers hold. `lint-imports` checks the contracts of pyproject.toml (k2portal >
ingestion | queries > catalog > k2core; engines and k2core import no Django, Celery or
k2portal), so `make test` fails when an import breaks them, and an engine imports in a fresh
interpreter without loading Django or Celery."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("k2core", "catalog", "ingestion", "queries", "k2portal")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _lint_a_copy_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run on a copy of the code in which `line` is appended to `module` (a path under the root)."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    return _lint_imports(tmp_path)


def test_an_engine_importing_django_breaks_the_engines_contract(tmp_path) -> None:
    result = _lint_a_copy_with(tmp_path, "catalog/engine/wire.py", "from django.conf import settings")
    assert result.returncode != 0
    assert "Engines and k2core are plain Python: no Django, Celery or project package BROKEN" in result.stdout
    assert "catalog.engine.wire -> django (l." in result.stdout


def test_catalog_importing_the_query_app_breaks_the_layers_contract(tmp_path) -> None:
    result = _lint_a_copy_with(tmp_path, "catalog/selectors.py", "from queries import services")
    assert result.returncode != 0
    assert "Layers: k2portal > ingestion | queries > catalog > k2core BROKEN" in result.stdout
    assert "catalog.selectors -> queries.services" in result.stdout


def test_ingestion_and_queries_are_independent(tmp_path) -> None:
    result = _lint_a_copy_with(tmp_path, "queries/selectors.py", "from ingestion import selectors as _ingestion")
    assert result.returncode != 0
    assert "queries.selectors -> ingestion.selectors" in result.stdout


def _engine_modules() -> list[str]:
    names = []
    for package in ("k2core", "catalog.engine", "ingestion.engine", "queries.engine"):
        path = ROOT.joinpath(*package.split("."))
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]
    return names


def test_engines_import_without_django_or_celery() -> None:
    modules = _engine_modules()
    assert "ingestion.engine.consumer" in modules or (ROOT / "ingestion" / "engine" / "consumer").is_dir()
    script = ("import importlib, os, sys\n"
              f"for name in {modules!r}: importlib.import_module(name)\n"
              "import ingestion.engine.consumer\n"
              "print(sorted(m for m in sys.modules if m.startswith(('django', 'celery'))))\n"
              "print(os.environ.get('DJANGO_SETTINGS_MODULE'))\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "None"]
