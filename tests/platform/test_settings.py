"""Settings are read from the environment; a bad value stops start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from k2portal.config import BASE_DIR, ConfigError, load


def test_defaults_are_the_local_stack() -> None:
    cfg = load({})
    assert cfg.database_url == "postgres://postgres@127.0.0.1:5432/k2"
    assert cfg.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.uses_embedded_broker and cfg.bootstrap_servers == "127.0.0.1:19092"
    assert cfg.iceberg_catalog_uri == "postgresql+psycopg://postgres@127.0.0.1:5432/k2"
    assert cfg.warehouse == (BASE_DIR / "var" / "warehouse").as_uri()
    assert cfg.consumer_batch_size == 50_000  # the upper bound; ADR #015's 1,000 is the adaptive batch's floor
    assert cfg.debug is False
    assert cfg.session_timeout_ms == 6000  # short group joins on the embedded broker


def test_production_values_are_taken_as_given() -> None:
    cfg = load({
        "K2_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
        "K2_WAREHOUSE": "s3://warehouse/k2",
        "K2_CONSUMER_BATCH_SIZE": "5000",
        "K2_SCHEMA_REGISTRY_URL": "http://schema-registry:8081",
        "DEBUG": "true",
    })
    assert cfg.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert cfg.session_timeout_ms is None  # production keeps Kafka's default
    assert cfg.warehouse == "s3://warehouse/k2"
    assert cfg.consumer_batch_size == 5000
    assert cfg.schema_registry_url == "http://schema-registry:8081"
    assert cfg.debug is True


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("K2_CONSUMER_BATCH_SIZE", "abc", "not an integer"),
        ("K2_CONSUMER_BATCH_SIZE", "0", "out of range"),
        ("K2_CONSUMER_BATCH_SIZE", "-5", "out of range"),
        ("DATABASE_URL", "mysql://root@db/k2", "scheme must be one of"),
        ("DATABASE_URL", "postgres://host:notaport/k2", "Port could not be cast"),
        ("REDIS_URL", "not a url", "scheme must be one of"),
        ("K2_KAFKA_BOOTSTRAP", "localhost", "is not host:port"),
        ("K2_SCHEMA_REGISTRY_URL", "ftp://registry", "scheme must be one of"),
        ("K2_ICEBERG_CATALOG_URI", "postgresql+psycopg://", "no host"),
        ("K2_WAREHOUSE", "hdfs://namenode/wh", "unknown scheme"),
        ("DEBUG", "maybe", "DEBUG accepts"),
        ("K2_EMBEDDED_BROKER_PORT", "70000", "out of range"),
        ("K2_DUCKDB_THREADS", "many", "not an integer"),
        ("K2_DUCKDB_MEMORY_LIMIT", "lots", "not a size"),
        ("K2_SNAPSHOT_RETENTION_HOURS", "a week", "not an integer"),
        ("K2_MAINTENANCE_INTERVAL_MINUTES", "0", "out of range"),
        ("K2_SNAPSHOT_FULL_DETAIL_MINUTES", "-5", "out of range"),
        ("K2_SNAPSHOT_THIN_MINUTES", "5m", "not an integer"),
        ("K2_ORPHAN_MIN_AGE_MINUTES", "0", "out of range"),
        ("K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS", "1m", "not an integer"),
        ("K2_WEB_ADDR", "8000", "is not host:port"),
        ("K2_CONSUMER_SLOTS", "100", "out of range"),
        ("K2_CONSUMER_SLOTS", "four", "not an integer"),
        ("K2_CONSUMER_MAX_BATCH_MS", "0.5", "not an integer"),
        ("K2_CONSUMER_MIN_COMMIT_INTERVAL_MS", "-1", "out of range"),
        ("K2_CONSUMER_MIN_COMMIT_INTERVAL_MS", "100ms", "not an integer"),
        ("K2_KAFKA_SESSION_TIMEOUT_MS", "500", "out of range"),
        ("K2_S3_ENDPOINT", "minio:9000", "scheme must be one of"),
        ("K2_S3_PATH_STYLE", "sometimes", "K2_S3_PATH_STYLE accepts"),
        ("K2_LOG_JSON", "pretty", "K2_LOG_JSON accepts"),
        ("K2_LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING or ERROR"),
        ("K2_QUERY_MEMORY_LIMIT", "1 gigabyte", "not a size"),
        ("K2_QUERY_MAX_RESULT_BYTES", "256MB", "not an integer"),
        ("K2_QUERY_MAX_CONCURRENT_RUNS", "1001", "out of range"),
        ("K2_CATALOG_RETRY_SECONDS", "-1", "out of range"),
        ("K2_CONSUMER_STALE_SECONDS", "2", "out of range"),
        ("K2_CONSUMER_MAX_RESTARTS", "none", "not an integer"),
        ("K2_CONSUMER_RESTART_WINDOW_MINUTES", "0", "out of range"),
        ("K2_ICEBERG_NAMESPACE", "market-data", "not an identifier"),
        ("K2_DUCKDB_THREADS", "2000", "out of range"),
        ("K2_FRESH_READ_TIMEOUT_MS", "5s", "not an integer"),
        ("K2_FRESH_READ_TIMEOUT_MS", "0", "out of range"),
        ("K2_FRESH_READ_MAX_MESSAGES", "-3", "out of range"),
    ],
)
def test_bad_value_names_the_variable_and_what_it_accepts(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({name: value})
    message = str(err.value)
    assert message.startswith(f"{name}=")
    assert f"{name} accepts" in message
    assert fragment in message


def test_bad_value_stops_manage_py_with_a_message_not_a_traceback() -> None:
    env = {**os.environ, "K2_CONSUMER_BATCH_SIZE": "abc"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "K2_CONSUMER_BATCH_SIZE='abc'" in result.stderr
    assert "a positive integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_lists_every_setting_and_opens_with_the_two_commands() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    head = "\n".join(readme.splitlines()[:6])
    assert "make run" in head and "make test" in head
    for var in __import__("k2portal.config", fromlist=["VARIABLES"]).VARIABLES:
        assert f"| `{var.name}` |" in readme, f"README settings table misses {var.name}"


def test_every_bad_value_is_named_not_only_the_first() -> None:
    with pytest.raises(ConfigError) as err:
        load({"K2_CONSUMER_BATCH_SIZE": "abc", "REDIS_URL": "localhost:6379", "DEBUG": "maybe"})
    lines = str(err.value).splitlines()
    assert sorted(line.split("=", 1)[0] for line in lines) == ["DEBUG", "K2_CONSUMER_BATCH_SIZE", "REDIS_URL"]


def test_an_empty_value_counts_as_unset() -> None:
    cfg = load({"K2_CONSUMER_BATCH_SIZE": "", "K2_KAFKA_BOOTSTRAP": "", "DEBUG": ""})
    assert cfg.consumer_batch_size == 50_000 and cfg.uses_embedded_broker and cfg.debug is False


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K2_CONSUMER_BATCH_SIZE", "2500")
    monkeypatch.setenv("K2_ICEBERG_NAMESPACE", "market_data_b")
    monkeypatch.setenv("K2_LOG_LEVEL", "debug")
    cfg = load()
    assert cfg.consumer_batch_size == 2500 and cfg.iceberg_namespace == "market_data_b" and cfg.log_level == "DEBUG"
    monkeypatch.setenv("K2_CONSUMER_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"^K2_CONSUMER_BATCH_SIZE='lots' is not valid \(not an integer\)"):
        load()


def test_a_dot_env_file_is_not_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("K2_CONSUMER_BATCH_SIZE=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("K2_CONSUMER_BATCH_SIZE", raising=False)
    assert load().consumer_batch_size == 50_000  # only the process environment: docker-compose reads .env, not K2


def test_test_only_django_settings_are_gone() -> None:
    from django.conf import settings

    assert not hasattr(settings, "K2_QUERY_ENGINE") and not hasattr(settings, "K2_ICEBERG_NAMESPACE")
