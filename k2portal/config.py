"""Reading K2's settings from the environment.

Every variable the platform reads is one `Setting` in `SETTINGS`, declared once with its
default, its check and what it accepts; a bad value stops start-up with a message naming the
variable instead of a traceback deep inside a library (every bad variable, not only the first).
The checks are plain functions: reading the settings imports no validation library, so every
`manage.py` command, even `help`, starts without pydantic (issue #10 item 6). `load` turns the raw values into
`K2Config`, the resolved settings (paths made absolute, the catalog URI derived, S3 options),
which Django keeps as `settings.K2`. The README's settings table is written from `VARIABLES`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

from catalog.engine.storage import S3Options, is_s3
from ingestion.engine.limits import MAX_COMMIT_INTERVAL_MS

BASE_DIR = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting has a value K2 cannot use. The message names the variable and what it accepts."""


# --- What each kind of value accepts (a ValueError's text is the "why" of the message) ------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(value: Any) -> bool:
    low = str(value).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("not a yes/no value")


def _int(minimum: int = 1, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("not an integer") from None
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError("out of range")
        return number
    return check


def _url(*schemes: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value)
        try:
            parsed = urlparse(text)
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if parsed.scheme not in schemes:
            raise ValueError(f"scheme must be one of {', '.join(schemes)}")
        if parsed.scheme not in ("file", "sqlite", "unix") and not parsed.hostname:
            raise ValueError("no host")
        return text
    return check


def _host_ports(value: Any) -> str:
    text = str(value)
    for part in text.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part.strip()!r} is not host:port")
    return text


def _size(value: Any) -> str:
    text = str(value)
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", text, flags=re.IGNORECASE):
        raise ValueError("not a size")
    return text.strip()


def _warehouse(value: Any) -> str:
    text = str(value)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme not in ("file", "s3", "s3a", "gs", "abfs"):
            raise ValueError(f"unknown scheme {scheme!r}")
    return text


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("not a log level")
    return level


def _identifier(value: Any) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", text):
        raise ValueError("not an identifier")
    return text


