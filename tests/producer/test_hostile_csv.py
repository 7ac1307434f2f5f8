"""Issue 11 item 8: CSV files that used to crash the producer mid-file (`manage.py produce`).

Each bad row is kept in the DLQ file with its line and reason and every other row reaches the
real broker; a file that is not UTF-8 text is refused before anything is sent (exit 2); a
UTF-8 byte order mark is accepted; symbols follow one pattern, ^[A-Z0-9.]{1,12}$.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
from collections import Counter
from io import StringIO
from pathlib import Path

import fastavro
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.engine.schemas import parsed_schema
from catalog.engine.wire import split
from tests.producer.conftest import TRADE_HEADER, partition_counts, read_all

HEADER = ",".join(TRADE_HEADER).encode()


def good_row(i: int, symbol: str = "BHP") -> bytes:
    return f"{symbol},1001,2014-03-03T10:{i // 60 % 60:02d}:{i % 60:02d},37.80,{100 + i},0,ASX".encode()


def run_produce(csv_path: Path, topic: str, dlq: Path, workers: int = 1) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("produce", csv=csv_path, data_type="trades", exchange="asx", asset_class=topic.split(".")[1],
                     dlq_file=dlq, timeout=15, no_progress=True, workers=workers, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def dlq_entries(dlq: Path) -> list[dict]:
    return [json.loads(line) for line in dlq.read_text(encoding="utf-8").splitlines()]


def volumes_on_broker(bootstrap: str, topic: str, expected: int, group: str) -> Counter[tuple[str, int]]:
    """(symbol, volume) of every message on the topic; the volume identifies the row in these files."""
    messages = read_all(bootstrap, topic, expected=expected, group=group)
    schema = parsed_schema("trades")
    found: Counter[tuple[str, int]] = Counter()
    for msg in messages:
        record = fastavro.schemaless_reader(io.BytesIO(split(msg.value())[1]), schema, None)
        found[(record["symbol"], record["volume"])] += 1
    return found


def write(path: Path, *lines: bytes, newline: bytes = b"\n") -> Path:
    path.write_bytes(newline.join(lines) + newline)
    return path


@pytest.mark.django_db
@pytest.mark.parametrize("workers", [1, 2])
def test_a_non_utf8_byte_rejects_its_row_with_the_line_and_the_rest_is_produced(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], kafka_bootstrap: str, unique: str, workers: int) -> None:
    rows = [good_row(i) for i in range(3)]
    bad = b"BHP,1001,2014-03-03T10:00:00,37.80,999,0,AS\xffX"  # venue holds a Latin-1 byte: line 5
    rows += [bad] + [good_row(i, "RIO") for i in range(3, 126)]  # 123 good rows after it
    csv_path = write(tmp_path / "t.csv", HEADER, *rows)
    dlq = tmp_path / "dlq.jsonl"
    out, error = run_produce(csv_path, topics["trades"], dlq, workers=workers)
    assert "rows read 127, produced 126, acked 126, rejected 1" in out
    assert error is not None and error.returncode == 1 and "bad_encoding 1" in str(error)
    [entry] = dlq_entries(dlq)
    assert entry["line"] == 5 and entry["reason"] == "bad_encoding"
    assert entry["error"] == "field 7 (venue) holds byte 0xFF, which is not UTF-8 (files are read as UTF-8)"
    assert entry["row"] == "BHP,1001,2014-03-03T10:00:00,37.80,999,0,AS\\xffX"  # the byte kept, shown as \xff
    found = volumes_on_broker(kafka_bootstrap, topics["trades"], 126, f"g-{unique}")
    assert found == Counter({("BHP", 100 + i): 1 for i in range(3)} | {("RIO", 100 + i): 1 for i in range(3, 126)})


@pytest.mark.django_db
@pytest.mark.parametrize(("case", "encode", "says"), [
    ("utf-16 with a byte order mark", lambda text: text.encode("utf-16"), "the file is UTF-16 text"),
    ("utf-16-le without a byte order mark", lambda text: text.encode("utf-16-le"), "holds NUL bytes"),
    ("utf-32 with a byte order mark", lambda text: text.encode("utf-32"), "the file is UTF-32 text"),
    ("gzip (binary)", lambda text: gzip.compress(text.encode()), "holds NUL bytes: the file is binary"),
    ("png-like (binary)", lambda text: b"\x89PNG\r\n\x1a\n" + text.encode(), "is not UTF-8 text (byte 0x89 at offset 0)"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_file_that_is_not_utf8_text_is_refused_before_anything_is_sent(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], kafka_bootstrap: str, case: str, encode, says: str) -> None:
    text = "\n".join([",".join(TRADE_HEADER)] + [good_row(i).decode() for i in range(50)]) + "\n"
    csv_path = tmp_path / "t.csv"
    csv_path.write_bytes(encode(text))
    dlq = tmp_path / "dlq.jsonl"
    out, error = run_produce(csv_path, topics["trades"], dlq)
    assert error is not None and error.returncode == 2, case
    assert says in str(error) and "K2 reads UTF-8 CSV files" in str(error)
    assert out == "" and not dlq.exists()
    assert sum(partition_counts(kafka_bootstrap, topics["trades"], 30).values()) == 0


@pytest.mark.django_db
def test_a_utf8_byte_order_mark_is_accepted(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], kafka_bootstrap: str, unique: str) -> None:
    csv_path = write(tmp_path / "t.csv", codecs.BOM_UTF8 + HEADER, *[good_row(i) for i in range(20)], newline=b"\r\n")
    out, error = run_produce(csv_path, topics["trades"], tmp_path / "dlq.jsonl")
    assert error is None, error
    assert "rows read 20, produced 20, acked 20, rejected 0" in out
    assert volumes_on_broker(kafka_bootstrap, topics["trades"], 20, f"g-{unique}") == \
        Counter({("BHP", 100 + i): 1 for i in range(20)})


@pytest.mark.django_db
@pytest.mark.parametrize("workers", [1, 2])
def test_a_field_over_the_csv_size_limit_rejects_its_row_and_the_rest_is_produced(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], kafka_bootstrap: str, unique: str, workers: int) -> None:
    huge = b"BHP,1001,2014-03-03T10:00:00,37.80,999,0," + b"V" * 140_000  # venue of 140,000 bytes > 131,072: line 3
    rows = [good_row(0), huge] + [good_row(i, "CBA") for i in range(1, 41)]
    csv_path = write(tmp_path / "t.csv", HEADER, *rows)
    dlq = tmp_path / "dlq.jsonl"
    out, error = run_produce(csv_path, topics["trades"], dlq, workers=workers)
    assert "rows read 42, produced 41, acked 41, rejected 1" in out
    assert error is not None and error.returncode == 1 and "field_too_large 1" in str(error)
    [entry] = dlq_entries(dlq)
    assert entry["line"] == 3 and entry["reason"] == "field_too_large"
    assert "field larger than field limit (131072)" in entry["error"]
    assert entry["row"] == huge.decode()  # kept whole
    found = volumes_on_broker(kafka_bootstrap, topics["trades"], 41, f"g-{unique}")
    assert found == Counter({("BHP", 100): 1} | {("CBA", 100 + i): 1 for i in range(1, 41)})


@pytest.mark.django_db
def test_volume_or_sequence_beyond_a_long_is_rejected_with_its_line(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], kafka_bootstrap: str, unique: str) -> None:
    header = HEADER + b",sequence_number"
    top = 2**63 - 1
    rows = [
        b"BHP,1001,2014-03-03T10:00:00,37.80,1,0,ASX,1",
        f"BHP,1001,2014-03-03T10:00:01,37.80,{top + 1},0,ASX,2".encode(),      # line 3: volume 2^63
        b"BHP,1001,2014-03-03T10:00:02,37.80,3,0,ASX,3",
        f"BHP,1001,2014-03-03T10:00:03,37.80,4,0,ASX,{top + 1}".encode(),      # line 5: sequence 2^63
        f"BHP,1001,2014-03-03T10:00:04,37.80,{10**30},0,ASX,5".encode(),       # line 6: far beyond
        f"RIO,1002,2014-03-03T10:00:05,64.10,{top},0,ASX,{top}".encode(),     # the largest long: accepted
        b"BHP,1001,2014-03-03T10:00:06,37.80,7,0,ASX,7",
    ]
    csv_path = write(tmp_path / "t.csv", header, *rows)
    dlq = tmp_path / "dlq.jsonl"
    out, error = run_produce(csv_path, topics["trades"], dlq)
    assert "rows read 7, produced 4, acked 4, rejected 3" in out
    assert error is not None and error.returncode == 1 and "out_of_range 3" in str(error)
    entries = dlq_entries(dlq)
    assert [(e["line"], e["reason"]) for e in entries] == [(3, "out_of_range"), (5, "out_of_range"), (6, "out_of_range")]
    assert entries[0]["error"] == f"volume {top + 1} is above {top}"
    assert entries[1]["error"] == f"sequence_number {top + 1} is above {top}"
    assert entries[2]["row"] == rows[4].decode()
    found = volumes_on_broker(kafka_bootstrap, topics["trades"], 4, f"g-{unique}")
    assert found == Counter({("BHP", 1): 1, ("BHP", 3): 1, ("RIO", top): 1, ("BHP", 7): 1})


BAD_SYMBOLS = [
    ("lower case", "bhp"),
    ("a space inside", "BH P"),
    ("a leading space", " BHP"),
    ("a NUL", "BHP\x00"),
    ("13 characters", "ABCDEFGHIJKLM"),
    ("40 characters", "A" * 40),
    ("a dash", "BHP-X"),
    ("non-ASCII letter", "BHPÉ"),
]
GOOD_SYMBOLS = ["BHP", "BRK.B", "360", "ABCDEFGHIJKL"]


@pytest.mark.django_db
def test_symbols_outside_the_documented_pattern_are_rejected_with_their_line(  # type: ignore[no-untyped-def]
        k2_settings, tmp_path: Path, topics: dict[str, str], kafka_bootstrap: str, unique: str) -> None:
    rows = [good_row(i, symbol) for i, symbol in enumerate(GOOD_SYMBOLS)]
    rows += [good_row(10 + i, symbol) for i, (_, symbol) in enumerate(BAD_SYMBOLS)]
    rows += [good_row(30, "WES")]
    csv_path = write(tmp_path / "t.csv", HEADER, *rows)
    dlq = tmp_path / "dlq.jsonl"
    out, error = run_produce(csv_path, topics["trades"], dlq)
    good = len(GOOD_SYMBOLS) + 1
    assert f"rows read {len(rows)}, produced {good}, acked {good}, rejected {len(BAD_SYMBOLS)}" in out
    assert error is not None and error.returncode == 1 and f"bad_symbol {len(BAD_SYMBOLS)}" in str(error)
    entries = dlq_entries(dlq)
    first_bad_line = 2 + len(GOOD_SYMBOLS)
    assert [(e["line"], e["reason"]) for e in entries] == \
        [(first_bad_line + i, "bad_symbol") for i in range(len(BAD_SYMBOLS))]
    for i, entry in enumerate(entries):
        assert "is not 1 to 12 upper-case letters, digits or dots (pattern ^[A-Z0-9.]{1,12}$)" in entry["error"]
        assert entry["row"] == rows[len(GOOD_SYMBOLS) + i].decode()
    found = volumes_on_broker(kafka_bootstrap, topics["trades"], good, f"g-{unique}")
    assert found == Counter({(s, 100 + i): 1 for i, s in enumerate(GOOD_SYMBOLS)} | {("WES", 130): 1})
