"""Reading K2's settings from the environment.

Every variable the platform reads is a field of `K2Settings` (pydantic-settings), declared
once with its default and what it accepts; a bad value stops start-up with a message naming
the variable instead of a traceback deep inside a library. `load` turns the raw values into
`K2Config`, the resolved settings (paths made absolute, the catalog URI derived, S3 options),
which Django keeps as `settings.K2`. The README's settings table is written from `VARIABLES`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from catalog.engine.storage import S3Options, is_s3

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


Bool = Annotated[bool, BeforeValidator(_bool)]
PositiveInt = Annotated[int, BeforeValidator(_int())]
OptionalBool = Annotated[bool | None, BeforeValidator(_bool)]


def _setting(default: Any, name: str, accepts: str) -> Any:
    """A field read from the environment variable `name`; `accepts` is the message's (and the README's) text."""
    return Field(default, validation_alias=name, description=accepts)


class K2Settings(BaseSettings):
    """The environment as K2 reads it: one field per variable, its default, what it accepts."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True,
                                      validate_default=False)  # defaults are declared in their final type

    database_url: Annotated[str, BeforeValidator(_url("postgres", "postgresql", "pgsql"))] = _setting(
        "postgres://postgres@127.0.0.1:5432/k2", "DATABASE_URL",
        "a postgres:// URL (database created by `make run` when missing)")
    redis_url: Annotated[str, BeforeValidator(_url("redis", "rediss", "unix"))] = _setting(
        "redis://127.0.0.1:6379/0", "REDIS_URL", "a redis:// URL")
    kafka_bootstrap: Annotated[str | None, BeforeValidator(_host_ports)] = _setting(
        None, "K2_KAFKA_BOOTSTRAP", "host:port[,host:port…] of a Kafka cluster; unset starts the embedded Tansu broker")
    embedded_broker_port: Annotated[int, BeforeValidator(_int(1, 65535))] = _setting(
        19092, "K2_EMBEDDED_BROKER_PORT", "a TCP port for the embedded broker (1–65535)")
    kafka_session_timeout_ms: Annotated[int | None, BeforeValidator(_int(1000))] = _setting(
        None, "K2_KAFKA_SESSION_TIMEOUT_MS",
        "consumer session.timeout.ms (integer ≥ 1000); default 6000 on the embedded broker, Kafka's own default otherwise")
    schema_registry_url: Annotated[str | None, BeforeValidator(_url("http", "https"))] = _setting(
        None, "K2_SCHEMA_REGISTRY_URL",
        "http(s):// URL of a Confluent Schema Registry; unset uses K2's embedded registry in Postgres")
    schema_registry_basic_auth: str | None = _setting(
        None, "K2_SCHEMA_REGISTRY_BASIC_AUTH",
        "user:password for the registry at K2_SCHEMA_REGISTRY_URL (K2's own: any user, an API key with schemas:write)")
    iceberg_catalog_uri: Annotated[str | None, BeforeValidator(_url(
        "postgresql+psycopg", "postgresql", "postgresql+psycopg2", "sqlite", "http", "https"))] = _setting(
        None, "K2_ICEBERG_CATALOG_URI",
        "an SQLAlchemy URL (postgresql+psycopg://…) for the Iceberg SQL catalog `k2`, or the http(s):// URL of an "
        "Iceberg REST catalog; unset: the DATABASE_URL database")
    iceberg_namespace: Annotated[str, BeforeValidator(_identifier)] = _setting(
        "market_data", "K2_ICEBERG_NAMESPACE",
        "an identifier (letters, digits, _): the Iceberg namespace of the market-data tables, written by consumers "
        "and maintenance and read by the API")
    warehouse: Annotated[str, BeforeValidator(_warehouse)] = _setting(
        "var/warehouse", "K2_WAREHOUSE", "a local path, a file:// URI or an s3:// URI where Iceberg data files live")
    s3_endpoint: Annotated[str | None, BeforeValidator(_url("http", "https"))] = _setting(
        None, "K2_S3_ENDPOINT", "http(s):// URL of an S3-compatible server (MinIO) for an s3:// warehouse; unset: AWS S3")
    s3_region: str = _setting("us-east-1", "K2_S3_REGION", "the S3 region of the warehouse bucket")
    s3_path_style: OptionalBool = _setting(
        None, "K2_S3_PATH_STYLE",
        "1/true/yes or 0/false/no: path-style bucket addressing; unset: on when K2_S3_ENDPOINT is set, else off")
    aws_access_key_id: str | None = _setting(
        None, "AWS_ACCESS_KEY_ID", "the S3 access key of an s3:// warehouse (pyiceberg and DuckDB)")
    aws_secret_access_key: str | None = _setting(None, "AWS_SECRET_ACCESS_KEY", "the S3 secret key of an s3:// warehouse")
    aws_session_token: str | None = _setting(None, "AWS_SESSION_TOKEN", "an S3 session token, with temporary credentials")
    consumer_batch_size: PositiveInt = _setting(
        50_000, "K2_CONSUMER_BATCH_SIZE",
        "a positive integer: the largest batch (batches adapt to what is waiting; ADR #015's 1,000 is the floor)")
    consumer_max_batch_ms: PositiveInt = _setting(
        500, "K2_CONSUMER_MAX_BATCH_MS",
        "a positive integer: flush a partial batch once its first message is this many ms old (from its Kafka timestamp)")
    duckdb_threads: Annotated[int | None, BeforeValidator(_int(1, 1024))] = _setting(
        None, "K2_DUCKDB_THREADS",
        "a positive integer: DuckDB worker threads per query connection; unset: DuckDB's default (all cores)")
    duckdb_memory_limit: Annotated[str | None, BeforeValidator(_size)] = _setting(
        None, "K2_DUCKDB_MEMORY_LIMIT", "a DuckDB size such as 512MB or 4GB; unset: DuckDB's default (80 % of RAM)")
    query_memory_limit: Annotated[str, BeforeValidator(_size)] = _setting(
        "1GB", "K2_QUERY_MEMORY_LIMIT",
        "a DuckDB size: the memory limit of each saved-query run (its own DuckDB database)")
    query_max_result_bytes: PositiveInt = _setting(
        268_435_456, "K2_QUERY_MAX_RESULT_BYTES",
        "a positive integer: a saved-query result larger than this many bytes (Arrow, before encoding) is refused (422)")
    query_max_concurrent_runs: Annotated[int, BeforeValidator(_int(1, 1000))] = _setting(
        2, "K2_QUERY_MAX_CONCURRENT_RUNS",
        "a positive integer: saved-query runs one API key (or user) may have in flight at once (429 beyond)")
    snapshot_retention_hours: PositiveInt = _setting(
        168, "K2_SNAPSHOT_RETENTION_HOURS",
        "a positive integer: hours of Iceberg snapshots kept for time travel (default 7 days)")
    snapshot_full_detail_minutes: PositiveInt = _setting(
        1, "K2_SNAPSHOT_FULL_DETAIL_MINUTES",
        "a positive integer: snapshots younger than this are all kept; older ones are thinned")
    snapshot_thin_minutes: PositiveInt = _setting(
        5, "K2_SNAPSHOT_THIN_MINUTES",
        "a positive integer: beyond the full-detail window, keep the newest snapshot of each such interval")
    consumer_snapshot_expiry_seconds: PositiveInt = _setting(
        60, "K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS",
        "a positive integer: how often each consumer expires and thins its own table's snapshots")
    catalog_retry_seconds: PositiveInt = _setting(
        60, "K2_CATALOG_RETRY_SECONDS",
        "a positive integer: how long a consumer retries an unreachable Iceberg catalog (backoff capped at 10 s) "
        "before it fails")
    orphan_min_age_minutes: PositiveInt = _setting(
        60, "K2_ORPHAN_MIN_AGE_MINUTES",
        "a positive integer: maintenance deletes unreferenced table files only once they are this old")
    maintenance_interval_minutes: PositiveInt = _setting(
        15, "K2_MAINTENANCE_INTERVAL_MINUTES",
        "a positive integer: how often Celery beat compacts small files and expires snapshots")
    web_addr: Annotated[str, BeforeValidator(_host_ports)] = _setting(
        "127.0.0.1:8000", "K2_WEB_ADDR", "host:port the `make run` web server listens on")
    consumer_slots: Annotated[int, BeforeValidator(_int(1, 64))] = _setting(
        4, "K2_CONSUMER_SLOTS", "a positive integer: Celery pool processes for consumer tasks under `make run`")
    consumer_stale_seconds: Annotated[int, BeforeValidator(_int(5))] = _setting(
        15, "K2_CONSUMER_STALE_SECONDS",
        "a positive integer: a running consumer whose heartbeat (written every 2 s by its process) "
        "is older than this is marked failed (and restarted)")
    consumer_max_restarts: PositiveInt = _setting(
        5, "K2_CONSUMER_MAX_RESTARTS",
        "a positive integer: automatic restarts of one consumer allowed per K2_CONSUMER_RESTART_WINDOW_MINUTES")
    consumer_restart_window_minutes: PositiveInt = _setting(
        10, "K2_CONSUMER_RESTART_WINDOW_MINUTES",
        "a positive integer: the window over which K2_CONSUMER_MAX_RESTARTS is counted")
    log_json: OptionalBool = _setting(
        None, "K2_LOG_JSON", "1/true/yes or 0/false/no; unset: JSON when stdout is not a terminal")
    log_level: Annotated[str, BeforeValidator(_log_level)] = _setting(
        "INFO", "K2_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")
    admin_password: str | None = _setting(
        None, "K2_ADMIN_PASSWORD", "password for the `admin` user `make run` creates; unset: generated and printed once")
    metrics_dir: str = _setting("var/prometheus", "K2_METRICS_DIR", "directory for prometheus_client multiprocess files")
    secret_key: str | None = _setting(None, "SECRET_KEY", "any long random string; required when DEBUG is off outside tests")
    debug: Bool = _setting(False, "DEBUG", "1/true/yes or 0/false/no")
    allowed_hosts: str = _setting("127.0.0.1,localhost", "ALLOWED_HOSTS", "comma-separated host names")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,)  # the process environment only: no .env file, no secrets directory


