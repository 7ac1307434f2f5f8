"""How fast could an Iceberg append be without pyiceberg's Python writers? (issue 15 item 1)

A lower bound, not a writer: it times the work any append must do, done with the fastest parts at
hand, on the very files a K2 append has just written, interleaved with K2's own append
(`IcebergWriter`, pyiceberg 0.12 with `catalog.engine.fast_commit`) on the same table:

- `parquet`: the batch written as Parquet with the table's writer settings (pyarrow, the same
  kwargs pyiceberg passes), and each column's statistics read from the file's footer (what a data
  file's entry in the manifest needs);
- `manifest`: the manifest K2 just wrote (one entry), written again by fastavro with the same
  schema, codec and metadata (fastavro is C: the encoding cost without pyiceberg's Python encoder);
- `manifest_list`: the same for the snapshot's manifest list (every live manifest of the table);
- `metadata_json`: the new snapshot's JSON (pydantic), and the table's whole metadata file written
  again (the I/O every commit pays: Iceberg metadata files are immutable);
- `catalog_swap`: the compare-and-swap of the metadata location, one UPDATE in autocommit on a
  row of its own in the catalog's database.

What it leaves out (so the sum is a floor): the snapshot summary's totals, partition values,
reading the manifests a merge rewrites (every 16th append K2 merges 16 one-entry manifests; the
merged manifest is then the one written again here), and any bookkeeping between the steps. It
also keeps the table's manifest list in memory (a writer that owns the table could), where
pyiceberg reads it back at every append. Each file written is read back (pyarrow, fastavro)
(the last three appends' files: the Parquet file as the batch, each Avro file as the records
pyiceberg wrote, and the manifest list by pyiceberg as the snapshot's own) before the figures are
printed, so the bench times writes that produced what it claims.

    .venv/bin/python bench/bench_append_floor.py --appends 300 --rows 350

Prints, for the appends after `--warmup`, the p50 and p90 of each piece, their sum, and K2's own
append measured in the same loop (wall and this process's CPU), then the machine's load during the
run. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_append import URI, batch, ms_quantile  # noqa: E402
from bench.common import LoadSampler, machine_line  # noqa: E402
from k2core.logging import configure  # noqa: E402

configure(json_output=True, level="WARNING")

from catalog.engine.iceberg import CatalogConfig, ensure_tables, load_catalog  # noqa: E402
from catalog.engine.writer import IcebergWriter, offsets_properties  # noqa: E402

PIECES = ("parquet", "manifest", "manifest_list", "metadata_json", "catalog_swap")


def _local(uri: str) -> str:
    return urlparse(uri).path if uri.startswith("file:") else uri


def _avro_file(path: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """(parsed writer schema, records, user metadata) of an Avro file written by pyiceberg."""
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        schema = reader.writer_schema
        records = list(reader)
        metadata = {k: v for k, v in reader.metadata.items() if not k.startswith("avro.")}
        codec = reader.codec
    metadata["__codec"] = codec
    return fastavro.parse_schema(schema), records, metadata


def _write_avro(path: str, parsed: dict[str, Any], records: list[dict[str, Any]], metadata: dict[str, str]) -> None:
    meta = {k: v for k, v in metadata.items() if k != "__codec"}
    with open(path, "wb") as f:
        fastavro.writer(f, parsed, records, codec=metadata["__codec"], metadata=meta)


def _column_stats(metadata: pq.FileMetaData) -> list[tuple[str, int, int, Any, Any]]:
    """(path, values, nulls, min, max) of every column chunk: what a data file's entry carries."""
    out = []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            s = chunk.statistics
            out.append((chunk.path_in_schema, chunk.num_values, s.null_count if s else 0,
                        s.min_raw if s and s.has_min_max else None, s.max_raw if s and s.has_min_max else None))
    return out


