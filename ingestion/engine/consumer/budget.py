"""The broker budget of a stop (ADR #016): once a stop has begun, every broker call gets what is
left of `shutdown_timeout_s`, and what could not be sent is reported, not waited for."""

from __future__ import annotations

import socket
import time

from k2core.logging import get_logger

log = get_logger(__name__, component="consumer")


class StopBudget:
    def __init__(self, *, bootstrap_servers: str, timeout_s: float, not_sent: list[str]) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self.deadline: float | None = None  # time.monotonic() by which a stop is done with the broker
        self._not_sent = not_sent  # the stats' list: the final report names each item

    def begin(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def seconds(self, default: float) -> float:
        """Seconds a broker call may take: `default` while running, what is left of the shutdown
        budget once a stop has begun."""
        if self.deadline is None:
            return default
        return max(0.0, min(default, self.deadline - time.monotonic()))

    def broker_reachable(self) -> bool:
        """A TCP connection to one of the bootstrap servers, within a second (or what is left of
        the stop budget): librdkafka's synchronous calls wait for a coordinator that is not there."""
        for server in self.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                              timeout=max(0.05, self.seconds(1.0))):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def not_sent(self, what: str) -> None:
        """Log what could not be sent to the broker; at a stop, also keep it for the final report."""
        if self.deadline is None:
            log.warning("not_sent", detail=what)
        elif what not in self._not_sent:
            self._not_sent.append(what)
            log.warning("not_sent_at_shutdown", detail=what)
