"""The warehouse on S3 (issue 14, item 1), against a real S3-compatible HTTP server (moto's
standalone server, started by the `s3_endpoint` session fixture): produce → consume (with the
consumer's sequence recovery reading the table back through DuckDB) → query (API and sandbox,
DuckDB reading s3://) → compact → expire → orphan cleanup, all on s3://, and the table read back
by a plain DuckDB connection with no K2 code."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import duckdb
import pytest

from catalog.engine.iceberg import CatalogConfig, load_catalog
from catalog.engine.maintenance import expire_snapshots, files_per_day, referenced_files, remove_orphan_files
from catalog.engine.storage import S3Options
from catalog.services import tables_maintain
from ingestion.engine.consumer import ConsumerConfig
from ingestion.gaps import OrmGapSink
from ingestion.models import SequenceGap
from k2portal.config import ConfigError, load
from queries import services
from queries.engine import sandbox
from queries.models import ApiKey
from tests.conftest import S3_TEST_KEY, S3_TEST_SECRET
from tests.consumer.conftest import DictRegistry, create_topic, encode_trades, make_config, produce, run_consumer, trade


@pytest.fixture
def catalog_config(s3_catalog_config: CatalogConfig) -> CatalogConfig:
    """Every shared fixture of this module (`iceberg_tables`, `k2_settings`) uses the s3:// warehouse."""
    return s3_catalog_config


def _s3(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_TEST_KEY,
                        aws_secret_access_key=S3_TEST_SECRET, region_name="us-east-1")


def _objects(endpoint: str, bucket: str) -> dict[str, dt.datetime]:
    pages = _s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {f"s3://{bucket}/{o['Key']}": o["LastModified"] for page in pages for o in page.get("Contents", [])}


