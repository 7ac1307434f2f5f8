"""ADR #010: a network failure in the middle of a file is retried, and the idempotent producer
leaves no duplicates. The fault is real: every TCP connection between the producer and the
broker is cut at once by a proxy the broker advertises as its address."""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time
from pathlib import Path

import fastavro
import pytest

from catalog.engine.schemas import parsed_schema
from catalog.engine.wire import split
from catalog.registry import EmbeddedRegistry
from ingestion.engine import broker
from ingestion.engine.producer import ProducerSettings, produce_csv
from ingestion.engine.topics import create_topics, declared_topics
from tests.conftest import free_port
from tests.producer.conftest import TRADE_HEADER, read_all, write_csv
from tests.producer.test_producer import trade_rows


class CuttingProxy:
    """A TCP proxy 127.0.0.1:listen → 127.0.0.1:upstream whose `cut()` closes every open connection."""

    def __init__(self, listen: int, upstream: int) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", listen))
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cuts = 0
        self.cut_connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:  # the broker is not listening yet: refuse this client, keep accepting
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
            self.cuts += 1
            self.cut_connections += len(conns) // 2
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        self.cut()


@pytest.fixture
def proxied_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Tansu broker that advertises a cutting proxy as its address, so all client traffic goes through it."""
    port, proxy_port = free_port(), free_port()
    log = open(tmp_path / "broker.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([broker.binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                             "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}", "--storage-engine", "memory://tansu/"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = CuttingProxy(proxy_port, port)
    try:
        deadline = time.monotonic() + 20
        while not broker.answers(f"127.0.0.1:{proxy_port}", timeout=1.0):
            assert time.monotonic() < deadline and proc.poll() is None, "proxied broker did not start"
            time.sleep(0.1)
        yield proxy, f"127.0.0.1:{proxy_port}"
    finally:
        proxy.close()
        proc.kill()
        proc.wait(10)
        log.close()


@pytest.mark.django_db
def test_connections_cut_mid_file_are_retried_and_leave_no_duplicates(proxied_broker, tmp_path: Path, unique: str) -> None:  # type: ignore[no-untyped-def]
    proxy, address = proxied_broker
    create_topics(address, declared_topics(asset_class="cut", partitions=6))
    rows = trade_rows(60_000)
    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, rows)

    def cut_twice(_: int) -> None:
        """Called every 10,000 rows: cut the producer's live connections, twice. After a cut the
        producer reconnects within its backoff; wait (briefly) for it, so both cuts hit a live
        connection however fast the rest of the file is read."""
        if proxy.cuts >= 2:
            return
        deadline = time.monotonic() + 5
        while not proxy.conns and time.monotonic() < deadline:
            time.sleep(0.01)
        if proxy.conns:
            proxy.cut()

    result = produce_csv(csv_path=csv_path, settings=ProducerSettings(bootstrap_servers=address, delivery_timeout_ms=30_000),
                         registry=EmbeddedRegistry(), data_type="trades", exchange="asx", asset_class="cut",
                         on_progress=cut_twice)
    assert proxy.cuts == 2 and proxy.cut_connections >= 2
    assert (result.produced, result.acked, result.failed) == (60_000, 60_000, 0)
    messages = read_all(address, "market.cut.trades.asx", expected=60_000, group=f"g-{unique}")
    identities = [(r["symbol"], r["sequence_number"])
                  for r in (fastavro.schemaless_reader(io.BytesIO(split(m.value())[1]), parsed_schema("trades"), None) for m in messages)]
    assert len(identities) == 60_000
    assert len(set(identities)) == 60_000  # no duplicate from the retries