@dataclass(frozen=True)
class Setting:
    """One environment variable: the `K2Config` field it fills, its default (already in its final
    type, so not checked), the check a set value passes (None: any text; a ValueError's text is the
    "why" of the message) and what it accepts (the message's and the README's text)."""

    field: str
    name: str
    default: Any
    check: Callable[[str], Any] | None
    accepts: str


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/k2", _url("postgres", "postgresql", "pgsql"),
        "a postgres:// URL (database created by `make run` when missing)"),
    Setting("redis_url", "REDIS_URL", "redis://127.0.0.1:6379/0", _url("redis", "rediss", "unix"), "a redis:// URL"),
    Setting("kafka_bootstrap", "K2_KAFKA_BOOTSTRAP", None, _host_ports,
        "host:port[,host:port…] of a Kafka cluster; unset starts the embedded Tansu broker"),
    Setting("embedded_broker_port", "K2_EMBEDDED_BROKER_PORT", 19092, _int(1, 65535), "a TCP port for the embedded broker (1–65535)"),
    Setting("kafka_session_timeout_ms", "K2_KAFKA_SESSION_TIMEOUT_MS", None, _int(1000),
        "consumer session.timeout.ms (integer ≥ 1000); default 6000 on the embedded broker, Kafka's own default otherwise"),
    Setting("schema_registry_url", "K2_SCHEMA_REGISTRY_URL", None, _url("http", "https"),
        "http(s):// URL of a Confluent Schema Registry; unset uses K2's embedded registry in Postgres"),
    Setting("schema_registry_basic_auth", "K2_SCHEMA_REGISTRY_BASIC_AUTH", None, None,
        "user:password for the registry at K2_SCHEMA_REGISTRY_URL (K2's own: any user, an API key with schemas:write)"),
    Setting("iceberg_catalog_uri", "K2_ICEBERG_CATALOG_URI", None,
            _url("postgresql+psycopg", "postgresql", "postgresql+psycopg2", "sqlite", "http", "https"),
        "an SQLAlchemy URL (postgresql+psycopg://…) for the Iceberg SQL catalog `k2`, or the http(s):// URL of an "
        "Iceberg REST catalog; unset: the DATABASE_URL database"),
    Setting("iceberg_namespace", "K2_ICEBERG_NAMESPACE", "market_data", _identifier,
        "an identifier (letters, digits, _): the Iceberg namespace of the market-data tables, written by consumers "
        "and maintenance and read by the API"),
    Setting("warehouse", "K2_WAREHOUSE", "var/warehouse", _warehouse, "a local path, a file:// URI or an s3:// URI where Iceberg data files live"),
    Setting("s3_endpoint", "K2_S3_ENDPOINT", None, _url("http", "https"),
        "http(s):// URL of an S3-compatible server (MinIO) for an s3:// warehouse; unset: AWS S3"),
    Setting("s3_region", "K2_S3_REGION", "us-east-1", None, "the S3 region of the warehouse bucket"),
    Setting("s3_path_style", "K2_S3_PATH_STYLE", None, _bool,
        "1/true/yes or 0/false/no: path-style bucket addressing; unset: on when K2_S3_ENDPOINT is set, else off"),
    Setting("aws_access_key_id", "AWS_ACCESS_KEY_ID", None, None, "the S3 access key of an s3:// warehouse (pyiceberg and DuckDB)"),
    Setting("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", None, None, "the S3 secret key of an s3:// warehouse"),
    Setting("aws_session_token", "AWS_SESSION_TOKEN", None, None, "an S3 session token, with temporary credentials"),
    Setting("consumer_batch_size", "K2_CONSUMER_BATCH_SIZE", 50_000, _int(),
        "a positive integer: the largest batch (batches adapt to what is waiting; ADR #015's 1,000 is the floor)"),
    Setting("consumer_max_batch_ms", "K2_CONSUMER_MAX_BATCH_MS", 500, _int(),
        "a positive integer: flush a partial batch once its first message is this many ms old (from its Kafka timestamp)"),
    Setting("consumer_min_commit_interval_ms", "K2_CONSUMER_MIN_COMMIT_INTERVAL_MS", 100, _int(0, MAX_COMMIT_INTERVAL_MS),
        f"an integer 0-{MAX_COMMIT_INTERVAL_MS}: with thin traffic, hand a batch to the Iceberg commit at most this often (ms); lower gives "
        "fresher data for more CPU per record and more snapshots (0: whenever the last commit is done)"),
    Setting("duckdb_threads", "K2_DUCKDB_THREADS", None, _int(1, 1024),
        "a positive integer: DuckDB worker threads per query connection; unset: DuckDB's default (all cores)"),
    Setting("duckdb_memory_limit", "K2_DUCKDB_MEMORY_LIMIT", None, _size,
        "a DuckDB size such as 512MB or 4GB; unset: DuckDB's default (80 % of RAM)"),
    Setting("query_memory_limit", "K2_QUERY_MEMORY_LIMIT", "1GB", _size,
        "a DuckDB size: the memory limit of each saved-query run (its own DuckDB database)"),
    Setting("query_max_result_bytes", "K2_QUERY_MAX_RESULT_BYTES", 268_435_456, _int(),
        "a positive integer: a saved-query result larger than this many bytes (Arrow, before encoding) is refused (422)"),
    Setting("query_max_concurrent_runs", "K2_QUERY_MAX_CONCURRENT_RUNS", 2, _int(1, 1000),
        "a positive integer: saved-query runs one API key (or user) may have in flight at once (429 beyond)"),
    Setting("fresh_read_timeout_ms", "K2_FRESH_READ_TIMEOUT_MS", 5000, _int(10, 600_000),
        "an integer 10-600000: the longest a fresh read (`fresh=true` on /trades, /quotes, /ohlcv) reads Kafka "
        "beyond the snapshot, in ms; a read cut short says so (meta.fresh.complete = false)"),
    Setting("fresh_read_max_messages", "K2_FRESH_READ_MAX_MESSAGES", 1_000_000, _int(1, 100_000_000),
        "an integer 1-100000000: the most messages a fresh read takes beyond the snapshot (a longer tail is cut "
        "and says so)"),
    Setting("snapshot_retention_hours", "K2_SNAPSHOT_RETENTION_HOURS", 168, _int(),
        "a positive integer: hours of Iceberg snapshots kept for time travel (default 7 days)"),
    Setting("snapshot_full_detail_minutes", "K2_SNAPSHOT_FULL_DETAIL_MINUTES", 1, _int(),
        "a positive integer: snapshots younger than this are all kept; older ones are thinned"),
    Setting("snapshot_thin_minutes", "K2_SNAPSHOT_THIN_MINUTES", 5, _int(),
        "a positive integer: beyond the full-detail window, keep the newest snapshot of each such interval"),
    Setting("consumer_snapshot_expiry_seconds", "K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS", 60, _int(),
        "a positive integer: how often each consumer expires and thins its own table's snapshots"),
    Setting("catalog_retry_seconds", "K2_CATALOG_RETRY_SECONDS", 60, _int(),
        "a positive integer: how long a consumer retries an unreachable Iceberg catalog (backoff capped at 10 s) "
        "before it fails"),
    Setting("orphan_min_age_minutes", "K2_ORPHAN_MIN_AGE_MINUTES", 60, _int(),
        "a positive integer: maintenance deletes unreferenced table files only once they are this old"),
    Setting("maintenance_interval_minutes", "K2_MAINTENANCE_INTERVAL_MINUTES", 15, _int(),
        "a positive integer: how often Celery beat compacts small files and expires snapshots"),
    Setting("web_addr", "K2_WEB_ADDR", "127.0.0.1:8000", _host_ports, "host:port the `make run` web server listens on"),
    Setting("consumer_slots", "K2_CONSUMER_SLOTS", 4, _int(1, 64), "a positive integer: Celery pool processes for consumer tasks under `make run`"),
    Setting("consumer_stale_seconds", "K2_CONSUMER_STALE_SECONDS", 15, _int(5),
        "a positive integer: a running consumer whose heartbeat (written every 2 s by its process) "
        "is older than this is marked failed (and restarted)"),
    Setting("consumer_max_restarts", "K2_CONSUMER_MAX_RESTARTS", 5, _int(),
        "a positive integer: automatic restarts of one consumer allowed per K2_CONSUMER_RESTART_WINDOW_MINUTES"),
    Setting("consumer_restart_window_minutes", "K2_CONSUMER_RESTART_WINDOW_MINUTES", 10, _int(),
        "a positive integer: the window over which K2_CONSUMER_MAX_RESTARTS is counted"),
    Setting("log_json", "K2_LOG_JSON", None, _bool, "1/true/yes or 0/false/no; unset: JSON when stdout is not a terminal"),
    Setting("log_level", "K2_LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
    Setting("admin_password", "K2_ADMIN_PASSWORD", None, None, "password for the `admin` user `make run` creates; unset: generated and printed once"),
    Setting("metrics_dir", "K2_METRICS_DIR", "var/prometheus", None, "directory for prometheus_client multiprocess files"),
    Setting("secret_key", "SECRET_KEY", None, None, "any long random string; required when DEBUG is off outside tests"),
    Setting("debug", "DEBUG", False, _bool, "1/true/yes or 0/false/no"),
    Setting("allowed_hosts", "ALLOWED_HOSTS", "127.0.0.1,localhost", None, "comma-separated host names"),
)


