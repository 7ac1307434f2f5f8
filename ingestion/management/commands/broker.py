"""manage.py broker start|stop|status: the embedded Tansu broker on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingestion.engine import broker
from k2core.paths import BASE_DIR


class Command(BaseCommand):
    help = ("Start, stop or report the embedded Kafka-compatible broker (Tansu, memory storage). "
            "Does nothing useful when K2_KAFKA_BOOTSTRAP points at a real cluster.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        k2 = settings.K2
        if not k2.uses_embedded_broker:
            self.stdout.write(f"K2_KAFKA_BOOTSTRAP={k2.kafka_bootstrap}: using that cluster, no embedded broker.")
            return
        var_dir = BASE_DIR / "var"
        port = k2.embedded_broker_port
        try:
            if action == "start":
                st = broker.start(port=port, var_dir=var_dir)
                self.stdout.write(f"broker listening on {st.address} (pid {st.pid}, log {st.log_path})")
                self.stdout.write(broker.MEMORY_WARNING)
            elif action == "stop":
                stopped = broker.stop(port=port, var_dir=var_dir)
                self.stdout.write("broker stopped" if stopped else "broker was not running")
            else:
                st = broker.status(port=port, var_dir=var_dir)
                if st.running:
                    ok = broker.answers(st.address)
                    self.stdout.write(f"broker running on {st.address} (pid {st.pid}), "
                                      f"{'answering' if ok else 'NOT answering'}")
                else:
                    self.stdout.write(f"broker not running (would listen on {st.address})")
                    raise SystemExit(3)
        except broker.BrokerError as exc:
            raise CommandError(str(exc)) from None
