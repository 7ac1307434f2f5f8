"""Compat shim: remove when consumer imports k2core. The metrics registry is `k2core.metrics`
(issue #10: engines import the bottom package, not the project package)."""

from k2core.metrics import *  # noqa: F403
