"""Partition pruning (ADR #001 "Predicate pushdown reduces data scanned (verify in query
plans)"; ADR #002 "Query plans show partition pruning", "Queries filtering by single day scan
only that partition"): DuckDB's EXPLAIN ANALYZE reports the files it read."""

from __future__ import annotations

import datetime as dt

from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from catalog.engine.maintenance import files_per_day
from queries.engine.market import files_read
from queries.engine.timeutil import make_range
from tests.query.conftest import UTC


def test_one_utc_day_query_reads_only_that_days_files(engine, generated, trades_table):
    per_day = files_per_day(trades_table.refresh())
    total = sum(per_day.values())
    day = dt.date(2024, 3, 12)
    assert total > per_day[day] > 0
    rng = make_range(start=dt.datetime(2024, 3, 12, tzinfo=UTC), end=dt.datetime(2024, 3, 13, tzinfo=UTC))
    resolved = engine.source.resolve("trades")
    profile = engine.explain_analyze(engine.ohlcv_sql(interval="1m", rng=rng, symbols=["BHP"], resolved=resolved))
    assert files_read(profile) == per_day[day]
    assert "exchange_timestamp>=" in profile.replace(" ", "").replace("\n", "")  # the filter reached the scan
    full = make_range(start=dt.datetime(2024, 3, 1, tzinfo=UTC), end=dt.datetime(2024, 4, 1, tzinfo=UTC))
    assert files_read(engine.explain_analyze(engine.ohlcv_sql(interval="1m", rng=full, symbols=None,
                                                              resolved=resolved))) == total


def test_exchange_date_reads_only_the_two_utc_partitions_it_spans(engine, generated, trades_table):
    per_day = files_per_day(trades_table.refresh())
    rng = make_range(date=dt.date(2024, 3, 12))  # 2024-03-11 13:00Z .. 2024-03-12 13:00Z
    resolved = engine.source.resolve("trades")
    profile = engine.explain_analyze(engine.tick_sql("trades", rng=rng, symbols=["CBA"], limit=10, cursor=None,
                                                     resolved=resolved))
    # Only the files of the two UTC partitions the trading date spans, and of those only the
    # ones whose exchange_timestamp min/max overlap the range (pyiceberg's own planner agrees).
    in_partitions = per_day[dt.date(2024, 3, 11)] + per_day[dt.date(2024, 3, 12)]
    planned = trades_table.scan(row_filter=And(GreaterThanOrEqual("exchange_timestamp", rng.start.isoformat()),
                                               LessThan("exchange_timestamp", rng.end.isoformat()))).plan_files()
    assert files_read(profile) == len(list(planned)) == 2
    assert files_read(profile) <= in_partitions < sum(per_day.values())


def test_partition_directories_are_named_by_exchange_date(generated, trades_table):
    paths = [task.file.file_path for task in trades_table.refresh().scan().plan_files()]
    assert paths and all("/data/exchange_date=2024-03-" in p for p in paths)
