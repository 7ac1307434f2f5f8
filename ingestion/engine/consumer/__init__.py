"""The Kafka → Iceberg consumer engine (ADR #003, #011–#016). Plain Python, no Django import.

One loop, run the same way by `manage.py consume`, the Celery task, the benchmarks and the
tests. The package, along the loop's seams:

- `config`: `ConsumerConfig` and the librdkafka settings derived from it;
- `offsets`: where an assigned partition resumes (`resume_offsets`, pure), and what each
  offset map holds;
- `loop`: `IcebergConsumer`, the loop as steps (collect → prepare → commit → Kafka offsets);
- `pipeline`: the one-deep commit pipeline (one batch in flight on the commit thread);
- `kafka_offsets`: committing offsets to Kafka after the table;
- `gaps`: sequence gaps and late events to a `GapSink`;
- `dlq`: poison messages to the dead-letter topics;
- `lag`: per-partition lag from local state; `budget`: the broker budget of a stop;
  `stats`: `ConsumerStats` and metric labels; `errors`.
"""

from ingestion.engine.consumer.config import ConsumerConfig, kafka_settings
from ingestion.engine.consumer.dlq import DeadLetterQueue
from ingestion.engine.consumer.errors import ConsumerError, DeadLettersUndelivered
from ingestion.engine.consumer.gaps import GapRecord, GapSink, LateRecord, MemoryGapSink
from ingestion.engine.consumer.loop import BatchHook, Heartbeat, IcebergConsumer, StopSignal
from ingestion.engine.consumer.offsets import resume_offsets
from ingestion.engine.consumer.stats import ConsumerStats

__all__ = [
    "BatchHook", "ConsumerConfig", "ConsumerError", "ConsumerStats", "DeadLetterQueue", "DeadLettersUndelivered",
    "GapRecord", "GapSink", "Heartbeat", "IcebergConsumer", "LateRecord", "MemoryGapSink", "StopSignal",
    "kafka_settings", "resume_offsets",
]
