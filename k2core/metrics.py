"""The metrics registry (ADR #007): every `k2_` metric, pre-registered at import.

Names, help texts, label names and buckets live here and nowhere else. Labels are the
standard low-cardinality ones (exchange, asset_class, data_type, component, table, …): no
symbol label, since the number of symbols is unbounded. Registering a name twice raises at
import. Metrics from Celery worker processes are collected in prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `make run`), and the portal's /metrics
view aggregates every process's files.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# ADR #007: HFT-optimised latency buckets, 1 ms – 5 s.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)

EXCHANGE_LABELS = ("exchange", "asset_class")
STREAM_LABELS = ("exchange", "asset_class", "data_type")

_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_REGISTRY: dict[str, Counter | Gauge | Histogram] = {}


class DuplicateMetricError(ValueError):
    pass


def _add(metric: Any, key: str) -> Any:
    if key in _REGISTRY:
        raise DuplicateMetricError(f"metric {key!r} registered twice")
    _REGISTRY[key] = metric
    return metric


def counter(key: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
    return _add(Counter(f"k2_{key}", help_text, labels), key)


def gauge(key: str, help_text: str, labels: tuple[str, ...] = (), mode: str = "max") -> Gauge:
    kwargs = {"multiprocess_mode": mode} if _MULTIPROCESS else {}
    return _add(Gauge(f"k2_{key}", help_text, labels, **kwargs), key)


def histogram(key: str, help_text: str, labels: tuple[str, ...] = (),
              buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
    return _add(Histogram(f"k2_{key}", help_text, labels, buckets=buckets), key)


# --- producer (ADR #009, #010) ---
MESSAGES_PRODUCED = counter("kafka_messages_produced_total", "Messages acknowledged by the broker.", STREAM_LABELS)
PRODUCE_ERRORS = counter("kafka_produce_errors_total", "Messages the broker did not acknowledge.", (*STREAM_LABELS, "error"))
ROWS_REJECTED = counter("producer_rows_rejected_total", "Input rows rejected before producing (kept in the DLQ file).", (*STREAM_LABELS, "reason"))
PRODUCE_ACK_LATENCY = histogram("kafka_produce_ack_latency_seconds", "Produce call to broker acknowledgement.", STREAM_LABELS)

# --- consumer (ADR #003, #012–#016) ---
MESSAGES_CONSUMED = counter("kafka_messages_consumed_total", "Messages consumed from Kafka.", STREAM_LABELS)
MESSAGES_WRITTEN = counter("iceberg_rows_written_total", "Rows committed to Iceberg by consumers.", STREAM_LABELS)
DLQ_MESSAGES = counter("dlq_messages_total", "Poison messages sent to the dead-letter topic.", (*STREAM_LABELS, "reason"))
DUPLICATES_SKIPPED = counter("consumer_duplicates_skipped_total", "Messages skipped because the table already holds their offsets.", STREAM_LABELS)
CONSUMER_BATCHES = counter("consumer_batches_total", "Batches written and committed.", STREAM_LABELS)
CONSUMER_BATCH_SIZE = histogram("consumer_batch_size", "Records per committed batch.", STREAM_LABELS, BATCH_SIZE_BUCKETS)
CONSUMER_BATCH_DURATION = histogram("consumer_batch_duration_seconds", "Decode + write + commit of one batch.", STREAM_LABELS)
CONSUMER_LAG = gauge("kafka_consumer_lag_messages",
                     "Log end offset minus the offset the table and group hold, per assigned partition "
                     "(a series per partition the member owns; removed on revocation).",
                     (*STREAM_LABELS, "group", "partition"))
CONSUMERS_RUNNING = gauge("consumers_running", "Consumer loops running.", STREAM_LABELS, mode="livesum")
CONSUMER_HEARTBEAT = gauge("consumer_last_heartbeat_timestamp_seconds",
                           "Unix time of the consumer loop's last heartbeat (set at start and every progress interval).",
                           (*STREAM_LABELS, "group"))
KAFKA_COMMIT_ERRORS = counter("kafka_commit_errors_total", "Failed Kafka offset commits.", STREAM_LABELS)

# --- sequence tracking (ADR #011, #014) ---
SEQUENCE_GAPS = counter("sequence_gaps_detected_total", "Sequence gaps detected (ADR #014).", STREAM_LABELS)
SEQUENCE_GAP_MESSAGES = counter("sequence_gap_missing_messages_total", "Sequence numbers missing in detected gaps.", STREAM_LABELS)
SEQUENCE_OUT_OF_ORDER = counter("sequence_out_of_order_total", "Events whose sequence number repeated or stepped back.", STREAM_LABELS)
SEQUENCE_GAPS_FILLED = counter("sequence_gaps_filled_total", "Gaps fully filled by late events.", STREAM_LABELS)
SEQUENCE_EVICTIONS = counter("sequence_tracker_evictions_total", "Streams evicted from the LRU sequence tracker.", STREAM_LABELS)
SEQUENCE_TRACKED = gauge("sequence_tracker_streams", "Streams held in the sequence tracker.", STREAM_LABELS)

# --- storage (ADR #006) ---
ICEBERG_WRITE_DURATION = histogram("iceberg_write_duration_seconds", "Iceberg append duration.", (*EXCHANGE_LABELS, "table", "operation"))
ICEBERG_WRITE_ATTEMPTS = counter("iceberg_write_attempts_total", "Iceberg write attempts, first tries and retries.", ("table", "operation"))
ICEBERG_WRITE_RETRIES = counter("iceberg_write_retries_total", "Iceberg write retries after a transient error.", ("table", "operation", "error"))
ICEBERG_WRITE_FAILURES = counter("iceberg_write_failures_total", "Iceberg writes that failed for good.", ("table", "operation", "error"))
ICEBERG_COMPACTIONS = counter("iceberg_compactions_total", "Partition compactions committed.", ("table",))

# --- query (ADR #001) ---
QUERY_DURATION = histogram("query_duration_seconds", "DuckDB query duration.", ("query_type",))
QUERY_ERRORS = counter("query_errors_total", "Queries that failed.", ("query_type", "error"))
QUERY_ROWS = counter("query_rows_returned_total", "Rows returned by queries.", ("query_type",))
API_REQUESTS = counter("api_requests_total", "JSON API requests.", ("endpoint", "status"))
API_RATE_LIMITED = counter("api_rate_limited_total", "API requests refused by the rate limit.", ())
FRESH_READS = counter("fresh_reads_total", "Fresh reads of the Kafka tail beyond a snapshot, by how they were answered "
                      "(standing: from the standing reader; direct: fetched for the read; failed: the broker did not answer).",
                      ("data_type", "path"))
FRESH_READ_DURATION = histogram("fresh_read_duration_seconds", "Reading the Kafka tail of one fresh read.", ("data_type", "path"))
FRESH_READ_INCOMPLETE = counter("fresh_reads_incomplete_total", "Fresh reads cut by their time or size cap.", ("data_type",))
FRESH_READ_DEAD_LETTERS = counter("fresh_read_dead_letters_total",
                                  "Tail messages fresh reads left out as undecodable (the consumer dead-letters them).",
                                  ("data_type",))

# --- platform ---
HEALTH_CHECK_FAILURES = counter("health_check_failures_total", "Failed dependency checks in /healthz.", ("dependency",))
ERRORS = counter("errors_total", "Errors by component.", ("component", "error"))


# Label values known before anything happens. Counters with these label sets are created at 0 at
# process start (`initialise_known_series`), so the first event is an increase Prometheus sees:
# `increase()`/`rate()` over a series that appears with value 1 is 0, and an alert on it never fires.
STREAM_COUNTERS = ("kafka_messages_produced_total", "kafka_messages_consumed_total", "iceberg_rows_written_total",
                   "consumer_duplicates_skipped_total", "consumer_batches_total", "kafka_commit_errors_total",
                   "sequence_gaps_detected_total", "sequence_gap_missing_messages_total",
                   "sequence_out_of_order_total", "sequence_gaps_filled_total", "sequence_tracker_evictions_total")
# Exceptions that end a write after the retries (writer._transient): the `error` label's known values.
KNOWN_WRITE_ERRORS = ("CommitFailedException", "OperationalError", "ConnectionError", "TimeoutError")


def initialise_known_series(*, exchanges: tuple[str, ...], asset_classes: tuple[str, ...],
                            data_types: tuple[str, ...], dlq_reasons: tuple[str, ...],
                            tables: tuple[str, ...] | None = None,
                            write_errors: tuple[str, ...] = KNOWN_WRITE_ERRORS) -> int:
    """Create every known label set of the alerting counters at 0; returns how many series.

    Idempotent (`labels()` of an existing child returns it unchanged). Tables are named after
    their data type. Label values only known when they happen (another exception class) still
    appear at their first increment; the alert rules also fire on such a new series."""
    count = 0
    for exchange in exchanges:
        for asset_class in asset_classes:
            for data_type in data_types:
                stream = {"exchange": exchange, "asset_class": asset_class, "data_type": data_type}
                for key in STREAM_COUNTERS:
                    _REGISTRY[key].labels(**stream)
                    count += 1
                for reason in dlq_reasons:
                    DLQ_MESSAGES.labels(**stream, reason=reason)
                    count += 1
    for table in tables if tables is not None else data_types:
        for error in write_errors:
            ICEBERG_WRITE_FAILURES.labels(table=table, operation="append", error=error)
            count += 1
    return count


def all_metrics() -> dict[str, Counter | Gauge | Histogram]:
    return dict(_REGISTRY)


def _typed(key: str, kind: type[Any]) -> Any:
    metric = _REGISTRY[key]
    if not isinstance(metric, kind):
        raise TypeError(f"{key} is a {type(metric).__name__}, not a {kind.__name__}")
    return metric


def get_counter(key: str) -> Counter:
    return _typed(key, Counter)


def get_gauge(key: str) -> Gauge:
    return _typed(key, Gauge)


def get_histogram(key: str) -> Histogram:
    return _typed(key, Histogram)