def run(appends: int, rows: int, warmup: int) -> dict[str, list[float]]:
    from pyiceberg.io.pyarrow import _get_parquet_writer_kwargs
    from pyiceberg.manifest import read_manifest_list
    from sqlalchemy import create_engine, text

    spent: dict[str, list[float]] = {p: [] for p in (*PIECES, "k2_append", "k2_append_cpu")}
    with tempfile.TemporaryDirectory(prefix="k2-bench-floor-") as warehouse:
        config = CatalogConfig(uri=URI, warehouse=f"file://{warehouse}", namespace=f"bench_floor_{uuid.uuid4().hex[:8]}")
        catalog = load_catalog(config)
        table = ensure_tables(catalog, config.namespace)["trades"]
        writer = IcebergWriter(table, table_name="trades")
        engine = create_engine(URI, isolation_level="AUTOCOMMIT")
        probe = f"k2_bench_floor_{uuid.uuid4().hex[:8]}"
        with engine.connect() as c:
            c.execute(text(f"CREATE TABLE {probe} (id int PRIMARY KEY, location text)"))
            c.execute(text(f"INSERT INTO {probe} VALUES (1, 'm-0')"))
        cas = text(f"UPDATE {probe} SET location = :new WHERE id = 1 AND location = :old")  # compiled once, as K2's
        scratch = Path(warehouse) / "floor"
        scratch.mkdir()
        kwargs = _get_parquet_writer_kwargs(table.properties)
        written: list[tuple[Path, Any, Any, pa.Table, Any]] = []  # what each append's files hold: read back at the end
        try:
            with engine.connect() as swap:
                for i in range(appends):
                    data = batch(rows, i * rows)
                    props = offsets_properties("bench", {("bench-topic", 0): (i + 1) * rows}, {"bench-topic": "id"})
                    wall, cpu = time.perf_counter(), time.process_time()
                    writer.append(data, properties=props)
                    k2_wall, k2_cpu = time.perf_counter() - wall, time.process_time() - cpu
                    snap = writer.table.metadata.current_snapshot()
                    list_path = _local(snap.manifest_list)
                    parsed_list, manifests, list_meta = _avro_file(list_path)
                    newest = next(m for m in manifests if m["added_snapshot_id"] == snap.snapshot_id)  # this append's
                    parsed_entry, entries, entry_meta = _avro_file(_local(newest["manifest_path"]))
                    metadata_bytes = Path(_local(writer.table.metadata_location)).read_bytes()

                    def timed(piece: str, work: Callable[[], None], *, keep: bool = i >= warmup) -> None:
                        start = time.perf_counter()
                        work()
                        if keep:
                            spent[piece].append(time.perf_counter() - start)

                    target = scratch / f"{i}"

                    def parquet(target: Path = target, data: pa.Table = data) -> None:
                        with pq.ParquetWriter(f"{target}.parquet", data.schema, store_decimal_as_integer=True,
                                              **kwargs) as w:
                            w.write_table(data)
                        _column_stats(w.writer.metadata)

                    def metadata_json(target: Path = target, snap: Any = snap, body: bytes = metadata_bytes) -> None:
                        snap.model_dump_json()
                        with open(f"{target}.metadata.json", "wb") as f:
                            f.write(body)

                    def catalog_swap(n: int = i) -> None:
                        swapped = swap.execute(cas, {"new": f"m-{n + 1}", "old": f"m-{n}"}).rowcount
                        if swapped != 1:
                            raise RuntimeError("the probe row's compare-and-swap failed")

                    timed("parquet", parquet)
                    timed("manifest", lambda t=target, p=parsed_entry, r=entries, m=entry_meta: _write_avro(
                        f"{t}.manifest.avro", p, r, m))
                    timed("manifest_list", lambda t=target, p=parsed_list, r=manifests, m=list_meta: _write_avro(
                        f"{t}.list.avro", p, r, m))
                    timed("metadata_json", metadata_json)
                    timed("catalog_swap", catalog_swap)
                    if i >= warmup:
                        spent["k2_append"].append(k2_wall)
                        spent["k2_append_cpu"].append(k2_cpu)
                    written.append((target, entries, manifests, data, snap))
            for target, entries, manifests, data, snap in written[-3:]:  # the bench wrote what it claims
                if not pq.read_table(f"{target}.parquet").equals(data):
                    raise RuntimeError(f"{target}.parquet does not read back as the batch")
                for suffix, records in ((".manifest.avro", entries), (".list.avro", manifests)):
                    with open(f"{target}{suffix}", "rb") as f:
                        if list(fastavro.reader(f)) != records:
                            raise RuntimeError(f"{target}{suffix} does not read back as the records pyiceberg wrote")
                # and pyiceberg itself reads the rewritten manifest list as the snapshot's own
                ours = read_manifest_list(writer.table.io.new_input(f"file://{target}.list.avro"))
                if list(ours) != list(snap.manifests(writer.table.io)):
                    raise RuntimeError(f"{target}.list.avro does not read in pyiceberg as the snapshot's manifest list")
        finally:
            with engine.connect() as c:
                c.execute(text(f"DROP TABLE IF EXISTS {probe}"))
            engine.dispose()
            for name in ("trades", "quotes", "reference_data"):
                catalog.drop_table(f"{config.namespace}.{name}")
            catalog.drop_namespace(config.namespace)
    return spent


def report(spent: dict[str, list[float]]) -> list[str]:
    q = ms_quantile
    floor = [sum(parts) for parts in zip(*(spent[p] for p in PIECES), strict=True)]
    lines = [f"{name:16s} p50={q(values, .5):7.2f}  p90={q(values, .9):7.2f} ms"
             for name, values in ((p, spent[p]) for p in PIECES)]
    lines.append(f"{'floor (sum)':16s} p50={q(floor, .5):7.2f}  p90={q(floor, .9):7.2f} ms")
    lines.append(f"{'K2 append':16s} p50={q(spent['k2_append'], .5):7.2f}  p90={q(spent['k2_append'], .9):7.2f} ms "
                 f"(process CPU p50 {q(spent['k2_append_cpu'], .5):.2f} ms)")
    lines.append(f"K2 append / floor at p50: {statistics.median(spent['k2_append']) / statistics.median(floor):.1f}x "
                 f"over {len(floor)} appends")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--rows", type=int, default=350)
    parser.add_argument("--warmup", type=int, default=50, help="appends not counted (the table's first manifests)")
    args = parser.parse_args()
    if args.appends <= args.warmup or args.rows < 1:
        parser.error("--appends must exceed --warmup, and --rows be at least 1")
    print(machine_line(), f"pid {os.getpid()}", flush=True)
    load = LoadSampler().start()
    spent = run(args.appends, args.rows, args.warmup)
    seen = load.stop()
    for line in report(spent):
        print(line, flush=True)
    print(f"load during the run {seen['load_min']:.2f}–{seen['load_max']:.2f}", flush=True)


if __name__ == "__main__":
    main()
