"""CPU of a standing fresh-read reader with nothing to read (issue 15 item 1): one read starts
it on an empty topic, then this process's CPU (user + system, every thread, librdkafka's too)
is measured over `--seconds` with no traffic and no reads.

    .venv/bin/python bench/bench_fresh_idle.py --seconds 10 --partitions 30
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_consumer import Env, Registry  # noqa: E402
from bench.common import machine_line  # noqa: E402
from ingestion.engine.tail import KafkaTail  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=30)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    env = Env()
    try:
        tail = KafkaTail(bootstrap_servers=env.bootstrap, registry=Registry(),
                         topics_of={"trades": (env.topic(args.partitions),)}, timeout_s=10)
        try:
            print(f"first read answered by the {tail.read('trades', None).path} reader", flush=True)
            time.sleep(1.0)  # settled: caught up, nothing more to fetch
            cpu, began = _cpu(), time.monotonic()
            time.sleep(args.seconds)
            used, took = _cpu() - cpu, time.monotonic() - began
            print(f"idle standing reader, {args.partitions} partitions: {used:.3f} s CPU in {took:.1f} s "
                  f"= {100 * used / took:.1f} % of a core", flush=True)
        finally:
            tail.close()
    finally:
        env.close()


if __name__ == "__main__":
    main()
