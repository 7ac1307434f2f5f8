"""Reading K2's settings from the environment.

Every variable the platform reads is declared here once, with its default and what it
accepts, so that a bad value stops start-up with a message naming the variable instead of
a traceback deep inside a library. The README's settings table is written from `VARIABLES`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from catalog.engine.storage import DEFAULT_REGION, S3Options, is_s3

BASE_DIR = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting has a value K2 cannot use. The message names the variable and what it accepts."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    accepts: str


VARIABLES: tuple[Variable, ...] = (
    Variable("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/k2",
             "a postgres:// URL (database created by `make run` when missing)"),
    Variable("REDIS_URL", "redis://127.0.0.1:6379/0", "a redis:// URL"),
    Variable("K2_KAFKA_BOOTSTRAP", None,
             "host:port[,host:port…] of a Kafka cluster; unset starts the embedded Tansu broker"),
    Variable("K2_EMBEDDED_BROKER_PORT", "19092", "a TCP port for the embedded broker (1–65535)"),
    Variable("K2_KAFKA_SESSION_TIMEOUT_MS", None,
             "consumer session.timeout.ms (integer ≥ 1000); default 6000 on the embedded broker, Kafka's own default otherwise"),
    Variable("K2_SCHEMA_REGISTRY_URL", None,
             "http(s):// URL of a Confluent Schema Registry; unset uses K2's embedded registry in Postgres"),
    Variable("K2_SCHEMA_REGISTRY_BASIC_AUTH", None,
             "user:password for the registry at K2_SCHEMA_REGISTRY_URL (K2's own: any user, an API key with schemas:write)"),
    Variable("K2_ICEBERG_CATALOG_URI", None,
             "an SQLAlchemy URL (postgresql+psycopg://…) for the Iceberg SQL catalog `k2`, or the http(s):// URL of an "
             "Iceberg REST catalog; unset: the DATABASE_URL database"),
    Variable("K2_WAREHOUSE", "var/warehouse",
             "a local path, a file:// URI or an s3:// URI where Iceberg data files live"),
    Variable("K2_S3_ENDPOINT", None,
             "http(s):// URL of an S3-compatible server (MinIO) for an s3:// warehouse; unset: AWS S3"),
    Variable("K2_S3_REGION", "us-east-1", "the S3 region of the warehouse bucket"),
    Variable("K2_S3_PATH_STYLE", None,
             "1/true/yes or 0/false/no: path-style bucket addressing; unset: on when K2_S3_ENDPOINT is set, else off"),
    Variable("AWS_ACCESS_KEY_ID", None, "the S3 access key of an s3:// warehouse (pyiceberg and DuckDB)"),
    Variable("AWS_SECRET_ACCESS_KEY", None, "the S3 secret key of an s3:// warehouse"),
    Variable("AWS_SESSION_TOKEN", None, "an S3 session token, with temporary credentials"),
    Variable("K2_CONSUMER_BATCH_SIZE", "1000", "a positive integer (ADR #015)"),
    Variable("K2_CONSUMER_MAX_BATCH_MS", "500",
             "a positive integer: flush a partial batch once its first message is this many ms old (from its Kafka timestamp)"),
    Variable("K2_DUCKDB_THREADS", None, "a positive integer: DuckDB worker threads per query connection; unset: DuckDB's default (all cores)"),
    Variable("K2_DUCKDB_MEMORY_LIMIT", None, "a DuckDB size such as 512MB or 4GB; unset: DuckDB's default (80 % of RAM)"),
    Variable("K2_QUERY_MEMORY_LIMIT", "1GB", "a DuckDB size: the memory limit of each saved-query run (its own DuckDB database)"),
    Variable("K2_QUERY_MAX_RESULT_BYTES", "268435456",
             "a positive integer: a saved-query result larger than this many bytes (Arrow, before encoding) is refused (422)"),
    Variable("K2_QUERY_MAX_CONCURRENT_RUNS", "2",
             "a positive integer: saved-query runs one API key (or user) may have in flight at once (429 beyond)"),
    Variable("K2_SNAPSHOT_RETENTION_HOURS", "168",
             "a positive integer: hours of Iceberg snapshots kept for time travel (default 7 days)"),
    Variable("K2_SNAPSHOT_FULL_DETAIL_MINUTES", "1",
             "a positive integer: snapshots younger than this are all kept; older ones are thinned"),
    Variable("K2_SNAPSHOT_THIN_MINUTES", "5",
             "a positive integer: beyond the full-detail window, keep the newest snapshot of each such interval"),
    Variable("K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS", "60",
             "a positive integer: how often each consumer expires and thins its own table's snapshots"),
    Variable("K2_CATALOG_RETRY_SECONDS", "60",
             "a positive integer: how long a consumer retries an unreachable Iceberg catalog (backoff capped at 10 s) before it fails"),
    Variable("K2_ORPHAN_MIN_AGE_MINUTES", "60",
             "a positive integer: maintenance deletes unreferenced table files only once they are this old"),
    Variable("K2_MAINTENANCE_INTERVAL_MINUTES", "15",
             "a positive integer: how often Celery beat compacts small files and expires snapshots"),
    Variable("K2_WEB_ADDR", "127.0.0.1:8000", "host:port the `make run` web server listens on"),
    Variable("K2_CONSUMER_SLOTS", "4", "a positive integer: Celery pool processes for consumer tasks under `make run`"),
    Variable("K2_CONSUMER_STALE_SECONDS", "15",
             "a positive integer: a running consumer whose heartbeat (written every 2 s by its process) "
             "is older than this is marked failed (and restarted)"),
    Variable("K2_CONSUMER_MAX_RESTARTS", "5",
             "a positive integer: automatic restarts of one consumer allowed per K2_CONSUMER_RESTART_WINDOW_MINUTES"),
    Variable("K2_CONSUMER_RESTART_WINDOW_MINUTES", "10",
             "a positive integer: the window over which K2_CONSUMER_MAX_RESTARTS is counted"),
    Variable("K2_LOG_JSON", None, "1/true/yes or 0/false/no; unset: JSON when stdout is not a terminal"),
    Variable("K2_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Variable("K2_ADMIN_PASSWORD", None, "password for the `admin` user `make run` creates; unset: generated and printed once"),
    Variable("K2_METRICS_DIR", "var/prometheus", "directory for prometheus_client multiprocess files"),
    Variable("SECRET_KEY", None, "any long random string; required when DEBUG is off outside tests"),
    Variable("DEBUG", "0", "1/true/yes or 0/false/no"),
    Variable("ALLOWED_HOSTS", "127.0.0.1,localhost", "comma-separated host names"),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _get(env: Mapping[str, str], name: str) -> str | None:
    for var in VARIABLES:
        if var.name == name:
            value = env.get(name)
            return value if value not in (None, "") else var.default
    raise KeyError(name)


def _accepts(name: str) -> str:
    return next(v.accepts for v in VARIABLES if v.name == name)


def _bad(name: str, value: str, why: str = "") -> ConfigError:
    detail = f" ({why})" if why else ""
    return ConfigError(f"{name}={value!r} is not valid{detail}: {name} accepts {_accepts(name)}.")


def parse_bool(env: Mapping[str, str], name: str) -> bool | None:
    value = _get(env, name)
    if value is None:
        return None
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _bad(name, value)


def parse_positive_int(env: Mapping[str, str], name: str, *, minimum: int = 1,
                       maximum: int | None = None) -> int | None:
    value = _get(env, name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        raise _bad(name, value, "not an integer") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise _bad(name, value, "out of range")
    return number


def parse_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _get(env, name)
    if value is None:
        return None
    try:
        parsed = urlparse(value)
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _bad(name, value, str(exc)) from None
    if parsed.scheme not in schemes:
        raise _bad(name, value, f"scheme must be one of {', '.join(schemes)}")
    if parsed.scheme not in ("file", "sqlite", "unix") and not parsed.hostname:
        raise _bad(name, value, "no host")
    return value


def parse_bootstrap(env: Mapping[str, str], name: str) -> str | None:
    value = _get(env, name)
    if value is None:
        return None
    for part in value.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(name, value, f"{part.strip()!r} is not host:port")
    return value


def parse_size(env: Mapping[str, str], name: str) -> str | None:
    value = _get(env, name)
    if value is None:
        return None
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", value, flags=re.IGNORECASE):
        raise _bad(name, value, "not a size")
    return value.strip()


def parse_s3(env: Mapping[str, str], warehouse: str) -> S3Options | None:
    """The S3 settings when the warehouse is on S3 or K2_S3_ENDPOINT is set, else None."""
    endpoint = parse_url(env, "K2_S3_ENDPOINT", ("http", "https"))
    if endpoint is None and not is_s3(warehouse):
        return None
    path_style = parse_bool(env, "K2_S3_PATH_STYLE")
    return S3Options(endpoint=endpoint, region=(_get(env, "K2_S3_REGION") or DEFAULT_REGION).strip(),
                     path_style=bool(endpoint) if path_style is None else path_style,
                     access_key_id=_get(env, "AWS_ACCESS_KEY_ID"), secret_access_key=_get(env, "AWS_SECRET_ACCESS_KEY"),
                     session_token=_get(env, "AWS_SESSION_TOKEN"))


def parse_warehouse(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name) or "var/warehouse"
    if "://" in value:
        scheme = value.split("://", 1)[0]
        if scheme not in ("file", "s3", "s3a", "gs", "abfs"):
            raise _bad(name, value, f"unknown scheme {scheme!r}")
        return value
    path = Path(value)
    if not path.is_absolute():
        path = BASE_DIR / path
    return path.resolve().as_uri()


@dataclass(frozen=True)
class K2Config:
    """The parsed settings. Built once by `load`; engines receive the pieces they need."""

    database_url: str
    redis_url: str
    kafka_bootstrap: str | None
    embedded_broker_port: int
    kafka_session_timeout_ms: int | None
    schema_registry_url: str | None
    schema_registry_basic_auth: str | None
    iceberg_catalog_uri: str
    warehouse: str
    consumer_batch_size: int
    consumer_max_batch_ms: int
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
    log_json: bool | None
    log_level: str
    admin_password: str | None
    metrics_dir: Path
    secret_key: str | None
    debug: bool
    allowed_hosts: list[str]
    consumer_stale_seconds: int = 15
    consumer_max_restarts: int = 5
    consumer_restart_window_minutes: int = 10
    s3: S3Options | None = None  # K2_S3_* and AWS_* (catalog.engine.storage), for an s3:// warehouse

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


def load(env: Mapping[str, str] | None = None) -> K2Config:
    env = os.environ if env is None else env
    database_url = parse_url(env, "DATABASE_URL", ("postgres", "postgresql", "pgsql"))
    assert database_url is not None
    catalog_uri = parse_url(env, "K2_ICEBERG_CATALOG_URI",
                            ("postgresql+psycopg", "postgresql", "postgresql+psycopg2", "sqlite", "http", "https"))
    warehouse = parse_warehouse(env, "K2_WAREHOUSE")
    parse_bootstrap(env, "K2_WEB_ADDR")  # validated here; read by the Procfile
    parse_positive_int(env, "K2_CONSUMER_SLOTS", maximum=64)
    level = (_get(env, "K2_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise _bad("K2_LOG_LEVEL", level)
    metrics_dir = Path(_get(env, "K2_METRICS_DIR") or "var/prometheus")
    if not metrics_dir.is_absolute():
        metrics_dir = BASE_DIR / metrics_dir
    return K2Config(
        database_url=database_url,
        redis_url=parse_url(env, "REDIS_URL", ("redis", "rediss", "unix")) or "",
        kafka_bootstrap=parse_bootstrap(env, "K2_KAFKA_BOOTSTRAP"),
        embedded_broker_port=parse_positive_int(env, "K2_EMBEDDED_BROKER_PORT", maximum=65535) or 19092,
        kafka_session_timeout_ms=parse_positive_int(env, "K2_KAFKA_SESSION_TIMEOUT_MS", minimum=1000),
        schema_registry_url=parse_url(env, "K2_SCHEMA_REGISTRY_URL", ("http", "https")),
        schema_registry_basic_auth=_get(env, "K2_SCHEMA_REGISTRY_BASIC_AUTH"),
        iceberg_catalog_uri=catalog_uri or catalog_uri_from_database_url(database_url),
        warehouse=warehouse,
        consumer_batch_size=parse_positive_int(env, "K2_CONSUMER_BATCH_SIZE") or 1000,
        consumer_max_batch_ms=parse_positive_int(env, "K2_CONSUMER_MAX_BATCH_MS") or 500,
        snapshot_retention_hours=parse_positive_int(env, "K2_SNAPSHOT_RETENTION_HOURS") or 168,
        snapshot_full_detail_minutes=parse_positive_int(env, "K2_SNAPSHOT_FULL_DETAIL_MINUTES") or 1,
        consumer_snapshot_expiry_seconds=parse_positive_int(env, "K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS") or 60,
        snapshot_thin_minutes=parse_positive_int(env, "K2_SNAPSHOT_THIN_MINUTES") or 5,
        catalog_retry_seconds=parse_positive_int(env, "K2_CATALOG_RETRY_SECONDS") or 60,
        orphan_min_age_minutes=parse_positive_int(env, "K2_ORPHAN_MIN_AGE_MINUTES") or 60,
        maintenance_interval_minutes=parse_positive_int(env, "K2_MAINTENANCE_INTERVAL_MINUTES") or 15,
        duckdb_threads=parse_positive_int(env, "K2_DUCKDB_THREADS", maximum=1024),
        duckdb_memory_limit=parse_size(env, "K2_DUCKDB_MEMORY_LIMIT"),
        query_memory_limit=parse_size(env, "K2_QUERY_MEMORY_LIMIT") or "1GB",
        query_max_result_bytes=parse_positive_int(env, "K2_QUERY_MAX_RESULT_BYTES") or 268_435_456,
        query_max_concurrent_runs=parse_positive_int(env, "K2_QUERY_MAX_CONCURRENT_RUNS", maximum=1000) or 2,
        log_json=parse_bool(env, "K2_LOG_JSON"),
        log_level=level,
        admin_password=_get(env, "K2_ADMIN_PASSWORD"),
        metrics_dir=metrics_dir,
        secret_key=_get(env, "SECRET_KEY"),
        debug=bool(parse_bool(env, "DEBUG")),
        allowed_hosts=[h.strip() for h in (_get(env, "ALLOWED_HOSTS") or "").split(",") if h.strip()],
        consumer_stale_seconds=parse_positive_int(env, "K2_CONSUMER_STALE_SECONDS", minimum=5) or 15,
        consumer_max_restarts=parse_positive_int(env, "K2_CONSUMER_MAX_RESTARTS") or 5,
        consumer_restart_window_minutes=parse_positive_int(env, "K2_CONSUMER_RESTART_WINDOW_MINUTES") or 10,
        s3=parse_s3(env, warehouse),
    )
