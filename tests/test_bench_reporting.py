"""The benchmarks' shared reporting (bench/common.py, issue 15 item 2): CPU time counted for the
processes a benchmark runs, the load average, medians with their range; and one benchmark script
run end to end with tiny arguments. No speed is asserted here: figures live in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import LoadSampler, Meter, fmt_spread, spread

ROOT = Path(__file__).resolve().parent.parent
# Burns CPU, prints its own CPU time, then (with "wait") stays alive until its stdin closes.
CHILD = ("import sys, time\nx = 0\nfor i in range(4_000_000):\n    x += i\n"
         "print(time.process_time(), flush=True)\nif sys.argv[1] == 'wait':\n    sys.stdin.read()\n")


def test_a_child_that_ended_is_counted_by_children_and_tree_scopes_not_by_self() -> None:
    with Meter(scope="self") as own, Meter(scope="children") as children, Meter(scope="tree") as tree:
        out = subprocess.run([sys.executable, "-c", CHILD, "exit"], capture_output=True, text=True, check=True)
    child_cpu = float(out.stdout)
    assert child_cpu > 0.05
    assert children.cpu >= 0.9 * child_cpu and tree.cpu >= 0.9 * child_cpu
    assert own.cpu < child_cpu


def test_a_live_descendant_is_counted_by_the_tree_scope() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with Meter(scope="tree") as tree, Meter(scope="children") as children:
            child_cpu = float(proc.stdout.readline())  # type: ignore[union-attr]
        assert proc.poll() is None  # still running when the meters stopped
        assert tree.cpu >= 0.9 * child_cpu and children.cpu < 0.5 * child_cpu
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)


def test_a_run_reports_cpu_per_unit_and_the_load_average() -> None:
    with Meter(scope="self") as meter:
        sum(range(200_000))
    report = meter.report(units=1000, unit="query")
    assert report["cpu_us_per_query"] == round(meter.cpu / 1000 * 1e6, 2)
    assert 0 <= report["load_min"] <= report["load_mean"] <= report["load_max"]
    sampler = LoadSampler(interval=0.01).start()
    summary = sampler.stop()
    assert len(sampler.samples) >= 2 and summary["load_min"] == round(min(sampler.samples), 2)


def test_headline_figures_are_the_median_with_the_range() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert fmt_spread([30.0, 10.0, 25.0], unit="ms") == "median 25.0 ms (range 10.0–30.0, 3 runs)"
    assert fmt_spread([], unit="ms") == "n/a"


def test_the_producer_benchmark_runs_with_tiny_arguments_and_reports_the_new_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run([sys.executable, "bench/bench_producer.py", "--rows", "2500", "--runs", "2", "--rates", "200",
                          "--rate-seconds", "1", "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = next(line for line in out.stdout.splitlines() if line.startswith("default:"))
    assert "throughput median" in summary and "2 runs" in summary and "µs/row" in summary and "load " in summary
    assert any(line.startswith("paced 200 rows/s: ack p50 median") for line in out.stdout.splitlines())
    assert "load average now" in out.stdout.splitlines()[1]
