"""K2's bottom layer: plain Python shared by every other package, with no Django, no Celery and
no side effects at import (nothing reads settings, opens a connection or starts a thread).

- `k2core.datatypes`: the market-data types (trades, quotes, reference_data).
- `k2core.duckdb_conn`: DuckDB connections with the avro/iceberg(/httpfs) extensions from their wheels.
- `k2core.metrics`: every `k2_` Prometheus metric, declared once.
- `k2core.logging`: structlog configuration and the correlation id (ADR #008).
- `k2core.kafka`: Kafka client constants shared by the producer, the consumer and replay.
- `k2core.paths`: the project's root directory (default locations of var/ and data/).

Everything else may import k2core; k2core imports none of K2's other packages (import-linter
contract "layers" in pyproject.toml).
"""
