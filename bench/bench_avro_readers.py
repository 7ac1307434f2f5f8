"""Avro container readers that could replace DuckDB's `read_avro` in `decode.BatchDecoder._fast`
(issue #15 item 4): CPU per message on the consumer's own kind of block (Confluent bodies of the
trades schema, back to back, one block), interleaved, at several batch sizes; and `--hang-check`:
each reader on small blocks with a bad body (truncated, trailing bytes, not Avro, invalid UTF-8),
each in a child process with a timeout, since a reader that never returns would stop the
consumer. Readers not installed are left out: DataFusion and polars-avro are not project
dependencies, try them from a throwaway environment that also sees the project's packages:

    python3 -m venv /tmp/k2venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/k2venv/lib/python3.11/site-packages/shared.pth
    /tmp/k2venv/bin/pip install --no-deps datafusion==55.0.0 polars==2.1.0 polars-runtime-32==2.1.0 polars-avro==0.13.0
    /tmp/k2venv/bin/python bench/bench_avro_readers.py --sizes 50000,5000,500,50,1 --repeats 7
    /tmp/k2venv/bin/python bench/bench_avro_readers.py --hang-check

Decimal columns are given to every reader as plain `bytes` (the decoder converts them itself).
Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog.engine import schemas, wire  # noqa: E402
from ingestion.engine.decode import container_block  # noqa: E402
from k2core.duckdb_conn import DuckDBConfig, connect  # noqa: E402

SCRATCH = Path("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")


def reader_schema() -> str:
    """The trades schema with its decimals as plain bytes (what `read_avro` gives the decoder)."""
    schema = json.loads(schemas.schema_text("trades"))
    for f in schema["fields"]:
        if isinstance(f["type"], dict) and f["type"].get("logicalType") == "decimal":
            f["type"] = "bytes"
    return json.dumps(schema)


def bodies(n: int) -> list[bytes]:
    parsed = schemas.parsed_schema("trades")
    base = datetime(2026, 3, 10, tzinfo=UTC)
    return [wire.encode(1, parsed, {
        "symbol": f"S{i % 200:03d}", "company_id": 1, "exchange": "ASX", "exchange_timestamp": base + timedelta(microseconds=i),
        "price": Decimal(f"{45 + i % 1000 / 1000:.6f}"), "volume": 100, "qualifiers": 0, "venue": "X",
        "buyer_id": None if i % 3 else f"B{i}", "ingestion_timestamp": base,
        "sequence_number": i if i % 7 else None})[5:] for i in range(n)]


def readers() -> dict[str, Callable[[bytes], Any]]:
    """name -> read(block) returning an Arrow table; each writes the scratch file the way the
    decoder does (DuckDB and DataFusion read files; polars-avro reads the bytes)."""
    found: dict[str, Callable[[bytes], Any]] = {}
    con = connect(DuckDBConfig(threads=1))
    con.execute("SET enable_external_file_cache=false")

    def via_file(read: Callable[[str], Any]) -> Callable[[bytes], Any]:
        def run(block: bytes) -> Any:
            path = SCRATCH / f"k2-bench-avro-{os.getpid()}.avro"
            path.write_bytes(block)
            try:
                return read(str(path))
            finally:
                path.unlink(missing_ok=True)
        return run

    found["duckdb read_avro"] = via_file(lambda p: con.execute(f"SELECT * FROM read_avro('{p}')").to_arrow_table())
    try:
        import datafusion

        ctx = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(1))
        found[f"datafusion {datafusion.__version__} read_avro"] = via_file(lambda p: ctx.read_avro(p).to_arrow_table())
    except ImportError:
        pass
    try:
        import polars_avro

        found["polars-avro read_avro"] = lambda block: polars_avro.read_avro(io.BytesIO(block)).to_arrow()
    except ImportError:
        pass
    return found


BAD = {  # name -> (bodies of a 3-record block, with one bad body; record count in the header)
    "truncated body": lambda b: ([b[0], b[1][:-6], b[2]], 3),
    "trailing bytes, middle body": lambda b: ([b[0], b[1] + b"\x02\x02", b[2]], 3),
    "trailing bytes, last body": lambda b: ([b[0], b[1], b[2] + b"\x02\x02"], 3),
    "not Avro": lambda b: ([b[0], b"not avro at all", b[2]], 3),
    "invalid UTF-8": lambda b: ([b[0], b[1][:1] + b"\xff\xfe" + b[1][3:], b[2]], 3),
}


def hang_check(timeout: float) -> None:
    for reader in readers():
        for case in BAD:
            try:
                done = subprocess.run([sys.executable, __file__, "--one", reader, case], capture_output=True,
                                      text=True, timeout=timeout)
                said = (done.stdout.strip() or done.stderr.strip().splitlines()[-1])[:140]
            except subprocess.TimeoutExpired:
                said = f"NO ANSWER after {timeout:.0f} s (killed)"
            print(json.dumps({"reader": reader, "case": case, "result": said}), flush=True)


def one(reader: str, case: str) -> None:
    good = bodies(3)
    parts, count = BAD[case](good)
    block = container_block(reader_schema(), b"".join(parts), count)
    try:
        table = readers()[reader](block)
        print(f"{table.num_rows} rows, no error")
    except Exception as exc:  # noqa: BLE001 - what each reader raises is the point
        print(f"error: {str(exc).splitlines()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000,5000,500,50,1", help="messages per block")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hang-check", action="store_true")
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(*args.one)
        return
    if args.hang_check:
        hang_check(args.timeout)
        return
    found = readers()
    sizes = [int(s) for s in args.sizes.split(",")]
    every = bodies(max(sizes))
    text = reader_schema()
    for n in sizes:
        block = container_block(text, b"".join(every[:n]), n)
        rows = {name: read(block).num_rows for name, read in found.items()}
        assert set(rows.values()) == {n}, rows
        calls = max(3, min(200, 200_000 // n))
        spent: dict[str, list[float]] = {name: [] for name in found}
        for _ in range(args.repeats):
            for name, read in found.items():
                started = time.process_time()
                for _ in range(calls):
                    read(block)
                spent[name].append((time.process_time() - started) * 1e6 / (n * calls))
        print(json.dumps({"messages_per_block": n, "calls": calls, "repeats": args.repeats,
                          **{name: {"cpu_us_per_msg_median": round(statistics.median(v), 3),
                                    "range": [round(min(v), 3), round(max(v), 3)]} for name, v in spent.items()},
                          "load_1m": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
