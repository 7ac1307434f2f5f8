"""Per-message cost of the consumer's hot path without Kafka or Iceberg (issue #4):
batch decode (DuckDB read_avro on one container block) vs fastavro one message at a time,
and the vectorised sequence check. Figures go to docs/benchmarks.md.

    .venv/bin/python bench/bench_consumer_decode.py --messages 100000 --symbols 200 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastavro  # noqa: E402
import pyarrow as pa  # noqa: E402

from bench.common import LoadSampler, machine_line, own_cpu_seconds  # noqa: E402
from catalog.engine import schemas, wire  # noqa: E402
from ingestion.engine.decode import INDEX_COLUMN, BatchDecoder  # noqa: E402
from ingestion.engine.sequence import SequenceTracker  # noqa: E402


class Registry:
    def get_schema(self, schema_id: int) -> str:
        return schemas.schema_text("trades")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--topics", choices=("none", "one", "list"), default="list",
                        help="lineage passed to decode: no topic, one name for the batch, or one per message "
                             "(as the consumer's loop has them)")
    args = parser.parse_args()
    parsed = schemas.parsed_schema("trades")
    base = datetime(2026, 3, 10, tzinfo=UTC)
    values = []
    for i in range(args.messages):
        rec = {"symbol": f"S{i % args.symbols}", "company_id": 1, "exchange": "ASX",
               "exchange_timestamp": base + timedelta(microseconds=i), "price": Decimal("45.120000"), "volume": 1,
               "qualifiers": 0, "venue": "X", "buyer_id": None, "ingestion_timestamp": base,
               "sequence_number": i // args.symbols + 1}
        values.append(wire.encode(1, parsed, rec))
    partitions, offsets = [0] * len(values), list(range(len(values)))
    name = "market.equities.trades.asx"
    topics = {"none": None, "one": name, "list": [name] * len(values)}[args.topics]
    topic_ids = {name: "AaI8n9fle8KHaiPTYmwr3Q"}
    decoder = BatchDecoder(data_type="trades", registry=Registry())
    fast, slow, seq, fast_cpu = [], [], [], []
    tracker = SequenceTracker()
    load = LoadSampler().start()
    for _ in range(args.repeats):
        t, c = time.perf_counter(), own_cpu_seconds()
        batch = decoder.decode(values, partitions, offsets, topics=topics, topic_ids=topic_ids)
        fast.append((time.perf_counter() - t) / len(values) * 1e6)
        fast_cpu.append((own_cpu_seconds() - c) / len(values) * 1e6)
        t = time.perf_counter()
        rows = [fastavro.schemaless_reader(io.BytesIO(v[5:]), parsed, None) for v in values]
        pa.Table.from_pylist(rows)
        slow.append((time.perf_counter() - t) / len(values) * 1e6)
        tracker = SequenceTracker()  # fresh: every stream starts without history, like a batch after start-up
        tracker.check(batch.table.select(["exchange", "symbol", "sequence_number", INDEX_COLUMN]),
                      row_column=INDEX_COLUMN)
        t = time.perf_counter()  # steady state: the same streams continue in the next batch
        shifted = batch.table.set_column(batch.table.schema.get_field_index("sequence_number"), "sequence_number",
                                         pa.compute.add(batch.table.column("sequence_number"),
                                                        args.messages // args.symbols))
        tracker.check(shifted.select(["exchange", "symbol", "sequence_number", INDEX_COLUMN]), row_column=INDEX_COLUMN)
        seq.append((time.perf_counter() - t) / len(values) * 1e6)
    print(machine_line())
    print(json.dumps({"messages_per_batch": args.messages, "topics": args.topics, "symbols": args.symbols, "repeats": args.repeats,
                      "batch_decode_us_per_msg_median": round(statistics.median(fast), 3),
                      "batch_decode_us_per_msg_range": [round(min(fast), 3), round(max(fast), 3)],
                      "batch_decode_cpu_us_per_msg_median": round(statistics.median(fast_cpu), 3), **load.stop(),
                      "fastavro_per_row_us_per_msg_median": round(statistics.median(slow), 3),
                      "sequence_check_us_per_msg_median": round(statistics.median(seq), 3),
                      "batch_decode_records_per_s": round(1e6 / statistics.median(fast)),
                      "fastavro_records_per_s": round(1e6 / statistics.median(slow))}))


if __name__ == "__main__":
    main()
