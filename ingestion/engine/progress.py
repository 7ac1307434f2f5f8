"""When a consumer's `consumer_progress` line is worth writing: only when something moved
(messages, rows, gaps or dead letters since the last line), or once a minute while idle, so an
idle platform's console stays quiet. The heartbeat (stats to the portal) is not throttled."""

from __future__ import annotations

import time


class ProgressGate:
    """`due(...)` is True when the counters changed since the last True, or `idle_every_s` passed."""

    def __init__(self, idle_every_s: float = 60.0) -> None:
        self.idle_every_s = idle_every_s
        self._last: tuple[int, ...] | None = None
        self._last_at = float("-inf")

    def due(self, *counters: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if counters != self._last or now - self._last_at >= self.idle_every_s:
            self._last, self._last_at = counters, now
            return True
        return False