@dataclass(frozen=True)
class Variable:
    """One environment variable as the README's settings table shows it."""

    name: str
    default: str | None
    accepts: str


def _shown(default: Any) -> str | None:
    if default is None:
        return None
    if isinstance(default, bool):
        return str(int(default))
    return str(default)


VARIABLES: tuple[Variable, ...] = tuple(Variable(s.name, _shown(s.default), s.accepts) for s in SETTINGS)


def _read(env: Mapping[str, str]) -> SimpleNamespace:
    """Each setting's value from `env` (its default when unset or empty); ConfigError naming every bad
    variable, in the order of SETTINGS."""
    values: dict[str, Any] = {}
    lines = []
    for setting in SETTINGS:
        value = env.get(setting.name, "")
        if value == "":
            values[setting.field] = setting.default
            continue
        try:
            values[setting.field] = value if setting.check is None else setting.check(value)
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            lines.append(f"{setting.name}={value!r} is not valid{detail}: {setting.name} accepts {setting.accepts}.")
    if lines:
        raise ConfigError("\n".join(lines))
    return SimpleNamespace(**values)


@dataclass(frozen=True)
class K2Config:
    """The resolved settings. Built once by `load`; engines receive the pieces they need.
    Defaults are declared in `SETTINGS`: this class only holds what `load` made of them."""

    database_url: str
    redis_url: str
    kafka_bootstrap: str | None
    embedded_broker_port: int
    kafka_session_timeout_ms: int | None
    schema_registry_url: str | None
    schema_registry_basic_auth: str | None
    iceberg_catalog_uri: str
    iceberg_namespace: str
    warehouse: str
    consumer_batch_size: int
    consumer_max_batch_ms: int
    consumer_min_commit_interval_ms: int
    duckdb_threads: int | None
    snapshot_retention_hours: int
    snapshot_full_detail_minutes: int
    snapshot_thin_minutes: int
    consumer_snapshot_expiry_seconds: int
    catalog_retry_seconds: int
    orphan_min_age_minutes: int
    maintenance_interval_minutes: int
    duckdb_memory_limit: str | None
    query_memory_limit: str
    query_max_result_bytes: int
    query_max_concurrent_runs: int
    fresh_read_timeout_ms: int
    fresh_read_max_messages: int
    log_json: bool | None
    log_level: str
    admin_password: str | None
    metrics_dir: Path
    secret_key: str | None
    debug: bool
    allowed_hosts: list[str]
    consumer_stale_seconds: int
    consumer_max_restarts: int
    consumer_restart_window_minutes: int
    web_addr: str
    consumer_slots: int
    s3: S3Options | None  # K2_S3_* and AWS_* (catalog.engine.storage), for an s3:// warehouse

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_broker_port}"

    @property
    def session_timeout_ms(self) -> int | None:
        if self.kafka_session_timeout_ms is not None:
            return self.kafka_session_timeout_ms
        return 6000 if self.uses_embedded_broker else None


