"""The market-data types K2 carries: one Kafka topic family, one Avro schema and one Iceberg
table each. The names are the tables' names and the `data_type` label of the metrics."""

from __future__ import annotations

DATA_TYPES: tuple[str, ...] = ("trades", "quotes", "reference_data")
