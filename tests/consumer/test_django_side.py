"""The Django shell around the engine: settings, init_catalog, services, the Celery task, admin."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection

from catalog.engine.iceberg import load_catalog
from ingestion import consumer_services
from ingestion.models import Consumer, ConsumerRun, Topic
from k2portal.config import load
from tests.consumer.conftest import create_topic, encode_trades, produce, table_rows, trade


def test_batch_floor_is_adr_015s_1000_and_the_batch_size_bound_comes_from_the_env() -> None:
    base = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/k2"}
    default = consumer_services.consumer_config(data_type="trades", topics=("t",), k2=load(base))
    assert default.batch_floor == 1000  # ADR #015: the floor of an adaptive batch (issue #15)
    assert default.batch_size >= default.batch_floor
    override = consumer_services.consumer_config(data_type="trades", topics=("t",),
                                                 k2=load({**base, "K2_CONSUMER_BATCH_SIZE": "5000"}))
    assert override.batch_size == 5000
    explicit = consumer_services.consumer_config(data_type="trades", topics=("t",), batch_size=7,
                                                 k2=load({**base, "K2_CONSUMER_BATCH_SIZE": "5000"}))
    assert explicit.batch_size == 7
    assert default.group == "k2-iceberg-writer-trades"  # ADR #012


def test_the_min_commit_interval_comes_from_the_env_and_an_explicit_value_wins_zero_included() -> None:
    from ingestion.engine.consumer import ConsumerConfig

    base = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/k2"}
    default = consumer_services.consumer_config(data_type="trades", topics=("t",), k2=load(base))
    assert default.min_commit_interval_ms == ConsumerConfig("b:1", "trades", topics=("t",)).min_commit_interval_ms == 100
    env = load({**base, "K2_CONSUMER_MIN_COMMIT_INTERVAL_MS": "25"})
    assert consumer_services.consumer_config(data_type="trades", topics=("t",), k2=env).min_commit_interval_ms == 25
    assert consumer_services.consumer_config(data_type="trades", topics=("t",), k2=load(
        {**base, "K2_CONSUMER_MIN_COMMIT_INTERVAL_MS": "0"})).min_commit_interval_ms == 0  # 0 is a value, not "unset"
    for explicit in (0, 250):
        config = consumer_services.consumer_config(data_type="trades", topics=("t",), k2=env,
                                                   min_commit_interval_ms=explicit)
        assert config.min_commit_interval_ms == explicit


@pytest.mark.parametrize(("args", "message"), [
    (["--min-commit-interval-ms", "-1"], "--min-commit-interval-ms must be an integer from 0 to 60000 (ms), got -1"),
    (["--min-commit-interval-ms", "60001"], "--min-commit-interval-ms must be an integer from 0 to 60000 (ms), got 60001"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--max-batch-ms", "-5"], "--max-batch-ms must be a positive integer, got -5"),
])
def test_consume_refuses_a_bad_batching_option_saying_which_and_why(args: list[str], message: str) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError) as err:
        call_command("consume", "--topic", "market.equities.trades.asx", *args)
    assert str(err.value) == message


def test_consumers_thin_their_snapshots_per_the_settings() -> None:
    import datetime as dt

    base = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/k2"}
    default = consumer_services.consumer_config(data_type="trades", topics=("t",), k2=load(base)).snapshot_policy
    assert default is not None
    assert (default.retention, default.full_detail, default.thin_interval, default.every_s) == (
        dt.timedelta(days=7), dt.timedelta(minutes=1), dt.timedelta(minutes=5), 60.0)
    tuned = consumer_services.consumer_config(data_type="trades", topics=("t",), k2=load({
        **base, "K2_CONSUMER_SNAPSHOT_EXPIRY_SECONDS": "10", "K2_SNAPSHOT_FULL_DETAIL_MINUTES": "3"})).snapshot_policy
    assert tuned is not None and (tuned.every_s, tuned.full_detail) == (10.0, dt.timedelta(minutes=3))


def test_init_catalog_creates_tables_idempotently(k2_settings, catalog_config) -> None:
    call_command("init_catalog", "--namespace", catalog_config.namespace)
    call_command("init_catalog", "--namespace", catalog_config.namespace)
    catalog = load_catalog(catalog_config)
    names = sorted(t[-1] for t in catalog.list_tables(catalog_config.namespace))
    assert names == ["quotes", "reference_data", "trades"]
    trades = catalog.load_table(f"{catalog_config.namespace}.trades")
    assert [f.name for f in trades.spec().fields] == ["exchange_date"]
    for name in names:
        catalog.drop_table(f"{catalog_config.namespace}.{name}")
    catalog.drop_namespace(catalog_config.namespace)


@pytest.mark.django_db
def test_start_and_stop_follow_the_allowed_transitions(django_capture_on_commit_callbacks) -> None:
    consumer = Consumer.objects.create(name="c1", data_type="trades", group_id="g", status=Consumer.Status.RUNNING)
    with pytest.raises(consumer_services.ConsumerTransitionError, match="only a stopped or failed"):
        consumer_services.start_consumer(consumer=consumer)
    consumer_services.stop_consumer(consumer=consumer)
    consumer.refresh_from_db()
    assert consumer.status == "stopping"
    with pytest.raises(consumer_services.ConsumerTransitionError, match="only a starting or running"):
        consumer_services.stop_consumer(consumer=consumer)


@pytest.mark.django_db
def test_ensure_default_consumers_is_idempotent() -> None:
    first = consumer_services.ensure_default_consumers()
    second = consumer_services.ensure_default_consumers()
    assert [c.pk for c in first] == [c.pk for c in second]
    assert sorted(c.group_id for c in first) == ["k2-iceberg-writer-quotes", "k2-iceberg-writer-reference_data",
                                                 "k2-iceberg-writer-trades"]
    assert Topic.objects.filter(name="market.equities.trades.asx").exists()


@pytest.mark.django_db(transaction=True)
def test_task_runs_until_status_is_stopping_and_records_the_run(k2_settings, kafka_bootstrap, iceberg_tables,
                                                                catalog_config, unique, monkeypatch) -> None:
    from catalog.registry import EmbeddedRegistry
    from ingestion.tasks import run_consumer

    topic_name = f"market.equities.trades.c{unique}"
    create_topic(kafka_bootstrap, topic_name)
    produce(kafka_bootstrap, topic_name, encode_trades(EmbeddedRegistry(), topic_name, [trade("BHP", s) for s in range(1, 21)]))
    topic = Topic.objects.create(name=topic_name, asset_class="equities", data_type="trades", exchange=f"c{unique}")
    consumer = Consumer.objects.create(name=f"c-{unique}", data_type="trades", topic=topic, group_id=f"g-{unique}",
                                       batch_size=5, max_batch_ms=100, min_commit_interval_ms=0,
                                       status=Consumer.Status.STARTING)
    # the task's engine writes to this test's namespace
    real = consumer_services.consumer_config
    configs: list[object] = []
    monkeypatch.setattr(consumer_services, "consumer_config",
                        lambda **kw: configs.append(real(**kw, namespace=catalog_config.namespace)) or configs[-1])
    done: list[object] = []
    thread = threading.Thread(target=lambda: (done.append(run_consumer.run(consumer.pk)), connection.close()))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(table_rows(catalog_config)) < 20:
        time.sleep(0.3)
    consumer.refresh_from_db()
    assert consumer.status == "running" and consumer.heartbeat_at is not None
    consumer_services.stop_consumer(consumer=consumer)
    thread.join(timeout=30)
    assert not thread.is_alive()
    consumer.refresh_from_db()
    assert consumer.status == "stopped" and consumer.stats["messages"] == 20
    # per-partition lag lands in the row (issue 11 items 4-5, issue 13): caught up, committed, when
    (entry,) = consumer.stats["partitions"]
    assert {k: entry[k] for k in ("topic", "partition", "committed", "end", "lag")} == \
        {"topic": topic_name, "partition": 0, "committed": 20, "end": 20, "lag": 0}
    assert entry["last_commit_at"] and consumer.stats["lag"] == 0 and "member_id" in consumer.stats
    run = ConsumerRun.objects.get(consumer=consumer)
    assert run.ended_at is not None and run.messages == 20 and run.batches == 4
    (config,) = configs  # the consumer's own settings reached the engine, 0 included
    assert (config.batch_size, config.max_batch_ms, config.min_commit_interval_ms) == (5, 100, 0)  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_gap_admin_filters_by_state_and_consumer_admin_stop_action(admin_client) -> None:
    from datetime import UTC, datetime

    from ingestion.models import SequenceGap

    common = {"detected_at": datetime.now(UTC), "exchange": "ASX", "asset_class": "equities", "data_type": "trades",
              "received_sequence": 9, "gap_size": 2, "missing_remaining": 2, "topic": "t", "partition": 0, "offset": 1}
    SequenceGap.objects.create(symbol="OPENSYM", expected_sequence=7, **common)
    SequenceGap.objects.create(symbol="FILLEDSYM", expected_sequence=7, state="filled", **common)
    page = admin_client.get("/admin/ingestion/sequencegap/?state__exact=open")
    assert page.status_code == 200
    assert b"OPENSYM" in page.content and b"FILLEDSYM" not in page.content
    consumer = Consumer.objects.create(name="c-admin", data_type="trades", group_id="g", status="running")
    admin_client.post("/admin/ingestion/consumer/", {"action": "stop_selected", "_selected_action": [consumer.pk]})
    consumer.refresh_from_db()
    assert consumer.status == "stopping"


def test_iceberg_table_summaries_show_snapshot_rows_and_files(iceberg_tables, catalog_config) -> None:
    from catalog.admin_tables import table_summaries
    from tests.consumer.test_writer import _batch

    iceberg_tables["trades"].append(_batch(4))
    summaries = {s.identifier.rsplit(".", 1)[-1]: s for s in
                 table_summaries(catalog=load_catalog(catalog_config), namespace=catalog_config.namespace)}
    assert summaries["trades"].rows == 4 and summaries["trades"].data_files == 1
    assert summaries["trades"].snapshots == 1 and summaries["trades"].manifests == 1
    assert summaries["trades"].snapshot_id == iceberg_tables["trades"].current_snapshot().snapshot_id
    assert summaries["quotes"].snapshot_id is None and summaries["quotes"].rows == 0
