"""Issue #10 item 6: `manage.py help` and `manage.py produce --help` load no heavy library they do
not use (Celery, structlog with rich, pyiceberg, pyarrow, DuckDB, confluent_kafka, fastavro,
pydantic and django-ninja, SQLAlchemy, pandas). Speed itself is measured in docs/benchmarks.md,
not asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("celery", "kombu", "structlog", "rich", "pyiceberg", "pyarrow", "duckdb", "confluent_kafka", "fastavro", "sqlalchemy",
         "pydantic", "pydantic_core", "pydantic_settings", "ninja", "jinja2", "numpy", "pandas", "botocore", "fsspec", "redis",
         "tqdm", "httpx")


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


def _imported(*args: str) -> set[str]:
    env = {**os.environ, "DEBUG": "1"}
    result = subprocess.run([sys.executable, "-X", "importtime", "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", result.stderr, re.M)}


@pytest.mark.parametrize("args", [("help",), ("produce", "--help")])
def test_manage_py_help_loads_no_heavy_library(args) -> None:
    modules = _imported(*args)
    assert "django.core.management" in modules  # the listing is real
    assert _heavy(modules) == []


@pytest.mark.parametrize("args", [("help",), ("produce", "--help")])
def test_after_manage_py_help_no_heavy_module_is_in_sys_modules(args, tmp_path) -> None:
    """The same through `sys.modules` at exit: it also sees what `importlib.import_module` loaded
    (INSTALLED_APPS entries, settings), which `-X importtime` does not list."""
    out = tmp_path / "modules.txt"
    script = ("import atexit, runpy, sys\n"
              f"atexit.register(lambda: open({str(out)!r}, 'w').write('\\n'.join(sorted(sys.modules))))\n"
              f"sys.argv = ['manage.py', *{list(args)!r}]\n"
              "runpy.run_path('manage.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "DEBUG": "1"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set(out.read_text().split())
    assert {"django.contrib.admin", "k2portal.settings", "ingestion.models"} <= modules  # the apps were set up
    if args == ("help",):  # ninja's app is installed (its command listed) without importing ninja
        assert "[ninja]\n    export_openapi_schema\n" in result.stdout
    assert _heavy(modules) == []


def test_a_command_that_logs_still_gets_structlog(tmp_path) -> None:
    """The counterpart: structlog is only deferred, a command that logs loads and configures it."""
    env = {**os.environ, "DEBUG": "1", "K2_LOG_JSON": "1"}
    script = ("import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'k2portal.settings'); django.setup()\n"
              "import sys; assert 'structlog' not in sys.modules\n"
              "from k2core.logging import get_logger; get_logger('k2.test', component='t').info('deferred_ok', n=1)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"event": "deferred_ok"' in result.stdout and '"component": "t"' in result.stdout
