"""Helpers the benchmark scripts share: free ports, percentiles, the catalog database, writing a
day of rows as many small data files in one commit (the layout a consumer leaves), and the
reporting every benchmark adds to its wall-clock figures (CPU per record, load average, median and
range over runs)."""

from __future__ import annotations

import os
import platform
import resource
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pyarrow as pa

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of the samples."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def ensure_db(name: str) -> bool:
    """Create a Postgres database if missing; True when this call created it."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def append_as_small_files(table: Any, data: pa.Table, file_rows: int) -> None:
    """Append `data` cut into `file_rows`-row Parquet files, all in one fast-append commit."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    files = []
    for start in range(0, data.num_rows, file_rows):
        files.extend(_dataframe_to_data_files(table.metadata, data.slice(start, file_rows), table.io, uuid.uuid4()))
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)


# --- Figures that survive a change of machine (issue 15 item 2) -----------------------------------
# Every benchmark reports, beside its wall-clock figures, the CPU time it spent per record or query
# (user + system: what the work costs whatever else runs on the machine) and the machine's load
# average during the run (how contended the wall-clock figures were); headline figures are the
# median of several runs, with their range.


def own_cpu_seconds() -> float:
    """CPU time of this process alone (all its threads), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended and been waited for, user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (from /proc; empty where there is no /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu_seconds(exclude: Iterable[int] = ()) -> float:
    """CPU time of this process and every descendant, live ones (read from /proc) and ended ones that
    were waited for; for benchmarks that run part of the work in other processes. A child that ends
    between two readings moves from the /proc sum to RUSAGE_CHILDREN, so differences stay right.
    `exclude`: pids left out while alive (e.g. an embedded broker when only the client's cost counts)."""
    skip = set(exclude)
    return cpu_seconds() + sum(_proc_cpu(pid) for pid in _descendants(os.getpid()) if pid not in skip)


class LoadSampler:
    """The machine's 1-minute load average sampled every `interval` s on a daemon thread while the
    run lasts (at start and end too): min / max, and the mean of the samples."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.samples.append(os.getloadavg()[0])

    def start(self) -> LoadSampler:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return self.summary()

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        return {"load_min": round(min(s), 2), "load_max": round(max(s), 2), "load_mean": round(sum(s) / len(s), 2)}


class Meter:
    """One run's wall time, CPU time and the machine's load meanwhile. `scope`: "self" (this process,
    all threads), "children" (plus children that ended and were waited for: worker pools) or "tree"
    (plus live descendants, read from /proc; `exclude` leaves pids out, e.g. an embedded broker).

        with Meter(scope="tree") as m:
            work()
        row.update(m.report(units=rows, unit="record"))
    """

    def __init__(self, *, scope: str = "children", exclude: Iterable[int] = (), load_interval: float = 1.0) -> None:
        if scope not in ("self", "children", "tree"):
            raise ValueError(f"scope must be self, children or tree, not {scope!r}")
        self.scope, self.exclude = scope, tuple(exclude)
        self.load = LoadSampler(load_interval)
        self.wall = self.cpu = 0.0
        self.load_summary: dict[str, float] = {}

    def _cpu(self) -> float:
        if self.scope == "self":
            return own_cpu_seconds()
        return tree_cpu_seconds(self.exclude) if self.scope == "tree" else cpu_seconds()

    def __enter__(self) -> Meter:
        self.load.start()
        self._cpu0, self._wall0 = self._cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = self._cpu() - self._cpu0
        self.load_summary = self.load.stop()

    def report(self, *, units: float, unit: str = "record", prefix: str = "") -> dict[str, float]:
        """cpu_s, cpu_us_per_<unit> (µs of CPU per record/query), wall_s and the load figures; keys
        prefixed with `prefix` (e.g. "tree_") when one run is metered twice."""
        per = self.cpu / units * 1e6 if units else float("nan")
        out = {f"{prefix}cpu_s": round(self.cpu, 3), f"{prefix}cpu_us_per_{unit}": round(per, 2),
               f"{prefix}wall_s": round(self.wall, 3)}
        return {**out, **self.load_summary} if not prefix else out


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of the runs' values (a headline figure and its range)."""
    v = [x for x in values if x is not None and x == x]
    if not v:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "runs": 0}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": len(v)}


def fmt_spread(values: Iterable[float], fmt: str = "{:,.1f}", unit: str = "") -> str:
    """'median 12.3 ms (range 11.0–14.1, 3 runs)'."""
    s = spread(values)
    if not s["runs"]:
        return "n/a"
    suffix = f" {unit}" if unit else ""
    return (f"median {fmt.format(s['median'])}{suffix} (range {fmt.format(s['min'])}–{fmt.format(s['max'])}, "
            f"{s['runs']} run{'s' if s['runs'] != 1 else ''})")


def load_range(rows: Iterable[dict[str, Any]]) -> str:
    """The machine's load over several runs' rows: 'load 1.2–3.4'."""
    rows = list(rows)
    lo = [r["load_min"] for r in rows if "load_min" in r]
    hi = [r["load_max"] for r in rows if "load_max" in r]
    return f"load {min(lo):.1f}–{max(hi):.1f}" if lo and hi else "load n/a"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """Date, cores, CPU model, Python and the load average now: the first line of every report."""
    one, five, fifteen = os.getloadavg()
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · nproc {os.cpu_count()} · CPU {cpu_model()} · "
            f"Python {platform.python_version()} · load average now {one:.2f} / {five:.2f} / {fifteen:.2f}")


def measure_interleaved(fns: dict, runs: int, warmup: int = 3) -> dict:
    """Time the variants in turn within each round, so a busy machine slows them alike; wall and
    CPU time (this process, user + system: DuckDB's threads included) per call."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + runs):
        for name, fn in fns.items():
            c, t = cpu_seconds(), time.perf_counter()
            fn()
            if i >= warmup:
                samples[name].append((time.perf_counter() - t) * 1000)
                cpu[name].append((cpu_seconds() - c) * 1000)
    return {name: {"p50": statistics.median(v), "p99": percentile(v, 0.99), "cpu_ms": statistics.median(cpu[name]),
                   "runs": runs} for name, v in samples.items()}


def measure_repeated(fns: dict, runs: int, repeats: int, ratios: Iterable[tuple[str, str]] = ()) -> dict:
    """`measure_interleaved` `repeats` times: per variant, the median of the repeats' p50, p99 and
    CPU per query with their range; the p50 ratios asked for (e.g. ("engine", "floor")), each
    computed within a repeat; and the machine's load meanwhile."""
    load = LoadSampler().start()
    each = [measure_interleaved(fns, runs) for _ in range(repeats)]
    out: dict = {"repeats": repeats, **load.stop()}
    for name in fns:
        out[name] = {key: spread(r[name][key] for r in each) for key in ("p50", "p99", "cpu_ms")}
        out[name]["runs"] = runs
    for top, bottom in ratios:
        out[f"{top}/{bottom}"] = spread(r[top]["p50"] / r[bottom]["p50"] for r in each)
    return out
