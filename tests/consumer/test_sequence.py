"""The sequence tracker (ADR #011, #014) on Arrow batches."""

from __future__ import annotations

import pyarrow as pa

from ingestion.engine.sequence import SequenceTracker


def _batch(rows: list[tuple[str, int | None]], exchange: str = "ASX") -> pa.Table:
    return pa.table({"exchange": [exchange] * len(rows), "symbol": [s for s, _ in rows],
                     "sequence_number": pa.array([q for _, q in rows], pa.int64()),
                     "row": pa.array(range(len(rows)), pa.int32())})


def test_seq_1_2_5_is_one_gap_of_2() -> None:
    report = SequenceTracker().check(_batch([("BHP", 1), ("BHP", 2), ("BHP", 5)]), row_column="row")
    assert [(g.symbol, g.expected, g.received, g.size, g.row) for g in report.gaps] == [("BHP", 3, 5, 2, 2)]


def test_streams_are_tracked_separately_across_batches() -> None:
    tracker = SequenceTracker()
    tracker.check(_batch([("A", 1), ("B", 10), ("A", 2), ("B", 11)]), row_column="row")
    report = tracker.check(_batch([("B", 12), ("A", 4), ("A", 5)]), row_column="row")
    assert [(g.symbol, g.expected, g.received) for g in report.gaps] == [("A", 3, 4)]
    assert tracker.last("ASX", "A") == 5 and tracker.last("ASX", "B") == 12


def test_repeat_and_step_back_are_out_of_order_and_do_not_move_last() -> None:
    tracker = SequenceTracker()
    report = tracker.check(_batch([("A", 1), ("A", 2), ("A", 5), ("A", 3), ("A", 4), ("A", 4), ("A", 6)]),
                           row_column="row")
    assert [(g.expected, g.received) for g in report.gaps] == [(3, 5)]
    assert [e.sequence for e in report.late] == [3, 4, 4]
    assert tracker.last("ASX", "A") == 6


def test_rows_without_sequence_number_are_not_checked() -> None:
    report = SequenceTracker().check(_batch([("A", 1), ("A", None), ("A", 2)]), row_column="row")
    assert report.gaps == [] and report.checked == 2


def test_lru_evicts_least_recently_used_stream_at_capacity_and_counts_it() -> None:
    tracker = SequenceTracker(capacity=3)
    tracker.check(_batch([("A", 1), ("B", 1), ("C", 1)]), row_column="row")
    tracker.check(_batch([("A", 2)]), row_column="row")  # A is now most recent; B is oldest
    report = tracker.check(_batch([("D", 1)]), row_column="row")
    assert report.evicted == 1 and tracker.evictions == 1 and len(tracker) == 3
    assert tracker.last("ASX", "B") is None and tracker.last("ASX", "A") == 2


def test_full_default_capacity_of_10000_streams_evicts_beyond_it() -> None:
    tracker = SequenceTracker()
    report = tracker.check(_batch([(f"S{i}", 1) for i in range(10_005)]), row_column="row")
    assert len(tracker) == 10_000 and report.evicted == 5


def test_evicted_or_unseen_stream_is_recovered_so_no_false_and_no_hidden_gap() -> None:
    calls: list[list[tuple[str, str]]] = []

    def recover(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        calls.append(keys)
        return {("ASX", "A"): 7}

    report = SequenceTracker(recover=recover).check(_batch([("A", 8), ("B", 3), ("A", 10)]), row_column="row")
    assert calls == [[("ASX", "A"), ("ASX", "B")]]
    assert [(g.symbol, g.expected, g.received) for g in report.gaps] == [("A", 9, 10)]


def test_seeded_with_every_stream_of_the_table_reads_nothing_more_for_new_streams() -> None:
    calls: list[list[tuple[str, str]]] = []

    def recover(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        calls.append(keys)
        return {}

    tracker = SequenceTracker(recover=recover)
    tracker.seed({("ASX", "A"): 7}, complete=True)
    report = tracker.check(_batch([("A", 9), ("NEW", 1), ("NEW", 2)]), row_column="row")
    assert calls == []  # NEW is not in the table: nothing to read
    assert [(g.symbol, g.expected, g.received) for g in report.gaps] == [("A", 8, 9)]


def test_seed_that_was_cut_short_or_an_eviction_brings_recovery_back() -> None:
    calls: list[list[tuple[str, str]]] = []

    def recover(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        calls.append(keys)
        return {("ASX", "B"): 4}

    partial = SequenceTracker(recover=recover)
    partial.seed({("ASX", "A"): 7}, complete=False)
    report = partial.check(_batch([("B", 6)]), row_column="row")
    assert calls == [[("ASX", "B")]] and [(g.expected, g.received) for g in report.gaps] == [(5, 6)]

    calls.clear()
    small = SequenceTracker(capacity=2, recover=recover)
    small.seed({("ASX", "A"): 1, ("ASX", "C"): 1}, complete=True)
    small.check(_batch([("D", 1)]), row_column="row")  # evicts A: the tracker no longer knows every stream
    assert calls == [] and small.evictions == 1
    small.check(_batch([("B", 5)]), row_column="row")
    assert calls == [[("ASX", "B")]]


def test_seed_keeps_the_higher_of_memory_and_table() -> None:
    tracker = SequenceTracker()
    tracker.check(_batch([("A", 10)]), row_column="row")
    tracker.seed({("ASX", "A"): 8, ("ASX", "B"): 3}, complete=True)
    assert tracker.last("ASX", "A") == 10 and tracker.last("ASX", "B") == 3


def test_last_sequences_come_from_the_table_in_one_aggregate(iceberg_tables) -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from catalog.engine.iceberg import arrow_schema
    from ingestion.engine.sequence import table_last_sequences
    from k2core.duckdb_conn import connect

    table = iceberg_tables["trades"]
    base = datetime(2026, 3, 10, tzinfo=UTC)
    # (exchange, symbol, sequence, minutes after base): OLD traded last an hour before the others
    rows = [("ASX", "BHP", 5, 60), ("ASX", "BHP", 9, 61), ("ASX", "BHP", 7, 62), ("ASX", "CBA", 3, 61),
            ("CHIA", "BHP", 40, 63), ("ASX", "OLD", 12, 0), ("ASX", "NOSEQ", None, 64)]
    schema = arrow_schema("trades")
    data = pa.Table.from_pylist([
        {"symbol": s, "company_id": 1, "exchange": e, "exchange_timestamp": base + timedelta(minutes=m),
         "price": Decimal("1.000000"), "volume": 1, "qualifiers": 0, "venue": "X", "buyer_id": None,
         "ingestion_timestamp": base, "sequence_number": q, "source_partition": 0, "source_offset": i}
        for i, (e, s, q, m) in enumerate(rows)], schema=schema)
    table.append(data)
    con = connect()
    try:
        everything, complete = table_last_sequences(con, table.metadata_location)
        assert complete and everything == {("ASX", "BHP"): 9, ("ASX", "CBA"): 3, ("CHIA", "BHP"): 40, ("ASX", "OLD"): 12}
        some, _ = table_last_sequences(con, table.metadata_location, keys=[("ASX", "BHP"), ("ASX", "ZZZ")])
        assert some == {("ASX", "BHP"): 9}  # CHIA's BHP is another stream
        recent, complete = table_last_sequences(con, table.metadata_location, limit=3)
        assert not complete and ("ASX", "OLD") not in recent and len(recent) == 3
    finally:
        con.close()
