"""Bounds of the consumer's settings, shared by the engine's config, K2's settings, `manage.py
consume` and the admin (plain constants: cheap to import from anywhere)."""

from __future__ import annotations

# The longest a consumer may be told to wait between two commits with thin traffic, in ms.
MAX_COMMIT_INTERVAL_MS = 60_000