def catalog_uri_from_database_url(database_url: str) -> str:
    """The SQLAlchemy form of a postgres:// URL (psycopg 3 driver)."""
    parsed = urlparse(database_url)
    return parsed._replace(scheme="postgresql+psycopg").geturl()


def _under_base(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else BASE_DIR / path


def _s3(raw: SimpleNamespace, warehouse: str) -> S3Options | None:
    """The S3 settings when the warehouse is on S3 or K2_S3_ENDPOINT is set, else None."""
    if raw.s3_endpoint is None and not is_s3(warehouse):
        return None
    return S3Options(endpoint=raw.s3_endpoint, region=raw.s3_region.strip(),
                     path_style=bool(raw.s3_endpoint) if raw.s3_path_style is None else raw.s3_path_style,
                     access_key_id=raw.aws_access_key_id, secret_access_key=raw.aws_secret_access_key,
                     session_token=raw.aws_session_token)


def load(env: Mapping[str, str] | None = None) -> K2Config:
    """The settings from `env` (default: the process environment); ConfigError naming each bad variable.
    An empty value counts as unset."""
    raw = _read(os.environ if env is None else env)
    warehouse = raw.warehouse if "://" in raw.warehouse else _under_base(raw.warehouse).resolve().as_uri()
    return K2Config(
        database_url=raw.database_url, redis_url=raw.redis_url, kafka_bootstrap=raw.kafka_bootstrap,
        embedded_broker_port=raw.embedded_broker_port, kafka_session_timeout_ms=raw.kafka_session_timeout_ms,
        schema_registry_url=raw.schema_registry_url, schema_registry_basic_auth=raw.schema_registry_basic_auth,
        iceberg_catalog_uri=raw.iceberg_catalog_uri or catalog_uri_from_database_url(raw.database_url),
        iceberg_namespace=raw.iceberg_namespace, warehouse=warehouse,
        consumer_batch_size=raw.consumer_batch_size, consumer_max_batch_ms=raw.consumer_max_batch_ms,
        consumer_min_commit_interval_ms=raw.consumer_min_commit_interval_ms,
        duckdb_threads=raw.duckdb_threads, snapshot_retention_hours=raw.snapshot_retention_hours,
        snapshot_full_detail_minutes=raw.snapshot_full_detail_minutes, snapshot_thin_minutes=raw.snapshot_thin_minutes,
        consumer_snapshot_expiry_seconds=raw.consumer_snapshot_expiry_seconds,
        catalog_retry_seconds=raw.catalog_retry_seconds, orphan_min_age_minutes=raw.orphan_min_age_minutes,
        maintenance_interval_minutes=raw.maintenance_interval_minutes, duckdb_memory_limit=raw.duckdb_memory_limit,
        query_memory_limit=raw.query_memory_limit, query_max_result_bytes=raw.query_max_result_bytes,
        query_max_concurrent_runs=raw.query_max_concurrent_runs, fresh_read_timeout_ms=raw.fresh_read_timeout_ms,
        fresh_read_max_messages=raw.fresh_read_max_messages, log_json=raw.log_json, log_level=raw.log_level,
        admin_password=raw.admin_password, metrics_dir=_under_base(raw.metrics_dir), secret_key=raw.secret_key,
        debug=raw.debug, allowed_hosts=[h.strip() for h in raw.allowed_hosts.split(",") if h.strip()],
        consumer_stale_seconds=raw.consumer_stale_seconds, consumer_max_restarts=raw.consumer_max_restarts,
        consumer_restart_window_minutes=raw.consumer_restart_window_minutes,
        web_addr=raw.web_addr, consumer_slots=raw.consumer_slots, s3=_s3(raw, warehouse),
    )
