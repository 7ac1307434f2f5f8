"""The management commands: produce (summary, exit status, DLQ file), create_topics, refresh_watermarks, register_schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.models import SchemaSubject
from ingestion.engine.topics import existing_partitions
from ingestion.models import Topic
from k2portal.config import BASE_DIR
from tests.producer.conftest import QUOTE_HEADER, TRADE_HEADER, write_csv

GOOD = ["BHP", "1001", "2014-03-03T10:00:00", "37.80", "100", "0", "ASX"]


def produce(csv_path: Path, asset_class: str, dlq: Path, data_type: str = "trades") -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("produce", csv=csv_path, data_type=data_type, exchange="asx", asset_class=asset_class,
                     dlq_file=dlq, timeout=15, no_progress=True, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@pytest.mark.django_db
def test_produce_ends_with_one_summary_line_and_exit_status_zero(k2_settings, tmp_path: Path, topics: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, [GOOD] * 3)
    out, error = produce(csv_path, topics["trades"].split(".")[1], tmp_path / "dlq.jsonl")
    assert error is None
    [summary] = out.strip().splitlines()
    assert "rows read 3, produced 3, acked 3, rejected 0" in summary and "rows/s" in summary
    assert not (tmp_path / "dlq.jsonl").exists()


BAD_ROWS = [
    ("missing column", QUOTE_HEADER, ["BHP", "1001", "2014-03-03T10:00:00", "37.79", "300", "37.81"], "missing_column"),
    ("extra column", QUOTE_HEADER, ["BHP", "1001", "2014-03-03T10:00:00", "37.79", "300", "37.81", "200", "9"], "extra_column"),
    ("unparsable price", QUOTE_HEADER, ["BHP", "1001", "2014-03-03T10:00:00", "$37.79", "300", "37.81", "200"], "bad_price"),
    ("unparsable timestamp", QUOTE_HEADER, ["BHP", "1001", "yesterday", "37.79", "300", "37.81", "200"], "bad_timestamp"),
    ("unparsable integer", QUOTE_HEADER, ["BHP", "1001", "2014-03-03T10:00:00", "37.79", "3e2", "37.81", "200"], "bad_integer"),
    ("negative volume", QUOTE_HEADER, ["BHP", "1001", "2014-03-03T10:00:00", "37.79", "-300", "37.81", "200"], "negative_volume"),
    ("empty symbol", QUOTE_HEADER, ["", "1001", "2014-03-03T10:00:00", "37.79", "300", "37.81", "200"], "empty_symbol"),
    ("bid above ask", QUOTE_HEADER, ["BHP", "1001", "2014-03-03T10:00:00", "37.85", "300", "37.81", "200"], "crossed_quote"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("case", "header", "bad", "reason"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_produce_rejects_a_bad_row_keeps_it_and_exits_non_zero(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], case: str, header: list[str], bad: list[str], reason: str) -> None:
    good = ["RIO", "1002", "2014-03-03T10:00:01", "64.10", "50", "64.12", "75"]
    csv_path = write_csv(tmp_path / "q.csv", header, [good, bad, good])
    dlq = tmp_path / "dlq.jsonl"
    out, error = produce(csv_path, topics["quotes"].split(".")[1], dlq, data_type="quotes")
    assert "rows read 3, produced 2, acked 2, rejected 1" in out
    assert error is not None and error.returncode == 1
    assert f"1 row(s) rejected ({reason} 1)" in str(error) and str(dlq) in str(error)
    [entry] = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert entry["line"] == 3 and entry["reason"] == reason and entry["error"]
    assert entry["row"] == ",".join(bad)


@pytest.mark.django_db
def test_produce_with_a_bad_header_produces_nothing_and_says_what_the_header_should_be(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str]) -> None:
    csv_path = write_csv(tmp_path / "t.csv", [*TRADE_HEADER[:-1], "colour"], [GOOD])
    out, error = produce(csv_path, topics["trades"].split(".")[1], tmp_path / "dlq.jsonl")
    assert error is not None and error.returncode == 2
    assert "missing required column(s) venue" in str(error) and "unknown column(s) 'colour'" in str(error)
    assert "symbol,company_id,exchange_timestamp,price,volume,qualifiers,venue" in str(error)


def test_produce_help_explains_every_option() -> None:
    help_text = subprocess.run([sys.executable, "manage.py", "produce", "--help"], cwd=BASE_DIR, capture_output=True,
                               text=True, timeout=60).stdout
    for option in ("--csv", "--data-type", "--exchange", "--asset-class", "--dlq-file", "--timeout", "--connect-timeout", "--no-progress"):
        assert option in help_text
    assert "{trades,quotes,reference_data}" in help_text and "Exit status" in help_text


@pytest.mark.django_db
def test_create_topics_is_idempotent_and_records_topics(k2_settings, kafka_bootstrap: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    first, second = StringIO(), StringIO()
    call_command("create_topics", asset_class=f"c{unique}", partitions=4, stdout=first)
    call_command("create_topics", asset_class=f"c{unique}", partitions=4, stdout=second)
    name = f"market.c{unique}.trades.asx"
    assert f"{name}: created" in first.getvalue() and f"{name}: exists" in second.getvalue()
    assert existing_partitions(kafka_bootstrap)[name] == 4
    topic = Topic.objects.get(name=name)
    assert (topic.asset_class, topic.data_type, topic.exchange, topic.partitions) == (f"c{unique}", "trades", "asx", 4)
    assert Topic.objects.filter(name__startswith=f"market.c{unique}.").count() == 6  # three topics and their .dlq


@pytest.mark.django_db
def test_create_topics_defaults_to_30_partitions_for_asx(k2_settings, kafka_bootstrap: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    call_command("create_topics", asset_class=f"d{unique}", stdout=StringIO())
    assert existing_partitions(kafka_bootstrap)[f"market.d{unique}.quotes.asx"] == 30


@pytest.mark.django_db
def test_refresh_watermarks_stores_per_partition_offsets(k2_settings, tmp_path: Path, unique: str) -> None:  # type: ignore[no-untyped-def]
    asset_class = f"w{unique}"
    call_command("create_topics", asset_class=asset_class, partitions=3, stdout=StringIO())
    rows = [[s, "1", f"2014-03-03T10:00:{i:02d}", "1.00", "1", "0", "ASX"] for i, s in enumerate(["BHP", "RIO", "CBA"] * 20)]
    for _ in range(2):  # two runs, so each partition holds at least two record batches
        out, error = produce(write_csv(tmp_path / "t.csv", TRADE_HEADER, rows), asset_class, tmp_path / "d.jsonl")
        assert error is None
    name = f"market.{asset_class}.trades.asx"
    call_command("refresh_watermarks", name, stdout=StringIO())
    topic = Topic.objects.get(name=name)
    assert set(topic.watermarks) == {"0", "1", "2"} and topic.watermarks_refreshed_at is not None
    assert all(mark["low"] == 0 for mark in topic.watermarks.values())
    # Tansu reports the base offset of the last batch as the high watermark, so only "some data" is exact.
    assert sum(mark["high"] for mark in topic.watermarks.values()) > 0


@pytest.mark.django_db
def test_register_schemas_is_idempotent(k2_settings, unique: str) -> None:  # type: ignore[no-untyped-def]
    first, second = StringIO(), StringIO()
    call_command("register_schemas", asset_class=f"r{unique}", stdout=first)
    call_command("register_schemas", asset_class=f"r{unique}", stdout=second)
    assert first.getvalue() == second.getvalue()
    subject = SchemaSubject.objects.get(name=f"market.r{unique}.trades.asx-value")
    assert subject.versions.count() == 1


@pytest.mark.django_db
def test_produce_with_the_broker_down_fails_clearly_within_the_connect_timeout(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses
    import time

    from tests.conftest import free_port

    settings.K2 = dataclasses.replace(settings.K2, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    csv_path = write_csv(tmp_path / "t.csv", TRADE_HEADER, [GOOD])
    started = time.monotonic()
    with pytest.raises(CommandError) as caught:
        call_command("produce", csv=csv_path, data_type="trades", exchange="asx", connect_timeout=2, stdout=StringIO())
    assert time.monotonic() - started < 10
    assert caught.value.returncode == 2
    assert "did not answer within 2s" in str(caught.value) and "K2_KAFKA_BOOTSTRAP" in str(caught.value)
