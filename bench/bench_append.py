"""Append time vs. the table's snapshot count (issue: per-append cost grew with the snapshot list).

Appends `--rows`-row batches to a fresh trades table (unique namespace of the SQL catalog,
temporary warehouse) and prints the mean append time per window of `--window` appends, for
the plain pyiceberg `Table.append` and/or K2's `IcebergWriter` commit path.

    .venv/bin/python bench/bench_append.py --appends 400 --window 50 --mode both
    .venv/bin/python bench/bench_append.py --appends 300 --profile profile.out   # cProfile of the last window
    .venv/bin/python bench/bench_append.py --appends 400 --rows 350 --window 100 --mode writer   # a consumer's thin-traffic commits
    .venv/bin/python bench/bench_append.py --appends 2500 --rows 300 --window 500 --mode writer \
        --compare none json-splice,snapshot-index json-splice snapshot-index   # parts of fast_commit on/off
    .venv/bin/python bench/bench_append.py --appends 400 --rows 350 --window 100 --mode writer --phases

`--without` switches parts of `catalog.engine.fast_commit` off for the run (each one puts
pyiceberg's own function back), and `--compare` takes several such variants in turn, one
append each, on the same table (so every variant sees the same snapshot count and the same
machine load: fair on a shared machine; each also with the process's CPU time per append,
which the load inflates far less than wall time), to see what each part is worth: `json-splice` (the metadata
JSON built from per-snapshot pieces), `snapshot-index` (an index for `snapshot_by_id`),
`held-metadata` (the catalog's compare-and-swap base not parsed again), `avro-readers` (Avro
readers kept per header schema), `schema-check` and `schema-conversion` (the batch's Arrow
schema checked and converted once per schema), `partitions` (a one-day batch not split by
Acero), `avro-writers` (a manifest's entry schema, writer tree and header JSON kept per schema),
`held-manifest-lists` (the parent's manifest list given back as this process wrote it, not read;
whole runs only: `--compare` refuses it); parts no longer in `fast_commit` are ignored with a note.

Each run ends with the quantiles of every append after the first window: wall time and the
process's CPU time (all threads), which the machine's load inflates far less than wall time.

`--phases` splits each append's wall time, as the committing thread sees it, into the phases of
an Iceberg append (`phase_timer`): writing the data files (Parquet, with their statistics, on
pyiceberg's worker threads), writing the manifests (the new one and any merge), writing the
manifest list, the catalog's commit (the metadata JSON written, then the compare-and-swap in
Postgres) and the rest (pyiceberg's own bookkeeping between them); quantiles of each after the
first window.

Never asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line  # noqa: E402
from k2core.logging import configure  # noqa: E402

configure(json_output=True, level="WARNING")  # before the writer binds its module logger

from catalog.engine.iceberg import CatalogConfig, arrow_schema, ensure_tables, load_catalog  # noqa: E402
from catalog.engine.writer import IcebergWriter, offsets_properties  # noqa: E402

URI = os.environ.get("K2_BENCH_ICEBERG_URI", "postgresql+psycopg://postgres@127.0.0.1:5432/k2_bench_iceberg")


def batch(rows: int, start: int) -> pa.Table:
    t0 = datetime(2026, 3, 10, 1, tzinfo=UTC)
    n = range(start, start + rows)
    return pa.table({
        "symbol": ["BHP"] * rows, "company_id": [1] * rows, "exchange": ["ASX"] * rows,
        "exchange_timestamp": [t0 + timedelta(microseconds=i) for i in n],
        "price": [Decimal("1.000001")] * rows, "volume": [1] * rows, "qualifiers": [0] * rows,
        "venue": ["X"] * rows, "buyer_id": [None] * rows, "ingestion_timestamp": [t0] * rows,
        "sequence_number": list(n), "source_partition": [0] * rows, "source_offset": list(n),
        "source_topic": ["market.equities.trades.asx"] * rows, "source_topic_id": [None] * rows,
    }, schema=arrow_schema("trades"))


PARTS = ("json-splice", "snapshot-index", "held-metadata", "avro-readers", "schema-check", "schema-conversion",
         "partitions", "avro-writers", "held-manifest-lists")


# part -> the fast_commit functions it installs (each found with its owner in `fast_commit._hooks()`)
_PART_HOOKS = {
    "json-splice": ("_write_table_metadata",),
    "snapshot-index": ("_snapshot_by_id",),
    "held-metadata": ("_read_table_metadata",),
    "avro-readers": ("_avro_file_enter",),
    "avro-writers": ("_with_partition", "_avro_output_init", "_avro_write_header"),
    "held-manifest-lists": ("_add_manifests", "_read_manifests"),
    "schema-check": ("_check_schema_compatible",),
    "schema-conversion": ("_pyarrow_to_schema",),
    "partitions": ("_determine_partitions",),
}


def _parts() -> dict[str, list[tuple[Any, str, Any, Any]]]:
    """part -> [(owner, attribute, fast_commit's function, pyiceberg's own), ...], for the parts still in fast_commit."""
    from catalog.engine import fast_commit

    fast_commit.verify_pyiceberg()  # installs the hooks once; `use_parts` swaps them afterwards
    installed = {}
    for owner, attribute, fast, plain in fast_commit._hooks():  # noqa: SLF001 - the bench switches them
        wrap = staticmethod if isinstance(inspect.getattr_static(owner, attribute), staticmethod) else (lambda f: f)
        installed[fast.__name__] = (owner, attribute, wrap(fast), wrap(plain))
    return {part: [installed[name] for name in names] for part, names in _PART_HOOKS.items()
            if all(name in installed for name in names)}


def use_parts(parts: dict[str, list[tuple[Any, str, Any, Any]]], off: set[str]) -> None:
    """fast_commit's function for each part, except pyiceberg's own for those in `off`."""
    for part, hooks in parts.items():
        for owner, attribute, fast, plain in hooks:
            setattr(owner, attribute, plain if part in off else fast)


PHASES = ("data_files", "manifests", "manifest_list", "catalog_commit", "metadata_json")


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Wall seconds spent in each phase of the appends made while the block runs, accumulated
    into the yielded dict (the caller reads and clears it around each append): `data_files`
    (`_dataframe_to_data_files`, the Parquet files and their statistics), `manifests`
    (`_SnapshotProducer._manifests`: the new manifest and any merge), `manifest_list`,
    `catalog_commit` (the catalog's `commit_table`: the metadata JSON written, then the swap in
    the catalog) and, within it, `metadata_json`. Installed after `fast_commit`'s own hooks (its
    audit hashes pyiceberg's source, which wrapping would change) and removed on exit (bench only)."""
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.io import pyarrow as pyarrow_io
    from pyiceberg.serializers import ToOutputFile
    from pyiceberg.table.update import snapshot

    from catalog.engine import fast_commit

    fast_commit.verify_pyiceberg()
    spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def timed(phase: str, function: Any, listed: bool = False) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = function(*args, **kwargs)
                return list(result) if listed else result  # a generator's work happens when it is read
            finally:
                spent[phase] += time.perf_counter() - start
        return wrapper

    @contextlib.contextmanager
    def manifest_list(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            with originals["manifest_list"](*args, **kwargs) as writer:
                yield writer
        finally:
            spent["manifest_list"] += time.perf_counter() - start

    originals = {"data_files": pyarrow_io._dataframe_to_data_files, "manifests": snapshot._SnapshotProducer._manifests,
                 "manifest_list": snapshot.write_manifest_list,
                 "metadata_json": inspect.getattr_static(ToOutputFile, "table_metadata"),
                 "catalog_commit": SqlCatalog.commit_table}
    pyarrow_io._dataframe_to_data_files = timed("data_files", originals["data_files"], listed=True)
    snapshot._SnapshotProducer._manifests = timed("manifests", originals["manifests"])
    snapshot.write_manifest_list = manifest_list
    ToOutputFile.table_metadata = staticmethod(timed("metadata_json", originals["metadata_json"].__func__))
    SqlCatalog.commit_table = timed("catalog_commit", originals["catalog_commit"])
    try:
        yield spent
    finally:
        pyarrow_io._dataframe_to_data_files = originals["data_files"]
        snapshot._SnapshotProducer._manifests = originals["manifests"]
        snapshot.write_manifest_list = originals["manifest_list"]
        ToOutputFile.table_metadata = originals["metadata_json"]
        SqlCatalog.commit_table = originals["catalog_commit"]


def ms_quantile(seconds: list[float], p: float) -> float:
    """The `p` quantile (0..1, the value at rank int(p·n)) of samples in seconds, in ms: the rank
    rule every figure of this bench and `bench_append_floor.py` is printed with."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def phase_lines(samples: list[tuple[float, dict[str, float]]]) -> list[str]:
    """Quantiles (ms) of each phase over the appends in `samples` ((wall, phases) each), and of the
    rest of the wall time (the metadata JSON is part of the catalog's commit, not added twice)."""
    q = ms_quantile
    columns = {phase: [phases[phase] for _, phases in samples] for phase in PHASES}
    columns["rest"] = [wall - sum(phases[p] for p in PHASES if p != "metadata_json") for wall, phases in samples]
    columns["total"] = [wall for wall, _ in samples]
    return [f"phase {name:15s} p50={q(values, .5):6.2f}  p90={q(values, .9):6.2f}  p99={q(values, .99):6.2f}  "
            f"mean={statistics.mean(values) * 1000:6.2f} ms" for name, values in columns.items()]


def distribution(samples: list[tuple[float, float]]) -> str:
    """Quantiles of the appends' wall time and process CPU time (all threads: pyiceberg writes
    manifests and data files on its worker threads), in ms."""
    q = ms_quantile
    wall, cpu = [w for w, _ in samples], [c for _, c in samples]
    return (f"appends after the first window: n={len(samples)}  wall p50={q(wall, .5):.1f} p90={q(wall, .9):.1f} "
            f"p99={q(wall, .99):.1f} max={max(wall) * 1000:.1f} ms  process CPU mean={statistics.mean(cpu) * 1000:.1f} "
            f"p50={q(cpu, .5):.1f} p90={q(cpu, .9):.1f} p99={q(cpu, .99):.1f} ms")


def run(mode: str, appends: int, rows: int, window: int, profile: str | None,
        variants: list[frozenset[str]] | None = None, phases: bool = False) -> list[tuple[int, float, float]]:
    with (tempfile.TemporaryDirectory(prefix="k2-bench-append-") as warehouse,
          phase_timer() if phases else contextlib.nullcontext() as spent):
        config = CatalogConfig(uri=URI, warehouse=f"file://{warehouse}", namespace=f"bench_append_{uuid.uuid4().hex[:8]}")
        catalog = load_catalog(config)
        table = ensure_tables(catalog, config.namespace)["trades"]
        writer = IcebergWriter(table, table_name="trades")
        data = [batch(rows, i * rows) for i in range(min(appends, 20))]
        results = []
        times: list[float] = []
        variants = variants or [frozenset()]
        parts = _parts() if mode == "writer" and variants != [frozenset()] else {}
        by_variant: dict[frozenset[str], list[float]] = {v: [] for v in variants}
        cpu_by_variant: dict[frozenset[str], list[float]] = {v: [] for v in variants}
        profiler = cProfile.Profile() if profile else None
        every: list[tuple[float, float]] = []  # (wall, process CPU) of each append after the first window
        phased: list[tuple[float, dict[str, float]]] = []  # (wall, phases) of each append after the first window
        try:
            for i in range(appends):
                props = offsets_properties("bench", {("bench-topic", 0): (i + 1) * rows}, {"bench-topic": "id"})
                if profiler and i >= appends - window:
                    profiler.enable()
                variant = variants[i % len(variants)]
                if parts:
                    use_parts(parts, variant)
                if spent is not None:
                    spent.update(dict.fromkeys(spent, 0.0))
                start, cpu_start = time.perf_counter(), time.process_time()
                if mode == "pyiceberg":
                    table.append(data[i % len(data)], snapshot_properties=props)
                else:
                    writer.append(data[i % len(data)], properties=props)
                times.append(time.perf_counter() - start)
                by_variant[variant].append(times[-1])
                cpu_by_variant[variant].append(time.process_time() - cpu_start)
                if i >= window:
                    every.append((times[-1], cpu_by_variant[variant][-1]))
                    if spent is not None:
                        phased.append((times[-1], dict(spent)))
                if profiler:
                    profiler.disable()
                if len(times) == window:
                    snaps = len((table if mode == "pyiceberg" else writer.table).metadata.snapshots)
                    results.append((snaps, statistics.mean(times) * 1000, statistics.median(times) * 1000))
                    if len(variants) == 1:
                        print(f"{mode:10s} snapshots={snaps:5d}  mean={results[-1][1]:7.1f} ms  "
                              f"median={results[-1][2]:7.1f} ms", flush=True)
                    for v, samples in by_variant.items():
                        cpu = cpu_by_variant[v]
                        if len(variants) > 1 and samples:
                            print(f"{mode:10s} snapshots={snaps:5d}  without={','.join(sorted(v)) or 'none':32s} "
                                  f"n={len(samples):4d}  mean={statistics.mean(samples) * 1000:7.1f} ms  "
                                  f"median={statistics.median(samples) * 1000:7.1f} ms  "
                                  f"cpu mean={statistics.mean(cpu) * 1000:7.1f} ms  "
                                  f"cpu median={statistics.median(cpu) * 1000:7.1f} ms", flush=True)
                        samples.clear()
                        cpu.clear()
                    times = []
            if every and len(variants) == 1:
                print(f"{mode:10s} {distribution(every)}", flush=True)
            for line in phase_lines(phased) if phased else ():
                print(f"{mode:10s} {line}", flush=True)
        finally:
            if profiler:
                profiler.dump_stats(profile)
            for name in ("trades", "quotes", "reference_data"):
                catalog.drop_table(f"{config.namespace}.{name}")
            catalog.drop_namespace(config.namespace)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=400)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--mode", choices=("pyiceberg", "writer", "both"), default="both")
    parser.add_argument("--profile", help="write a cProfile of the last window to this file")
    parser.add_argument("--phases", action="store_true",
                        help="split each append's wall time into its phases (data files, manifests, manifest list, "
                             "catalog commit with the metadata JSON, the rest)")
    parser.add_argument("--without", default="", help=f"comma-separated parts of fast_commit to switch off: {PARTS}")
    parser.add_argument("--compare", nargs="+", metavar="PARTS",
                        help="variants taken in turn, one append each (same table, same moment): each a "
                             "comma-separated --without list, or 'none'; e.g. --compare none json-splice")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    variants = [frozenset(p for p in v.split(",") if p and p != "none") for v in (args.compare or [args.without])]
    unknown = sorted(set().union(*variants) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    if args.phases and (args.compare or args.without):
        parser.error("--phases times pyiceberg's functions that --without/--compare swap: use it alone")
    if len(variants) > 1 and any("held-manifest-lists" in v for v in variants):
        parser.error("held-manifest-lists cannot be compared append by append on one table: a variant without it "
                     "writes manifest lists that the next variant must read from their files; compare whole runs "
                     "(--without held-manifest-lists against none)")
    if any(variants) and args.mode != "writer":
        parser.error("--without/--compare switch parts of the writer path: use --mode writer")
    present = _parts() if any(variants) else {}
    for part in sorted(set().union(*variants) - set(present)):
        print(f"{part}: not in catalog.engine.fast_commit (nothing to switch off)", flush=True)
    print("variants: " + " | ".join(",".join(sorted(v)) or "none" for v in variants), flush=True)
    modes = ("pyiceberg", "writer") if args.mode == "both" else (args.mode,)
    for mode in modes:
        run(mode, args.appends, args.rows, args.window, args.profile, variants, phases=args.phases)


if __name__ == "__main__":
    main()
