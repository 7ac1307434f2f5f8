"""The project's root directory: default locations of var/ (warehouse, logs, metrics) and data/."""

from __future__ import annotations

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
