"""The consumer's own errors: each message says what to check next."""

from __future__ import annotations


class ConsumerError(RuntimeError):
    """The consumer cannot run; the message says what to check."""


class DeadLettersUndelivered(ConsumerError):
    """Poison messages could not be written to the dead-letter topic (the batch is not committed)."""
