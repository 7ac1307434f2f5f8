"""What a consumer reports: its statistics (heartbeat, progress lines, the final summary) and the
labels of its metrics."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from catalog.engine.schemas import parse_topic


@dataclass
class ConsumerStats:
    started_at: float = field(default_factory=time.time)
    messages: int = 0
    rows_written: int = 0
    batches: int = 0
    gaps: int = 0
    out_of_order: int = 0
    gaps_filled: int = 0
    dlq: int = 0
    duplicates_skipped: int = 0
    evictions: int = 0
    snapshots_expired: int = 0
    snapshot_expiry_failures: int = 0
    lag: int | None = None  # total over `partitions`
    rate: float = 0.0  # messages/s since the previous report
    # One entry per assigned partition: {"topic", "partition", "committed" (next offset the table
    # and the group hold), "end" (log end), "lag" (end - committed), "last_commit_at" (ISO-8601
    # UTC of the last Kafka commit of this partition by this member)}; None where unknown.
    partitions: list[dict[str, Any]] = field(default_factory=list)
    member_id: str | None = None
    # What a stop could not send to the broker (offsets not committed, dead letters not
    # delivered), each with what happens to it: nothing is lost, the table records it or it is re-read.
    not_sent: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return time.time() - self.started_at

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration, 3)
        return data


def metric_labels(topic: str, data_type: str) -> dict[str, str]:
    """exchange, asset_class and data_type of a topic's metric series ("unknown" for a topic whose
    name does not follow the convention)."""
    try:
        parts = parse_topic(topic)
        return {"exchange": parts["exchange"], "asset_class": parts["asset_class"], "data_type": data_type}
    except ValueError:
        return {"exchange": "unknown", "asset_class": "unknown", "data_type": data_type}
