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
