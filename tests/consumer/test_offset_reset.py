"""Offset reset of a stopped consumer on the real broker, consistent with the Iceberg table's
recorded offsets (issue 13 item 3): the plan says what is skipped or re-read per partition, a
target behind the table is refused, and the consumer resumes where the reset put it."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time

import pytest
from confluent_kafka import Producer
from django.core.management import CommandError, call_command
from django.db import connection

from catalog.engine import schemas, wire
from catalog.engine.iceberg import load_catalog
from ingestion import consumer_services
from ingestion.engine.offset_reset import OffsetResetError
from ingestion.models import Consumer, Topic
from ingestion.offset_services import plan_consumer_reset, reset_consumer_offsets
from k2core.duckdb_conn import connect, scan_sql
from tests.consumer.conftest import create_topic, trade


class Rig:
    """A topic with two partitions, a Consumer row on it, and a way to run it in this process."""

    def __init__(self, bootstrap, catalog_config, unique, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        from catalog.registry import EmbeddedRegistry

        self.bootstrap, self.catalog_config = bootstrap, catalog_config
        self.topic = f"market.equities.trades.r{unique}"
        create_topic(bootstrap, self.topic, partitions=2)
        self.schema_id = EmbeddedRegistry().register(schemas.subject_name(self.topic), schemas.schema_text("trades"))
        self.next_seq = 5
        self.ends = {0: 0, 1: 0}
        self.catalog = load_catalog(catalog_config)
        topic = Topic.objects.create(name=self.topic, asset_class="equities", data_type="trades",
                                     exchange=f"r{unique}", partitions=2)
        self.consumer = Consumer.objects.create(name=f"r-{unique}", data_type="trades", topic=topic,
                                                group_id=f"g-{unique}", batch_size=20, max_batch_ms=100)
        real = consumer_services.consumer_config
        monkeypatch.setattr(consumer_services, "consumer_config",
                            lambda **kw: real(**kw, namespace=catalog_config.namespace))

    def produce(self, count: int) -> dict[int, int]:
        """`count` trades (five symbols, each with its own sequence), keys spread over both
        partitions; returns how many went to each, from the broker's delivery reports."""
        parsed = schemas.parsed_schema("trades")
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        counts = {0: 0, 1: 0}

        def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
            assert err is None, err
            counts[msg.partition()] += 1
            self.ends[msg.partition()] = max(self.ends[msg.partition()], msg.offset() + 1)

        for s in range(self.next_seq, self.next_seq + count):
            symbol = f"S{s % 5}"
            producer.produce(self.topic, key=symbol.encode(), on_delivery=delivered,
                             value=wire.encode(self.schema_id, parsed, trade(symbol, s // 5 + 1)))
        assert producer.flush(30) == 0
        self.next_seq += count
        return counts

    def highs(self) -> dict[int, int]:
        return dict(self.ends)

    def counts(self) -> tuple[int, int]:
        table = self.catalog.load_table(f"{self.catalog_config.namespace}.trades")
        if table.current_snapshot() is None:
            return 0, 0
        conn = connect()
        try:
            return conn.execute("SELECT count(*), count(DISTINCT (symbol, sequence_number)) FROM "
                                f"{scan_sql(table.metadata_location)}").fetchone()
        finally:
            conn.close()

    def run_until(self, rows: int, settle_s: float = 0.0) -> None:
        """Run the consumer (the Celery task's code, in a thread) until the table has `rows` rows, then stop it."""
        from ingestion.tasks import run_consumer

        Consumer.objects.filter(pk=self.consumer.pk).update(status=Consumer.Status.STARTING)
        thread = threading.Thread(target=lambda: (run_consumer.run(self.consumer.pk), connection.close()))
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (self.counts()[0] < rows or
                                               Consumer.objects.get(pk=self.consumer.pk).status != "running"):
            time.sleep(0.3)
        time.sleep(settle_s)
        self.consumer.refresh_from_db()
        consumer_services.stop_consumer(consumer=self.consumer)
        thread.join(timeout=30)
        assert not thread.is_alive()
        self.consumer.refresh_from_db()
        assert self.consumer.status == "stopped"


@pytest.fixture
def rig(k2_settings, kafka_bootstrap, iceberg_tables, catalog_config, unique, monkeypatch) -> Rig:  # type: ignore[no-untyped-def]
    rig = Rig(kafka_bootstrap, catalog_config, unique, monkeypatch)
    yield rig
    rig.catalog.engine.dispose()


@pytest.mark.django_db(transaction=True)
def test_reset_refuses_rewinding_behind_the_table_and_skip_then_rewind_reads_each_message_once(rig: Rig) -> None:
    rig.produce(60)
    rig.run_until(60)
    assert rig.counts() == (60, 60)
    table_end = rig.highs()

    # earliest: every partition's rows are in the table → refused, with where and why
    plans = plan_consumer_reset(consumer=rig.consumer, mode="earliest")
    assert [(p.partition, p.in_table, p.target) for p in plans] == [(0, table_end[0], 0), (1, table_end[1], 0)]
    assert all(p.refused and "write" in p.refused and "twice" in p.refused for p in plans)
    with pytest.raises(OffsetResetError, match=rf"\[0\]: offset 0 is behind offset {table_end[0]}"):
        reset_consumer_offsets(consumer=rig.consumer, mode="earliest")

    # latest after 40 more: the plan counts what is skipped per partition; applying it is honoured
    produced = rig.produce(40)
    plans = plan_consumer_reset(consumer=rig.consumer, mode="latest")
    assert {p.partition: p.effect for p in plans} == {
        p: f"skips {n} message(s) (offsets {table_end[p]}–{table_end[p] + n - 1} never reach the table)"
        for p, n in produced.items()}
    reset_consumer_offsets(consumer=rig.consumer, mode="latest")
    assert [p.committed for p in plan_consumer_reset(consumer=rig.consumer, mode="latest")] == [
        table_end[0] + produced[0], table_end[1] + produced[1]]

    # changed their mind: back to where the table ends re-reads the skipped 40 (not in the table)
    plans = plan_consumer_reset(consumer=rig.consumer, mode="offsets", offsets=table_end)
    assert {p.partition: p.effect for p in plans} == {
        p: f"re-reads {n} message(s) (offsets {table_end[p]}–{table_end[p] + n - 1}, not in the table)"
        for p, n in produced.items()}
    reset_consumer_offsets(consumer=rig.consumer, mode="offsets", offsets=table_end)
    rig.run_until(100, settle_s=2.0)
    assert rig.counts() == (100, 100)  # every message once

    # and once those rows are in the table, going back there is refused
    out = io.StringIO()
    with pytest.raises(CommandError, match=rf"nothing changed: .*\[0\]: offset {table_end[0]} is behind"):
        call_command("reset_offsets", rig.consumer.name, "--to-offset", f"0:{table_end[0]}", "--execute",
                     stdout=out)


@pytest.mark.django_db(transaction=True)
def test_reset_to_a_time_and_per_partition_offsets_via_the_command(rig: Rig) -> None:
    rig.produce(30)
    rig.run_until(30)
    ends = rig.highs()
    produced = rig.produce(20)

    # a time in the future: the end of each partition (skips the 20 new ones); dry run changes nothing
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    out = io.StringIO()
    call_command("reset_offsets", rig.consumer.name, "--to-datetime", later, stdout=out)
    text = out.getvalue()
    assert "dry run: nothing changed" in text
    for p, n in produced.items():
        assert f"[{p}]" in text and f"skips {n} message(s)" in text
    plans = plan_consumer_reset(consumer=rig.consumer, mode="latest")
    assert [p.committed for p in plans] == [ends[0], ends[1]]  # unchanged by the dry run

    # per partition: skip only partition 0's new messages
    out = io.StringIO()
    call_command("reset_offsets", rig.consumer.name, "--to-offset", f"0:{ends[0] + produced[0]}", "--execute",
                 stdout=out)
    assert "offsets committed" in out.getvalue()
    rig.run_until(30 + produced[1], settle_s=2.0)
    assert rig.counts() == (30 + produced[1], 30 + produced[1])

    # a running consumer cannot be reset
    Consumer.objects.filter(pk=rig.consumer.pk).update(status="running")
    with pytest.raises(CommandError, match="is running: stop it"):
        call_command("reset_offsets", rig.consumer.name, "--to-latest", "--execute", stdout=io.StringIO())
    with pytest.raises(CommandError, match="'x:1' is not partition:offset"):
        call_command("reset_offsets", rig.consumer.name, "--to-offset", "x:1", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_admin_page_previews_refuses_applies_and_logs_the_reset(rig: Rig, admin_client) -> None:
    from django.contrib.admin.models import LogEntry

    rig.produce(30)
    rig.run_until(30)
    ends = rig.highs()
    produced = rig.produce(10)
    url = f"/admin/ingestion/consumer/{rig.consumer.pk}/reset-offsets/"
    assert b"Reset offsets" in admin_client.get(f"/admin/ingestion/consumer/{rig.consumer.pk}/change/").content

    page = admin_client.post(url, {"mode": "earliest", "preview": "1"}).content.decode()
    assert "refused, nothing will change" in page and 'name="apply"' not in page
    assert f"offset 0 is behind offset {ends[0]}, up to which the Iceberg table already holds" in page

    page = admin_client.post(url, {"mode": "latest", "preview": "1"}).content.decode()
    assert 'name="apply"' in page
    for n in produced.values():
        assert f"skips {n} message(s)" in page

    response = admin_client.post(url, {"mode": "latest", "apply": "1"})
    assert response.status_code == 302
    plans = plan_consumer_reset(consumer=rig.consumer, mode="latest")
    assert [p.committed for p in plans] == [ends[0] + produced[0], ends[1] + produced[1]]
    entry = LogEntry.objects.get(object_id=str(rig.consumer.pk))
    assert entry.get_change_message().startswith("Offsets reset to latest: ") and "skips" in entry.get_change_message()

    Consumer.objects.filter(pk=rig.consumer.pk).update(status="running")
    page = admin_client.post(url, {"mode": "latest", "apply": "1"}).content.decode()
    assert "Nothing changed: consumer" in page and "is running: stop it" in page


@pytest.mark.django_db(transaction=True)
def test_reset_while_a_killed_member_is_still_in_the_group_says_so_and_keeps_the_plan(rig: Rig, admin_client) -> None:
    """A consumer that dies without leaving its group (SIGKILL) stays a member on the broker; a reset
    applied then is refused by the broker's commit. The page says why, changes nothing, and keeps the
    plan with its Apply button so the operator can apply again (once the member's session expired:
    on Kafka after its session timeout; the embedded broker expires it when a consumer joins the group,
    see tests/platform/test_operations_browser.py)."""
    import os
    import signal
    import subprocess
    import sys

    rig.produce(20)
    rig.run_until(20)
    before = [p.committed for p in plan_consumer_reset(consumer=rig.consumer, mode="latest")]
    rig.produce(10)
    member = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from confluent_kafka import Consumer\n"
        f"c = Consumer({{'bootstrap.servers': {rig.bootstrap!r}, 'group.id': {rig.consumer.group_id!r},"
        " 'enable.auto.commit': False, 'session.timeout.ms': 6000, 'heartbeat.interval.ms': 1000})\n"
        f"c.subscribe([{rig.topic!r}])\n"
        "while not c.assignment():\n"
        "    c.poll(0.2)\n"
        "print('member', flush=True)\n"
        "while True:\n"
        "    c.poll(0.2)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert member.stdout.readline().strip() == "member"
    finally:
        os.kill(member.pid, signal.SIGKILL)
        member.wait()

    url = f"/admin/ingestion/consumer/{rig.consumer.pk}/reset-offsets/"
    page = admin_client.post(url, {"mode": "latest", "apply": "1"}).content.decode()
    assert "Nothing changed: the broker refused the commit because consumer group" in page, page
    assert "still has a member" in page and 'name="apply"' in page and 'id="reset-plan"' in page
    assert [p.committed for p in plan_consumer_reset(consumer=rig.consumer, mode="latest")] == before


@pytest.mark.django_db(transaction=True)
def test_rewrite_deletes_the_range_from_the_table_and_the_consumer_writes_each_row_once_again(rig: Rig, admin_client) -> None:
    """Issue 13 item 3's explicit rewrite: a target behind what the table holds is refused unless the
    operator asks to rewrite; then that range's rows leave the table in one commit that records the
    rewind, and the consumer reads them again: every Kafka position once in the table, read back with DuckDB."""
    from django.contrib.admin.models import LogEntry

    from ingestion.offset_services import table_offsets

    rig.produce(30)
    rig.run_until(30)
    ends = rig.highs()
    mid = ends[0] // 2
    assert mid > 0
    refused = plan_consumer_reset(consumer=rig.consumer, mode="offsets", offsets={0: mid})
    assert refused[0].refused and "or rewrite that range explicitly" in refused[0].refused

    plans = plan_consumer_reset(consumer=rig.consumer, mode="offsets", offsets={0: mid}, rewrite=True)
    assert plans[0].rewrite and not plans[0].refused
    assert plans[0].effect.startswith(f"rewrites {ends[0] - mid} message(s) (offsets {mid}–{ends[0] - 1}")
    assert not plans[1].rewrite and plans[1].effect == "unchanged"
    reset_consumer_offsets(consumer=rig.consumer, mode="offsets", offsets={0: mid}, rewrite=True)
    assert rig.counts() == (30 - (ends[0] - mid),) * 2  # the range left the table
    assert table_offsets(rig.consumer) == {(rig.topic, 0): mid, (rig.topic, 1): ends[1]}

    rig.run_until(30)
    assert rig.counts() == (30, 30)

    # the same from the admin page: everything, from the earliest offset
    url = f"/admin/ingestion/consumer/{rig.consumer.pk}/reset-offsets/"
    page = admin_client.post(url, {"mode": "earliest", "rewrite": "1", "preview": "1"}).content.decode()
    assert 'name="apply"' in page and f"rewrites {ends[0]} message(s)" in page and f"rewrites {ends[1]} message(s)" in page
    assert admin_client.post(url, {"mode": "earliest", "rewrite": "1", "apply": "1"}).status_code == 302
    assert rig.counts() == (0, 0)
    assert "rewriting rows already in the table" in LogEntry.objects.filter(
        object_id=str(rig.consumer.pk)).latest("action_time").get_change_message()
    rig.run_until(30)

    table = rig.catalog.load_table(f"{rig.catalog_config.namespace}.trades")
    conn = connect()
    try:
        positions = conn.execute(f"SELECT source_partition, source_offset, count(*) FROM {scan_sql(table.metadata_location)} "
                                 "GROUP BY ALL ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    assert positions == [(p, o, 1) for p in (0, 1) for o in range(ends[p])]
