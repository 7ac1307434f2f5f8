"""Decode cost of two versions of `ingestion/engine/decode.py` in one process, interleaved, in CPU
time (process_time: it moves less than wall time on a shared machine). The decoded tables are
checked equal first. Figures go to docs/benchmarks.md.

    git show <commit>:ingestion/engine/decode.py > /tmp/decode_before.py
    .venv/bin/python bench/bench_decode_compare.py --before /tmp/decode_before.py --messages 50000 --repeats 7
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from catalog.engine import schemas, wire  # noqa: E402


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Registry:
    def get_schema(self, schema_id: int) -> str:
        return schemas.schema_text("trades")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other decode.py")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    versions = {"before": _load("decode_before", args.before),
                "after": _load("decode_after", BASE / "ingestion/engine/decode.py")}
    parsed = schemas.parsed_schema("trades")
    base = datetime(2026, 3, 10, tzinfo=UTC)
    n = args.messages
    values = [wire.encode(1, parsed, {
        "symbol": f"S{i % 200:03d}", "company_id": 1, "exchange": "ASX", "exchange_timestamp": base + timedelta(microseconds=i),
        "price": Decimal(f"{45 + i % 1000 / 1000:.6f}"), "volume": 100, "qualifiers": 0, "venue": "X", "buyer_id": None,
        "ingestion_timestamp": base, "sequence_number": i}) for i in range(n)]
    partitions, offsets = [0] * n, list(range(n))
    decoders = {k: m.BatchDecoder(data_type="trades", registry=Registry()) for k, m in versions.items()}
    tables = [d.decode(values, partitions, offsets).table for d in decoders.values()]
    assert tables[0].equals(tables[1]), "the two versions decode to different tables"
    spent: dict[str, list[float]] = {k: [] for k in decoders}
    for _ in range(args.repeats):
        for name, decoder in decoders.items():
            started = time.process_time()
            decoder.decode(values, partitions, offsets)
            spent[name].append((time.process_time() - started) * 1e6 / n)
    print(json.dumps({"messages_per_batch": n, "repeats": args.repeats,
                      **{f"{k}_cpu_us_per_msg_median": round(statistics.median(v), 3) for k, v in spent.items()},
                      **{f"{k}_range": [round(min(v), 3), round(max(v), 3)] for k, v in spent.items()},
                      "load_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
