"""The Avro schemas of K2's records and the naming rules of the data model (contracts)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import fastavro

from catalog.engine.datatypes import DATA_TYPES, SCHEMA_DIR, SPECS, spec

__all__ = ["DATA_TYPES", "KEY_FIELD", "SCHEMA_DIR", "check_data_type", "consumer_group", "dlq_topic",
           "parse_topic", "parsed_schema", "schema_text", "subject_name", "topic_name"]

KEY_FIELD = {name: s.key_field for name, s in SPECS.items()}  # the message key of each data type (ADR #009)


def check_data_type(data_type: str) -> str:
    return spec(data_type).name


@cache
def schema_text(data_type: str) -> str:
    """The canonical JSON text of a data type's Avro schema (what is registered)."""
    return spec(data_type).schema_text


@cache
def parsed_schema(data_type: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_text(data_type)))


def topic_name(*, asset_class: str, data_type: str, exchange: str) -> str:
    """`market.{asset_class}.{data_type}.{exchange}`, lower case (data model)."""
    return f"market.{asset_class}.{check_data_type(data_type)}.{exchange}".lower()


def parse_topic(topic: str) -> dict[str, str]:
    """The parts of a K2 topic name; ValueError when it does not follow the pattern."""
    parts = topic.split(".")
    if len(parts) != 4 or parts[0] != "market" or parts[2] not in DATA_TYPES:
        raise ValueError(f"{topic!r} is not a K2 topic name (market.<asset_class>.<data_type>.<exchange>)")
    return {"asset_class": parts[1], "data_type": parts[2], "exchange": parts[3]}


def subject_name(topic: str) -> str:
    """TopicNameStrategy: `{topic}-value`."""
    return f"{topic}-value"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def consumer_group(data_type: str) -> str:
    """ADR #012: `k2-iceberg-writer-{data_type}`."""
    return f"k2-iceberg-writer-{check_data_type(data_type)}"
