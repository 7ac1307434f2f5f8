"""Compat shim: remove when consumer imports k2core. Structured logging is `k2core.logging`
(issue #10: engines import the bottom package, not the project package)."""

from k2core.logging import *  # noqa: F403
