"""The benchmarks' shared reporting (bench/common.py, issue 15 item 2): CPU time counted for the
processes a benchmark runs, the load average, medians with their range; and one benchmark script
run end to end with tiny arguments. No speed is asserted here: figures live in docs/benchmarks.md."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_latency_bench_times_each_append_and_puts_the_writer_back(catalog_config) -> None:  # type: ignore[no-untyped-def]
    from bench.bench_append import batch
    from bench.bench_consumer import _append_quantiles, timed_appends
    from catalog.engine.iceberg import ensure_tables, load_catalog
    from catalog.engine.writer import IcebergWriter

    original = IcebergWriter.append
    writer = IcebergWriter(ensure_tables(load_catalog(catalog_config), catalog_config.namespace)["trades"],
                           table_name="trades")
    with timed_appends() as appends:
        writer.append(batch(50, 0))
        writer.append(batch(50, 50))
        with pytest.raises(Exception, match="price"):  # a refused batch is still timed, then raised
            writer.append(batch(50, 100).drop_columns(["price"]))
    assert IcebergWriter.append is original
    assert len(appends) == 3 and all(wall > 0 and cpu > 0 for wall, cpu in appends)
    assert writer.table.scan().to_arrow().num_rows == 100
    summary = _append_quantiles(appends)
    assert summary is not None and summary["appends"] == 3
    assert summary["wall_p50_ms"] <= summary["wall_p90_ms"] <= summary["wall_p99_ms"]
    writer.append(batch(10, 200))  # after the block: no longer timed
    assert len(appends) == 3


def test_the_latency_bench_sees_a_full_collection_and_keeps_its_stamps_out_of_the_collector() -> None:
    from bench.bench_consumer import _gc_summary, gc_pauses, stamp_key

    with gc_pauses() as pauses:
        gc.collect(2)
    summary = _gc_summary(pauses)
    assert summary["gen2"]["count"] >= 1 and summary["gen2"]["total_ms"] >= 0
    assert len(summary["gen2"]["at_s_and_ms"]) == summary["gen2"]["count"]
    gc.collect(2)  # after the block: no longer recorded
    assert _gc_summary(pauses) == summary
    keys = {stamp_key(p, o) for p in (0, 1, 29) for o in (0, 1, 2**40)}
    assert len(keys) == 9  # one key per (partition, offset)
    assert not any(gc.is_tracked(k) for k in keys)


def test_the_append_bench_splits_an_append_into_its_phases_and_puts_pyiceberg_back(catalog_config) -> None:  # type: ignore[no-untyped-def]
    import inspect
    import time

    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.io import pyarrow as pyarrow_io
    from pyiceberg.serializers import ToOutputFile
    from pyiceberg.table.update import snapshot

    from bench.bench_append import PHASES, batch, phase_lines, phase_timer
    from catalog.engine.iceberg import ensure_tables, load_catalog
    from catalog.engine.writer import IcebergWriter

    def installed() -> tuple:
        return (pyarrow_io._dataframe_to_data_files, snapshot._SnapshotProducer._manifests,
                snapshot.write_manifest_list, inspect.getattr_static(ToOutputFile, "table_metadata"),
                SqlCatalog.commit_table)

    writer = IcebergWriter(ensure_tables(load_catalog(catalog_config), catalog_config.namespace)["trades"],
                           table_name="trades")
    writer.append(batch(10, 0))  # fast_commit's hooks are in place before the timer wraps them
    before = installed()
    samples = []
    with phase_timer() as spent:
        for start in (10, 60):
            spent.update(dict.fromkeys(spent, 0.0))
            began = time.perf_counter()
            writer.append(batch(50, start))
            samples.append((time.perf_counter() - began, dict(spent)))
    assert installed() == before  # pyiceberg's (and fast_commit's) functions are back
    for wall, phases in samples:
        assert set(phases) == set(PHASES) and all(phases[p] > 0 for p in PHASES), phases
        assert phases["metadata_json"] < phases["catalog_commit"]  # the JSON is written inside the commit
        assert sum(phases[p] for p in PHASES if p != "metadata_json") < wall
    writer.append(batch(5, 110))  # after the block: nothing more is timed
    assert spent == samples[-1][1]
    assert writer.table.scan().to_arrow().num_rows == 115
    lines = phase_lines(samples)
    assert [line.split()[1] for line in lines] == [*PHASES, "rest", "total"]
    refused = subprocess.run([sys.executable, "bench/bench_append.py", "--phases", "--compare", "none", "json-splice"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--phases times pyiceberg's functions that --without/--compare swap" in refused.stderr


def test_the_append_bench_switches_every_hook_of_a_part_and_refuses_to_interleave_held_manifest_lists() -> None:
    """`--without`/`--compare` switch a part of fast_commit as a whole (all its hooks: pyiceberg's own
    in place while off, fast_commit's back after), and held manifest lists cannot be compared append
    by append (a variant without them writes lists the next one must read): refused, saying why."""
    from pyiceberg.avro.file import AvroOutputFile
    from pyiceberg.manifest import ManifestListWriter, ManifestWriter
    from pyiceberg.table import snapshots

    from bench.bench_append import _parts, use_parts
    from catalog.engine import fast_commit

    parts = _parts()
    hooked = {"avro-writers": [(ManifestWriter, "_with_partition"), (AvroOutputFile, "__init__"),
                               (AvroOutputFile, "_write_header")],
              "held-manifest-lists": [(ManifestListWriter, "add_manifests"), (snapshots, "_manifests")]}
    try:
        for part, where in hooked.items():
            assert [(owner, attribute) for owner, attribute, _, _ in parts[part]] == where
            use_parts(parts, {part})
            assert [getattr(owner, attribute) for owner, attribute in where] == [plain for *_, plain in parts[part]]
            assert all(getattr(owner, attribute) is fast for other in hooked if other != part
                       for owner, attribute, fast, _ in parts[other])
            use_parts(parts, set())
            assert [getattr(owner, attribute) for owner, attribute in where] == [fast for _, _, fast, _ in parts[part]]
    finally:
        use_parts(parts, set())
    assert snapshots._manifests is fast_commit._read_manifests  # noqa: SLF001
    refused = subprocess.run([sys.executable, "bench/bench_append.py", "--mode", "writer", "--compare", "none",
                              "held-manifest-lists"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "held-manifest-lists cannot be compared append by append" in refused.stderr


def test_the_append_floor_bench_reads_back_what_it_timed_and_reports_each_piece(catalog_config) -> None:  # type: ignore[no-untyped-def]
    import os

    env = {**os.environ, "K2_BENCH_ICEBERG_URI": catalog_config.uri}
    out = subprocess.run([sys.executable, "bench/bench_append_floor.py", "--appends", "6", "--warmup", "2",
                          "--rows", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]  # the files it wrote read back (it raises otherwise)
    lines = out.stdout.splitlines()
    assert "load average now" in lines[0]
    for piece in ("parquet", "manifest", "manifest_list", "metadata_json", "catalog_swap", "floor (sum)", "K2 append"):
        assert any(line.startswith(piece) and "p50=" in line for line in lines), piece
    assert lines[-2].startswith("K2 append / floor at p50:") and lines[-2].endswith("over 4 appends")
    assert lines[-1].startswith("load during the run ")
    refused = subprocess.run([sys.executable, "bench/bench_append_floor.py", "--appends", "2", "--warmup", "5"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "--appends must exceed --warmup" in refused.stderr


def test_the_fault_suite_stops_saying_why_when_every_message_is_in_the_table_before_its_rounds_ran_out() -> None:
    """On a fast machine the first consumer can write every message before it is killed; the next
    round would wait for Iceberg commits that cannot come (it hung for 180 s, then crashed with a
    TimeoutExpired). The suite now stops with exit status 2 and says to produce more messages,
    having checked the table with plain DuckDB. (Seed 5 kills the first consumer 3.0 s after its
    first commit, time enough to write all 40 messages.)"""
    run = subprocess.run([sys.executable, "bench/fault_suite.py", "--messages", "40", "--kills", "2", "--outage", "0",
                          "--disk-full", "0", "--start-outage", "0", "--max-delay", "4", "--seed", "5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "round 1: every produced message is already in the table" in run.stdout
    assert "run again with more --messages" in run.stdout
    assert "round 0: SIGKILL (40 rows in the table)" in run.stdout
