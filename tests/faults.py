"""Fault injection at real boundaries, shared by the fault tests and `bench/fault_suite.py`:

- `CutAfterCommitProxy`: a TCP proxy on 127.0.0.1 in front of Postgres that, once armed, lets
  the next COMMIT through to Postgres, waits for Postgres's reply (so the transaction is
  committed) and then closes the client's connection without passing the reply on: the
  client sees a dropped connection for a commit that happened (an ambiguous commit).
- `ThrowawayPostgres`: a Postgres cluster of its own (initdb in a temp dir, a free port), run as
  the `postgres` OS user when we are root, that a test may stop and start at will.
- `SmallTmpfs`: a tmpfs of a few MB mounted on a temp dir (we are root here: `mount -t tmpfs`)
  to put a warehouse on, and `fill()`/`free()` to make its disk full and give the space back.
- `duckdb_scan`: a query over an Iceberg table read with plain DuckDB `iceberg_scan`, the
  metadata location taken from the SQL catalog's own `iceberg_tables` row with psycopg: no K2 or
  pyiceberg code in the reading; `duckdb_offsets`: its (source_partition, source_offset) of every row,
  and `assert_written_once` of them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg


class CutAfterCommitProxy:
    """127.0.0.1:`port` → upstream; `arm()` makes the next COMMIT's reply never arrive."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._armed = threading.Event()
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self._armed.set()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            state = {"cut_pending": False}
            threading.Thread(target=self._client_to_server, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(client, server, state), daemon=True).start()

    def _client_to_server(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(65536):
                if self._armed.is_set() and b"COMMIT" in data.upper():
                    self._armed.clear()
                    state["cut_pending"] = True  # before Postgres can answer
                server.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _server_to_client(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := server.recv(65536):
                if state["cut_pending"]:  # Postgres answered the COMMIT: it is committed; drop the answer
                    self.cuts += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("no Postgres server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class ThrowawayPostgres:
    """A Postgres cluster in a temp dir on a free port (trust auth, user postgres)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="k2-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--no-sync"])

    def _run(self, args: list[str]) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if self._as_postgres else []) + args
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts,
                   "-w", "-t", "60", "start"])

    def stop(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SmallTmpfs:
    """A tmpfs of `size_mb` MB mounted on a new temp dir. `fill()` writes a filler file until the
    kernel answers ENOSPC (the disk is then full for any writer), `free()` deletes it, `close()`
    unmounts. Needs the right to mount (root, or CAP_SYS_ADMIN): `mount` says why otherwise."""

    def __init__(self, size_mb: int = 8) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="k2-tmpfs-"))
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs", str(self.path)],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            shutil.rmtree(self.path, ignore_errors=True)
            raise RuntimeError(f"cannot mount a {size_mb} MB tmpfs on {self.path} (needs root or CAP_SYS_ADMIN): "
                               f"{done.stderr.strip()}")
        self._filler = self.path / ".filler"

    def fill(self) -> int:
        """Fill the disk; the bytes written."""
        written = 0
        chunk = b"\0" * 65536
        with open(self._filler, "ab", buffering=0) as out:
            while True:
                try:
                    written += out.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            while True:  # the last pages, a byte at a time
                try:
                    written += out.write(b"\0")
                except OSError:
                    break
        return written

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
        shutil.rmtree(self.path, ignore_errors=True)


def metadata_location(pg_url: str, namespace: str, table: str, catalog: str = "k2") -> str:
    """The table's current metadata file, from the SQL catalog's own row."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT metadata_location FROM iceberg_tables WHERE catalog_name = %s "
                           "AND table_namespace = %s AND table_name = %s", (catalog, namespace, table)).fetchone()
    assert row is not None, f"{namespace}.{table} is not in the catalog"
    return row[0]


def _plain_duckdb():  # noqa: ANN202 - duckdb connection
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_iceberg

    conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    for module in (duckdb_extension_avro, duckdb_extension_iceberg):
        name = module.__name__.removeprefix("duckdb_extension_")
        path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        conn.execute(f"LOAD '{path}'")
    return conn


def duckdb_scan(pg_url: str, namespace: str, sql: str, table: str = "trades") -> list[tuple]:
    """The rows of `sql`, in which `{scan}` stands for the table: `iceberg_scan` of its current
    metadata file (from the catalog's row), run by plain DuckDB."""
    location = metadata_location(pg_url, namespace, table)
    conn = _plain_duckdb()
    try:
        return [tuple(r) for r in conn.execute(sql.format(scan=f"iceberg_scan('{location}')")).fetchall()]
    finally:
        conn.close()


def duckdb_offsets(pg_url: str, namespace: str, table: str = "trades") -> list[tuple[int, int]]:
    """(source_partition, source_offset) of every row, read by plain DuckDB from the table's metadata file."""
    return duckdb_scan(pg_url, namespace, "SELECT source_partition, source_offset FROM {scan}", table)


def assert_written_once(rows: list[tuple[int, int]], count: int) -> None:
    """`rows` (`duckdb_offsets` of a one-partition topic's table) are offsets 0 .. count - 1, each exactly once."""
    duplicated = len(rows) - len(set(rows))
    assert duplicated == 0, f"{duplicated} rows written twice"
    assert sorted(o for _, o in rows) == list(range(count)), f"{count - len(set(rows))} rows lost"


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# The shared test Postgres's Iceberg catalog database (tests/conftest.py ICEBERG_TEST_DB).
PG_TEST_URL = "postgresql://postgres@127.0.0.1:5432/k2_test_iceberg"
