"""How long `make run` takes from an empty database to "K2 is up" (sample landed in Iceberg,
consumers running, API key issued), and the memory the whole platform holds (ADR #004: one
laptop, 8 GB; demo < 5 minutes). Sums the RSS of every process in the run's tree, sampled
every 0.5 s, and reports the peak; also the CPU time the whole process tree spent until it
stopped (user + system, every process of the platform) and the machine's load average meanwhile.

    .venv/bin/python bench/bench_run.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Meter, fmt_spread, free_port, load_range, machine_line  # noqa: E402

BASE = Path(__file__).resolve().parent.parent


def tree_rss_kb(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as fh:
                line = next((x for x in fh if x.startswith("VmRSS:")), "VmRSS: 0 kB")
        except (OSError, StopIteration):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(line.split()[1])
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def one_run() -> dict[str, float]:
    db = f"k2_benchrun_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}", "REDIS_URL": "redis://127.0.0.1:6379/8",
           "K2_EMBEDDED_BROKER_PORT": str(free_port()), "K2_WAREHOUSE": f"/tmp/{db}-warehouse"}
    env.pop("K2_KAFKA_BOOTSTRAP", None)
    meter = Meter(scope="tree").__enter__()
    start = time.perf_counter()
    log = Path(f"/tmp/{db}.log")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "k2portal.run", "--exit-when-ready", "--web",
                                 f"127.0.0.1:{free_port()}"], cwd=BASE, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak = 0
    ready_at = None
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        if ready_at is None and "Ctrl-C stops everything." in log.read_text(errors="replace"):
            ready_at = time.perf_counter() - start
        time.sleep(0.5)
    meter.__exit__(None, None, None)
    buffer = log.read_text(errors="replace")
    log.unlink()
    if ready_at is None and "Ctrl-C stops everything." in buffer:
        ready_at = time.perf_counter() - start
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    subprocess.run(["rm", "-rf", f"/tmp/{db}-warehouse"], check=False)
    if proc.returncode != 0 or ready_at is None:
        raise SystemExit(f"run failed (exit {proc.returncode}):\n{buffer[-3000:]}")
    return {"ready_s": ready_at, "rss_mb": peak / 1024, "cpu_s": meter.cpu, **meter.load_summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    results = []
    for i in range(1, args.runs + 1):
        r = one_run()
        results.append(r)
        print(f"run {i}: ready after {r['ready_s']:.1f} s, peak RSS of the platform {r['rss_mb']:,.0f} MB, "
              f"CPU of all its processes {r['cpu_s']:.1f} s, load {r['load_min']:.1f}–{r['load_max']:.1f}", flush=True)
    print(f"ready {fmt_spread((r['ready_s'] for r in results), unit='s')}; "
          f"peak RSS {fmt_spread((r['rss_mb'] for r in results), '{:,.0f}', 'MB')}; "
          f"CPU {fmt_spread((r['cpu_s'] for r in results), unit='s')}; {load_range(results)} (nproc={os.cpu_count()})")


if __name__ == "__main__":
    main()
