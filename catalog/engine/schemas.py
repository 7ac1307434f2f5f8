"""The Avro schemas of K2's records and the naming rules of the data model (contracts)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DATA_TYPES = ("trades", "quotes", "reference_data")
_FILES = {"trades": "trade.avsc", "quotes": "quote.avsc", "reference_data": "reference_data.avsc"}
KEY_FIELD = {"trades": "symbol", "quotes": "symbol", "reference_data": "company_id"}


def check_data_type(data_type: str) -> str:
    if data_type not in DATA_TYPES:
        raise ValueError(f"unknown data type {data_type!r}: expected one of {', '.join(DATA_TYPES)}")
    return data_type


@cache
def schema_text(data_type: str) -> str:
    """The canonical JSON text of a data type's Avro schema (what is registered)."""
    raw = json.loads((SCHEMA_DIR / _FILES[check_data_type(data_type)]).read_text())
    return json.dumps(raw, separators=(",", ":"))


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
