"""`manage.py consume` with a fault injected from outside the engine, for the crash tests:
`python -m tests.consumer.faulty_consume [--kill-after-table-commits N] [--kill-after-dlq-sends N]
[--hold-commits-after-rows N] -- consume ARGS`.

The command, the engine and every service are the real ones; only the engine's hooks are
wrapped: the process SIGKILLs itself right after the Nth Iceberg commit (on the commit thread,
before that batch's Kafka commit: the `on_batch_committed` hook), or right after the Nth batch's
dead letters were delivered (before anything of that batch is committed: a `DeadLetterQueue`
whose `send` returned); or the commit thread is held, once N rows are in the table, until the
engine is asked to stop (a slow commit: the next batch stays in hand meanwhile)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "k2portal.settings")
django.setup()

from django.core.management import execute_from_command_line  # noqa: E402

from ingestion import consumer_services  # noqa: E402
from ingestion.engine.consumer import DeadLetterQueue  # noqa: E402
from k2core.logging import get_logger  # noqa: E402

log = get_logger(__name__, component="consumer")


def _sigkill(**where: int) -> None:
    log.warning("fault_injection_sigkill", **where)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-after-table-commits", type=int)
    parser.add_argument("--kill-after-dlq-sends", type=int)
    parser.add_argument("--hold-commits-after-rows", type=int)
    faults = parser.parse_args(sys.argv[1:split])
    hooks: dict[str, Any] = {}
    engines: list[Any] = []
    if faults.kill_after_table_commits:
        commits = [0]

        def committed(rows: Any, _at: float) -> None:
            if not rows.num_rows:
                return  # no Iceberg commit (every fresh message was poison)
            commits[0] += 1
            if commits[0] >= faults.kill_after_table_commits:
                _sigkill(after_table_commits=commits[0])

        hooks["on_batch_committed"] = committed
    if faults.hold_commits_after_rows:
        rows_in_table = [0]

        def hold(rows: Any, _at: float) -> None:
            rows_in_table[0] += rows.num_rows
            if rows_in_table[0] >= faults.hold_commits_after_rows:
                log.warning("fault_injection_commit_thread_held", rows=rows_in_table[0])
                while not engines[0].stopping:
                    time.sleep(0.05)

        hooks["on_batch_committed"] = hold
    if faults.kill_after_dlq_sends:
        class KilledAfterSends(DeadLetterQueue):
            sends = 0

            def send(self, messages: list[Any], poison: list[Any]) -> None:
                super().send(messages, poison)
                KilledAfterSends.sends += 1
                if KilledAfterSends.sends >= faults.kill_after_dlq_sends:
                    _sigkill(after_dlq_sends=KilledAfterSends.sends)

        hooks["dead_letters"] = KilledAfterSends
    real = consumer_services.build_engine

    def build_engine(**kw: Any) -> Any:
        engines.append(real(**kw, **hooks))
        return engines[-1]

    consumer_services.build_engine = build_engine
    execute_from_command_line(["manage.py", *sys.argv[split + 1:]])


if __name__ == "__main__":
    main()