class _GivenSettings(K2Settings):
    """The same fields read from a given mapping (`load(env)`), not from the process environment."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


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


VARIABLES: tuple[Variable, ...] = tuple(
    Variable(str(field.validation_alias), _shown(field.default), field.description or "")
    for field in K2Settings.model_fields.values())
_BY_FIELD = {name: str(field.validation_alias) for name, field in K2Settings.model_fields.items()}
_ACCEPTS = {var.name: var.accepts for var in VARIABLES}


def _config_error(error: ValidationError, env: Mapping[str, str]) -> ConfigError:
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]) if item.get("loc") else "?"
        name = _BY_FIELD.get(name, name)
        cause = (item.get("ctx") or {}).get("error")
        why = str(cause) if cause is not None else item.get("msg", "")
        value = env.get(name, item.get("input"))
        detail = f" ({why})" if why else ""
        lines.append(f"{name}={value!r} is not valid{detail}: {name} accepts {_ACCEPTS.get(name, 'another value')}.")
    return ConfigError("\n".join(lines))


@dataclass(frozen=True)
class K2Config:
    """The resolved settings. Built once by `load`; engines receive the pieces they need.
    Defaults are `K2Settings`'s: this class only holds what `load` made of them."""

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


def _s3(raw: K2Settings, warehouse: str) -> S3Options | None:
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
    try:
        if env is None:
            env = os.environ
            raw: K2Settings = K2Settings()
        else:
            raw = _GivenSettings(**{k: v for k, v in env.items() if k in _ACCEPTS and v != ""})
    except ValidationError as exc:
        raise _config_error(exc, env) from None
    warehouse = raw.warehouse if "://" in raw.warehouse else _under_base(raw.warehouse).resolve().as_uri()
    return K2Config(
        database_url=raw.database_url, redis_url=raw.redis_url, kafka_bootstrap=raw.kafka_bootstrap,
        embedded_broker_port=raw.embedded_broker_port, kafka_session_timeout_ms=raw.kafka_session_timeout_ms,
        schema_registry_url=raw.schema_registry_url, schema_registry_basic_auth=raw.schema_registry_basic_auth,
        iceberg_catalog_uri=raw.iceberg_catalog_uri or catalog_uri_from_database_url(raw.database_url),
        iceberg_namespace=raw.iceberg_namespace, warehouse=warehouse,
        consumer_batch_size=raw.consumer_batch_size, consumer_max_batch_ms=raw.consumer_max_batch_ms,
        duckdb_threads=raw.duckdb_threads, snapshot_retention_hours=raw.snapshot_retention_hours,
        snapshot_full_detail_minutes=raw.snapshot_full_detail_minutes, snapshot_thin_minutes=raw.snapshot_thin_minutes,
        consumer_snapshot_expiry_seconds=raw.consumer_snapshot_expiry_seconds,
        catalog_retry_seconds=raw.catalog_retry_seconds, orphan_min_age_minutes=raw.orphan_min_age_minutes,
        maintenance_interval_minutes=raw.maintenance_interval_minutes, duckdb_memory_limit=raw.duckdb_memory_limit,
        query_memory_limit=raw.query_memory_limit, query_max_result_bytes=raw.query_max_result_bytes,
        query_max_concurrent_runs=raw.query_max_concurrent_runs, log_json=raw.log_json, log_level=raw.log_level,
        admin_password=raw.admin_password, metrics_dir=_under_base(raw.metrics_dir), secret_key=raw.secret_key,
        debug=raw.debug, allowed_hosts=[h.strip() for h in raw.allowed_hosts.split(",") if h.strip()],
        consumer_stale_seconds=raw.consumer_stale_seconds, consumer_max_restarts=raw.consumer_max_restarts,
        consumer_restart_window_minutes=raw.consumer_restart_window_minutes,
        web_addr=raw.web_addr, consumer_slots=raw.consumer_slots, s3=_s3(raw, warehouse),
    )