def _plain_duckdb(endpoint: str) -> duckdb.DuckDBPyConnection:
    """DuckDB as any other client would set it up: the extension wheels' files, an S3 secret."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name in ("httpfs", "avro", "iceberg"):
        module = __import__(f"duckdb_extension_{name}")
        con.execute(f"LOAD '{Path(module.__file__).parent / 'extensions' / f'v{duckdb.__version__}' / f'{name}.duckdb_extension'}'")
    host = urlparse(endpoint).netloc
    con.execute(f"CREATE SECRET minio (TYPE s3, KEY_ID '{S3_TEST_KEY}', SECRET '{S3_TEST_SECRET}', REGION 'us-east-1', "
                f"ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
    return con


@pytest.fixture
def api_key() -> str:
    return services.api_key_create(name="s3", scopes=[ApiKey.Scope.MARKET_DATA_READ, ApiKey.Scope.QUERIES_RUN])[1]


@pytest.mark.django_db(transaction=True)
def test_produce_consume_query_compact_expire_and_clean_orphans_all_on_s3(
        k2_settings, client, kafka_bootstrap, iceberg_tables, catalog_config, unique, s3_endpoint, s3_bucket,
        api_key) -> None:  # type: ignore[no-untyped-def]
    k2_settings.K2 = dataclasses.replace(k2_settings.K2, iceberg_namespace=catalog_config.namespace)
    assert catalog_config.warehouse.startswith("s3://")
    registry = DictRegistry()
    topic = f"market.equities.trades.s{unique}"
    create_topic(kafka_bootstrap, topic)
    config = make_config(kafka_bootstrap, topic, unique, namespace=catalog_config.namespace)

    # Three consumer runs, each a new process's worth of state: each restart seeds every stream's
    # last sequence number from the table on S3 (DuckDB iceberg_scan over s3://).
    rounds = [[trade("BHP", s) for s in range(1, 6)] + [trade("RIO", s) for s in range(1, 4)],
              [trade("BHP", 6), trade("BHP", 7), trade("RIO", 4)],
              [trade("BHP", 9)]]
    for records in rounds:
        produce(kafka_bootstrap, topic, encode_trades(registry, topic, records))
        run_consumer(ConsumerConfig(**{**config.__dict__, "max_messages": len(records)}), catalog_config, registry,
                     gap_sink=OrmGapSink())
    written = [r for records in rounds for r in records]
    # 6 follows 5 and 4 follows 3 across restarts (no invented gap); 9 after 7 is the one real gap
    gaps = list(SequenceGap.objects.filter(topic=topic).values_list("symbol", "expected_sequence", "received_sequence"))
    assert gaps == [("BHP", 8, 9)]

    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert table.metadata_location.startswith(f"s3://{s3_bucket}/warehouse/")
    data_files = [t.file.file_path for t in table.scan().plan_files()]
    assert len(data_files) == 3 and all(p.startswith(f"s3://{s3_bucket}/") for p in data_files)
    assert set(data_files) <= set(_objects(s3_endpoint, s3_bucket))  # really in the bucket

    # Query through the API (the Django side: settings → catalog → DuckDB with httpfs and a secret)
    url = "/api/v1/trades?symbol=BHP,RIO&start=2026-03-10T00:00:00Z&end=2026-03-11T00:00:00Z&limit=100"
    response = client.get(url, headers={"X-API-Key": api_key})
    assert response.status_code == 200, response.content
    got = sorted((r["symbol"], r["sequence_number"]) for r in response.json()["data"])
    assert got == sorted((r["symbol"], r["sequence_number"]) for r in written)
    # ...and saved SQL in the sandbox (external access off, only the s3:// warehouse allowed)
    from queries.selectors import get_engine

    engine = get_engine()
    result = sandbox.run(source=engine.source, sql="SELECT count(*) AS n, sum(volume) AS v FROM trades",
                         declarations={}, config=engine.config)
    assert result.table.to_pylist() == [{"n": len(written), "v": sum(r["volume"] for r in written)}]

    # Compact and expire (the maintenance task), on S3
    k2_settings.K2 = dataclasses.replace(k2_settings.K2, orphan_min_age_minutes=60)
    report = tables_maintain(namespace=catalog_config.namespace, retention=dt.timedelta(0), min_files=2,
                             data_types=("trades",))
    assert report["trades"]["days_compacted"] == 1
    assert report["trades"]["orphan_files_removed"] == 0  # nothing unreferenced yet
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    assert list(files_per_day(table).values()) == [1]
    assert not set(data_files) & {t.file.file_path for t in table.scan().plan_files()}
    # The consumer goes on after the compaction (seeded from the compacted file), then expiry (the
    # task keeps the newest 5 snapshots; here down to the newest, which records the offsets).
    records = [trade("BHP", 10), trade("RIO", 5)]
    produce(kafka_bootstrap, topic, encode_trades(registry, topic, records))
    run_consumer(ConsumerConfig(**{**config.__dict__, "max_messages": len(records)}), catalog_config, registry,
                 gap_sink=OrmGapSink())
    written += records
    assert SequenceGap.objects.filter(topic=topic).count() == 1
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    expiry = expire_snapshots(table, retention=dt.timedelta(0), retain_last=1)
    assert len(expiry.expired) == 4  # three consumer commits and the compaction
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    live = referenced_files(table)
    replaced = set(data_files) - live
    assert replaced == set(data_files)  # nothing refers to the compacted-away files any more...
    assert replaced <= set(_objects(s3_endpoint, s3_bucket))  # ...but they are still in the bucket

    # Orphan cleanup lists and deletes on S3: the replaced files and a failed commit's debris go,
    # every file the table refers to stays.
    data_prefix = table.location().split(f"s3://{s3_bucket}/", 1)[1] + "/data"
    debris = f"s3://{s3_bucket}/{data_prefix}/failed-commit-leftover.parquet"
    _s3(s3_endpoint).put_object(Bucket=s3_bucket, Key=debris.split(f"s3://{s3_bucket}/", 1)[1], Body=b"PAR1 debris")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)  # S3 mtimes cannot be set back: move `now` on
    dry = remove_orphan_files(table, older_than=dt.timedelta(minutes=60), now=later, dry_run=True)
    assert set(dry.orphans) >= replaced | {debris} and debris in _objects(s3_endpoint, s3_bucket)
    cleaned = remove_orphan_files(table, older_than=dt.timedelta(minutes=60), now=later)
    assert set(cleaned.orphans) >= replaced | {debris} and not set(cleaned.orphans) & live
    after = set(_objects(s3_endpoint, s3_bucket))
    assert not (replaced | {debris}) & after and live <= after

    # The table still answers, through K2's engine and through a plain DuckDB client
    table = load_catalog(catalog_config).load_table(f"{catalog_config.namespace}.trades")
    con = _plain_duckdb(s3_endpoint)
    try:
        n, volume, bhp_last = con.execute(
            f"SELECT count(*), sum(volume), max(sequence_number) FILTER (WHERE symbol = 'BHP') "
            f"FROM iceberg_scan('{table.metadata_location}')").fetchone()
    finally:
        con.close()
    assert (n, volume, bhp_last) == (len(written), sum(r["volume"] for r in written), 10)
    response = client.get(url, headers={"X-API-Key": api_key})
    assert len(response.json()["data"]) == len(written)


def test_the_duckdb_secret_and_fileio_properties_carry_endpoint_path_style_and_credentials() -> None:
    s3 = S3Options(endpoint="https://minio.example:9000", region="ap-southeast-2", path_style=True,
                   access_key_id="AK", secret_access_key="it's", session_token="tok")
    sql = s3.duckdb_secret_sql()
    for part in ("TYPE s3", "ENDPOINT 'minio.example:9000'", "USE_SSL true", "URL_STYLE 'path'",
                 "REGION 'ap-southeast-2'", "KEY_ID 'AK'", "SECRET 'it''s'", "SESSION_TOKEN 'tok'"):
        assert part in sql
    assert "USE_SSL false" in S3Options(endpoint="http://127.0.0.1:9000").duckdb_secret_sql()
    assert "URL_STYLE 'vhost'" in S3Options().duckdb_secret_sql() and "ENDPOINT" not in S3Options().duckdb_secret_sql()
    assert s3.fileio_properties() == {"s3.endpoint": "https://minio.example:9000", "s3.region": "ap-southeast-2",
                                      "s3.force-virtual-addressing": "false", "s3.access-key-id": "AK",
                                      "s3.secret-access-key": "it's", "s3.session-token": "tok"}
    assert S3Options.from_properties({"warehouse": "s3://b/w", **s3.fileio_properties()}) == s3
    assert S3Options.from_properties({"warehouse": "file:///tmp/w"}) is None
    assert "it's" not in repr(s3) and "tok" not in repr(s3)


def test_settings_read_the_s3_variables_and_refuse_a_bad_endpoint() -> None:
    cfg = load({"K2_WAREHOUSE": "s3://warehouse/k2", "K2_S3_ENDPOINT": "http://minio:9000",
                "AWS_ACCESS_KEY_ID": "k2admin", "AWS_SECRET_ACCESS_KEY": "k2password"})
    assert cfg.s3 == S3Options(endpoint="http://minio:9000", region="us-east-1", path_style=True,
                               access_key_id="k2admin", secret_access_key="k2password")
    aws = load({"K2_WAREHOUSE": "s3://bucket/k2", "K2_S3_REGION": "eu-west-1"}).s3
    assert aws is not None and aws.endpoint is None and aws.region == "eu-west-1" and not aws.path_style
    assert load({"K2_WAREHOUSE": "s3://b/k2", "K2_S3_ENDPOINT": "http://m:9000", "K2_S3_PATH_STYLE": "0"}).s3.path_style is False
    assert load({}).s3 is None  # a local warehouse needs none
    with pytest.raises(ConfigError, match="K2_S3_ENDPOINT"):
        load({"K2_WAREHOUSE": "s3://b/k2", "K2_S3_ENDPOINT": "minio:9000"})
    with pytest.raises(ConfigError, match="K2_S3_PATH_STYLE"):
        load({"K2_WAREHOUSE": "s3://b/k2", "K2_S3_PATH_STYLE": "sometimes"})
    assert load({"K2_ICEBERG_CATALOG_URI": "https://catalog.example/api/catalog"}).iceberg_catalog_uri.startswith("https://")


@pytest.fixture
def s3_warehouse_settings(settings, s3_catalog_config) -> Iterator:  # type: ignore[no-untyped-def]
    settings.K2 = dataclasses.replace(settings.K2, warehouse=s3_catalog_config.warehouse, s3=s3_catalog_config.s3)
    yield settings


def test_healthz_warehouse_check_writes_to_the_s3_bucket_and_names_a_missing_one(
        s3_warehouse_settings, s3_endpoint, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    from k2portal.health import check_warehouse

    assert check_warehouse() == "ok"
    assert not [k for k in _objects(s3_endpoint, s3_bucket) if ".healthz-" in k]  # the probe was removed
    s3_warehouse_settings.K2 = dataclasses.replace(s3_warehouse_settings.K2, warehouse=f"s3://{s3_bucket}-gone/k2")
    with pytest.raises(Exception, match=f"{s3_bucket}-gone"):
        check_warehouse()


def test_saved_sql_reads_the_s3_tables_but_nothing_else_in_the_bucket(iceberg_tables, catalog_config, s3_endpoint,
                                                                      s3_bucket) -> None:  # type: ignore[no-untyped-def]
    from queries.engine.connection import EngineConfig
    from queries.engine.errors import SandboxViolation
    from queries.engine.market import MarketQueries
    from queries.engine.source import IcebergSource
    from tests.query.conftest import trade_rows

    iceberg_tables["trades"].append(trade_rows([{"symbol": "BHP", "ts": dt.datetime(2024, 3, 11, 1, tzinfo=dt.UTC),
                                                 "price": "45.100000", "volume": 7, "seq": 1}]))
    _s3(s3_endpoint).put_object(Bucket=s3_bucket, Key="private/secret.csv", Body=b"a,b\n1,2\n")
    engine = MarketQueries(IcebergSource(load_catalog(catalog_config), catalog_config.namespace), EngineConfig(threads=1))
    assert engine.config.s3 == catalog_config.s3  # taken from the catalog: DuckDB reads as pyiceberg writes
    ok = sandbox.run(source=engine.source, sql="SELECT symbol, volume FROM trades", declarations={}, config=engine.config)
    assert ok.table.to_pylist() == [{"symbol": "BHP", "volume": 7}]
    for sql in (f"SELECT * FROM read_csv('s3://{s3_bucket}/private/secret.csv')",
                f"SELECT * FROM read_csv('s3://{s3_bucket}/warehouse/../private/secret.csv')",
                f"SELECT * FROM 's3://{s3_bucket}/warehouse/../private/secret.csv'",
                f"SELECT * FROM trades WHERE symbol IN (SELECT a FROM read_csv('s3://{s3_bucket}/warehouse/../private/x'))"):
        with pytest.raises(SandboxViolation):
            sandbox.run(source=engine.source, sql=sql, declarations={}, config=engine.config)


def test_only_sql_catalog_tables_take_the_audited_fast_commit_path(iceberg_tables) -> None:  # type: ignore[no-untyped-def]
    """A REST catalog's tables commit through plain pyiceberg (the fast path mirrors SqlCatalog's
    commit): a table of another catalog (here pyiceberg's read-only StaticTable) is not fast-pathed."""
    from pyiceberg.table import StaticTable

    from catalog.engine import fast_commit

    table = iceberg_tables["trades"]
    assert fast_commit.uses_fast_path(table)
    assert not fast_commit.uses_fast_path(StaticTable.from_metadata(table.metadata_location, properties=dict(table.io.properties)))


def test_manage_py_takes_the_s3_warehouse_from_the_environment(iceberg_uri, s3_endpoint, s3_bucket, unique) -> None:  # type: ignore[no-untyped-def]
    """The documented variables alone (K2_WAREHOUSE, K2_S3_ENDPOINT, AWS_*) get a separate process
    writing the tables' metadata into the bucket; a bucket that does not exist is a clear error."""
    import os
    import subprocess
    import sys

    from k2portal.config import BASE_DIR

    namespace = f"t_{unique}"
    env = {**os.environ, "K2_ICEBERG_CATALOG_URI": iceberg_uri, "K2_WAREHOUSE": f"s3://{s3_bucket}/warehouse",
           "K2_S3_ENDPOINT": s3_endpoint, "AWS_ACCESS_KEY_ID": S3_TEST_KEY, "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run([sys.executable, "manage.py", "init_catalog", "--namespace", namespace], cwd=BASE_DIR,
                          env=env, capture_output=True, text=True, timeout=120)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        keys = set(_objects(s3_endpoint, s3_bucket))
        for data_type in ("trades", "quotes", "reference_data"):
            assert any(k.startswith(f"s3://{s3_bucket}/warehouse/{namespace}/{data_type}/metadata/")
                       and k.endswith(".metadata.json") for k in keys), keys
        gone = subprocess.run([sys.executable, "manage.py", "init_catalog", "--namespace", f"{namespace}_b"],
                              cwd=BASE_DIR, env={**env, "K2_WAREHOUSE": f"s3://{s3_bucket}-gone/warehouse"},
                              capture_output=True, text=True, timeout=120)
        assert gone.returncode != 0 and f"{s3_bucket}-gone" in gone.stderr and "K2_S3_ENDPOINT" in gone.stderr
    finally:
        catalog = load_catalog(CatalogConfig(uri=iceberg_uri, warehouse=f"s3://{s3_bucket}/warehouse", s3=S3Options(
            endpoint=s3_endpoint, path_style=True, access_key_id=S3_TEST_KEY, secret_access_key=S3_TEST_SECRET)))
        for ns in (namespace, f"{namespace}_b"):
            for data_type in ("trades", "quotes", "reference_data"):
                try:
                    catalog.drop_table(f"{ns}.{data_type}")
                except Exception:  # noqa: BLE001 - best-effort cleanup
                    pass
            try:
                catalog.drop_namespace(ns)
            except Exception:  # noqa: BLE001
                pass


def test_the_compose_portal_environment_configures_minio_for_pyiceberg_and_duckdb() -> None:
    import yaml

    from k2portal.config import BASE_DIR

    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    env = {k: str(v) for k, v in compose["x-portal-env"].items()}
    env = {k: ("x" * 50 if v.startswith("${SECRET_KEY") else v) for k, v in env.items()}
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = "k2admin", "k2password"  # compose's ${...:-default}s
    cfg = load(env)
    assert cfg.warehouse.startswith("s3://") and cfg.s3 is not None
    assert (cfg.s3.endpoint, cfg.s3.path_style) == ("http://minio:9000", True)
    assert "ENDPOINT 'minio:9000'" in cfg.s3.duckdb_secret_sql() and "USE_SSL false" in cfg.s3.duckdb_secret_sql()
    assert cfg.s3.fileio_properties()["s3.endpoint"] == "http://minio:9000"
