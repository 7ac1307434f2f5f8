"""The API's hot path (issue 15 item 3): key rows and the exchange registry kept in the process,
one Redis round trip per request, the fast JSON encoding; and that none of it lets a revoked key
or a deactivated owner through, nor changes a response."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import pyarrow as pa
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from queries import caches, services
from queries.engine import formats
from queries.models import ApiKey

pytestmark = pytest.mark.django_db
READ = ApiKey.Scope.MARKET_DATA_READ
OHLCV = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h"


def get(client, key):  # type: ignore[no-untyped-def]
    return client.get(OHLCV, headers={"X-API-Key": key})


def test_a_cached_key_and_exchange_registry_cost_no_postgres_query(client, query_settings, generated,  # type: ignore[no-untyped-def]
                                                                    django_assert_num_queries):
    _, raw = services.api_key_create(name="hot", scopes=[READ])
    assert get(client, raw).status_code == 200  # reads the key row, the exchanges, notes last use
    with django_assert_num_queries(0):
        assert get(client, raw).status_code == 200


def test_a_key_revoked_by_another_process_is_refused_at_the_next_request(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    """Another process's revocation reaches this one through the generation number in Redis, which
    the rate-limit round trip reads: no waiting for the cached row to expire."""
    key, raw = services.api_key_create(name="elsewhere", scopes=[READ])
    assert get(client, raw).status_code == 200
    assert caches.rows[key.prefix][0].revoked_at is None  # the row is cached here
    # What the other process does: write the row (no signal reaches this process) and, once
    # committed, increment the generation (caches.keys_changed's on_commit hook).
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    caches.redis_client(settings.K2.redis_url).incr(caches.KEY_GENERATION)
    refused = get(client, raw)
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]


def test_a_revocation_in_this_process_drops_the_cached_row_at_once(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    key, raw = services.api_key_create(name="here", scopes=[READ])
    assert get(client, raw).status_code == 200
    services.api_key_revoke(api_key=ApiKey.objects.get(pk=key.pk))
    assert key.prefix not in caches.rows
    assert get(client, raw).status_code == 401


def test_a_change_nothing_announced_takes_effect_once_the_row_is_older_than_the_bound(client, query_settings,  # type: ignore[no-untyped-def]
                                                                                       generated) -> None:
    """A queryset update (no signal, no generation change) is seen when the cached row expires:
    never later than KEY_CACHE_SECONDS."""
    owner = get_user_model().objects.create_user("leaver-hot", password="x" * 12)
    key, raw = services.api_key_create(name="quiet", scopes=[READ], owner=owner)
    assert get(client, raw).status_code == 200
    get_user_model().objects.filter(pk=owner.pk).update(is_active=False)
    assert get(client, raw).status_code == 200  # still within the bound: the cached row answers
    row, _, generation = caches.rows[key.prefix]
    caches.rows[key.prefix] = (row, time.monotonic() - caches.KEY_CACHE_SECONDS - 0.01, generation)
    refused = get(client, raw)
    assert refused.status_code == 401 and "owner is deactivated" in refused.json()["message"]


def test_a_cached_key_still_needs_the_right_secret_and_scope(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    key, raw = services.api_key_create(name="scoped", scopes=[ApiKey.Scope.QUERIES_RUN])
    assert client.get("/api/v1/queries", headers={"X-API-Key": raw}).status_code == 200  # cached now
    assert key.prefix in caches.rows
    assert get(client, raw).status_code == 403
    assert get(client, f"k2_{key.prefix}_{'x' * 32}").status_code == 401


def test_the_rate_limit_still_counts_every_request_of_a_cached_key(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    _, raw = services.api_key_create(name="limited", scopes=[READ], rate_limit_per_minute=2)
    while True:  # the window is the wall-clock minute: redo if the burst straddled a boundary
        minute = int(time.time() // 60)
        codes = [get(client, raw).status_code for _ in range(3)]
        if int(time.time() // 60) == minute:
            break
        _, raw = services.api_key_create(name="limited", scopes=[READ], rate_limit_per_minute=2)
    assert codes == [200, 200, 429]


def test_a_new_exchange_is_known_at_once_in_this_process(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    from catalog.models import Exchange

    _, raw = services.api_key_create(name="ex", scopes=[READ])
    url = "/api/v1/ohlcv?symbol=BHP&date=2024-03-12&interval=1h&exchange=xhot"
    assert client.get(url, headers={"X-API-Key": raw}).status_code == 400  # the registry is cached now
    Exchange.objects.create(code="xhot", name="Hot path exchange", timezone="UTC")
    assert client.get(url, headers={"X-API-Key": raw}).status_code == 200


# --- the JSON encoding ---------------------------------------------------------------------------


def test_instants_are_encoded_exactly_as_before_in_and_out_of_the_fast_range() -> None:
    """Expected texts as the encoder before issue 15 wrote them (Arrow's strftime for every value)."""
    utc = dt.UTC
    values = [dt.datetime(2024, 3, 12, 0, 0, 1, 5, tzinfo=utc), None, dt.datetime(1, 1, 1, tzinfo=utc),
              dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc)]
    table = pa.table({"at": pa.array(values, pa.timestamp("us", tz="UTC")),
                      "local": pa.array([v.replace(tzinfo=None) if v else None for v in values], pa.timestamp("us")),
                      "sec": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7)] * 4, pa.timestamp("s", tz="UTC")),
                      "secn": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7)] * 4, pa.timestamp("s")),
                      "ns": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7)] * 4, pa.timestamp("ns")),
                      "syd": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7, tzinfo=utc)] * 4,
                                      pa.timestamp("ms", tz="Australia/Sydney")),
                      "infinite": pa.array([2**63 - 1, -(2**63 - 1), 0, None], pa.int64()).cast(pa.timestamp("us")),
                      "beyond": pa.array([400_000_000_000_000_000, 0, 0, 0], pa.int64()).cast(pa.timestamp("us"))})
    out = json.loads(formats.encode(table, "json", {"rows": 4}))["data"]
    assert [r["at"] for r in out] == ["2024-03-12T00:00:01.000005Z", None, "0001-01-01T00:00:00.000000Z",
                                      "9999-12-31T23:59:59.999999Z"]
    assert [r["local"] for r in out] == ["2024-03-12T00:00:01.000005", None, "0001-01-01T00:00:00.000000",
                                         "9999-12-31T23:59:59.999999"]
    # instants with a zone: in UTC, in microseconds (the API's JSON has always written them so)
    assert (out[0]["sec"], out[0]["syd"]) == ("2024-03-12T05:06:07.000000Z", "2024-03-12T05:06:07.000000Z")
    assert (out[0]["secn"], out[0]["ns"]) == ("2024-03-12T05:06:07", "2024-03-12T05:06:07.000000000")
    assert [r["infinite"] for r in out] == ["infinity", "-infinity", "1970-01-01T00:00:00.000000", None]
    assert [r["beyond"] for r in out[:2]] == ["14645-06-30T15:06:40.000000", "1970-01-01T00:00:00.000000"]


def test_decimals_stay_exact_strings_and_big_integers_fall_back_to_the_standard_encoder() -> None:
    table = pa.table({"price": pa.array([Decimal("45.120000"), Decimal("-0.000001")], pa.decimal128(18, 6))})
    body = formats.encode(table, "json", {"rows": 2, "snapshot_id": 2**70})
    assert body == b'{"data":[{"price":"45.120000"},{"price":"-0.000001"}],"meta":{"rows":2,"snapshot_id":1180591620717411303424}}'


# --- the column-wise JSON writer (formats.encode_json / json_rows_fast) ----------------------------

META = {"table": "trades", "snapshot_id": 2**63 - 1, "rows": 3, "next_cursor": None, "truncated": False}


def general(table: pa.Table, meta: dict) -> bytes:  # type: ignore[type-arg]
    """The JSON encoding before the column-wise writer: a Python dict per row, then orjson (the
    standard library for what orjson refuses)."""
    return formats.dumps({"data": formats.rows(table), "meta": formats.json_value(meta)})


def written_column_wise(table: pa.Table, meta: dict = META) -> bytes:  # type: ignore[type-arg]
    """The API's bytes for `table`, checked to come from the column-wise writer and to be exactly
    the general encoder's."""
    assert formats.json_rows_fast(table) is not None, "the column-wise writer should take this table"
    body = formats.encode(table, "json", meta)
    assert body == general(table, meta)
    return body


def written_the_general_way(table: pa.Table, meta: dict = META) -> bytes:  # type: ignore[type-arg]
    assert formats.json_rows_fast(table) is None, "the column-wise writer should leave this table alone"
    body = formats.encode(table, "json", meta)
    assert body == general(table, meta)
    return body


def duckdb_table(sql: str) -> pa.Table:
    from k2core.duckdb_conn import connect
    from queries.engine.connection import EngineConfig

    return connect(EngineConfig()).execute(sql).to_arrow_table()


def test_real_ohlcv_trades_and_reference_results_are_written_column_wise_byte_for_byte(  # type: ignore[no-untyped-def]
        engine, generated, iceberg_tables) -> None:
    from catalog.engine.exchanges import ASX
    from catalog.engine.iceberg import arrow_schema
    from queries.engine.timeutil import make_range

    day = make_range(date=dt.date(2024, 3, 12), exchange=ASX)
    days = make_range(date=dt.date(2024, 3, 11), end_date=dt.date(2024, 3, 13), exchange=ASX)
    results = [engine.ohlcv(interval="1m", rng=day, symbols=["BHP"], exchange=ASX),  # the API's one symbol-day
               engine.ohlcv(interval="5m", rng=days, exchange=ASX), engine.ohlcv(interval="1d", rng=days),
               engine.ticks("trades", rng=days, symbols=["BHP", "CBA"], limit=500, order="desc", exchange=ASX),
               engine.ticks("trades", rng=make_range(date=dt.date(2024, 3, 9)), limit=10)]  # a Saturday: no rows
    stamp = dt.datetime(2014, 3, 2, 7, tzinfo=dt.UTC)
    iceberg_tables["reference_data"].append(pa.Table.from_pylist([
        {"company_id": 1, "symbol": "BHP", "company_name": 'BHP "Big Australian" \\ Ltd', "sector": None,
         "market_cap": 121413600000, "last_updated": stamp, "source_partition": 0, "source_offset": 0},
        {"company_id": 2, "symbol": "NEC", "company_name": "Nestlé 東京 😀 </script>\n\ttab", "sector": "Media",
         "market_cap": None, "last_updated": stamp, "source_partition": 0, "source_offset": 1},
    ], schema=arrow_schema("reference_data")))
    results.append(engine.reference_data())
    assert results[0].table.num_rows > 200 and results[3].table.num_rows == 500
    assert results[-2].table.num_rows == 0 and results[-1].table.num_rows == 2
    for result in results:
        meta = {"table": result.data_type, "snapshot_id": result.snapshot_id, "rows": result.table.num_rows,
                "next_cursor": result.next_cursor, "truncated": result.truncated}
        written_column_wise(result.table, meta)


def test_the_api_answers_with_the_general_encoders_bytes(client, query_settings, generated) -> None:  # type: ignore[no-untyped-def]
    from queries import selectors
    from queries.engine.timeutil import make_range

    _, raw = services.api_key_create(name="json", scopes=[READ])
    response = client.get("/api/v1/ohlcv?symbol=BHP&symbol=CBA&date=2024-03-12&interval=1m", headers={"X-API-Key": raw})
    assert response.status_code == 200
    asx = selectors.exchange("ASX")
    result = selectors.get_engine().ohlcv(interval="1m", rng=make_range(date=dt.date(2024, 3, 12), exchange=asx),
                                          symbols=["BHP", "CBA"], exchange=asx)
    assert result.table.num_rows > 300
    assert response.content == written_column_wise(result.table, response.json()["meta"])


def test_strings_are_escaped_exactly_as_orjson_escapes_them() -> None:
    table = duckdb_table("""
        SELECT * FROM (VALUES
            ('say "hi"', 'back\\slash \\"', '</script><script>', 'é東京😀 ' || chr(8232) || chr(65279), ''),
            (NULL, chr(0) || chr(8) || chr(9) || chr(10) || chr(12) || chr(13) || chr(27) || chr(31) || chr(127),
             'a,b:"c"}{', '\\u0041 \\n', NULL),
            ('plain', '"', '\\', ']', ',')
        ) t(quoted, escapes, html, unicode, empty)""")
    assert table.column("escapes").to_pylist()[1][0] == "\x00"  # the control characters reached Arrow
    body = written_column_wise(table)
    assert b'"escapes":"\\u0000\\b\\t\\n\\f\\r\\u001b\\u001f\x7f"' in body and "é東京😀".encode() in body
    # large strings, several chunks, a slice that starts inside a chunk
    large = pa.table({"s": pa.chunked_array([['a"\\'], ["\x01", None, "ü"]], pa.large_string()), "n": [1, 2, 3, 4]})
    written_column_wise(large)
    written_column_wise(pa.concat_tables([table, table]).slice(1, 4))


def test_every_character_is_written_as_orjson_writes_it() -> None:
    """Every code point in one column, and each ASCII character in a column of its own (a column
    with nothing to escape is copied as it is, so each must be seen alone)."""
    import orjson

    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    table = pa.table({"c": characters})
    assert formats.json_rows_fast(table) == orjson.dumps(table.to_pylist())
    ascii_table = pa.table({f"c{c}": [chr(c), f"x{chr(c)}y"] for c in range(0x80)})
    written_column_wise(ascii_table)
    for c in range(0x80):
        alone = pa.table({"c": [chr(c) * 2, None]})
        assert formats.json_rows_fast(alone) == orjson.dumps(alone.to_pylist()), hex(c)


def test_numbers_decimals_booleans_and_nulls_are_written_column_wise_byte_for_byte() -> None:
    table = duckdb_table("""
        SELECT * FROM (VALUES
            (9223372036854775807::BIGINT, 18446744073709551615::UBIGINT, (-128)::TINYINT, true, -0.0::DOUBLE,
             1e308::DOUBLE, 0.1::REAL, 12345678901234567890.123456789012345678::DECIMAL(38, 18), -45.120000::DECIMAL(18, 6),
             170141183460469231731687303715884105727::HUGEINT, NULL::INTEGER, NULL),
            ((-9223372036854775808)::BIGINT, 0::UBIGINT, NULL, false, 5e-324::DOUBLE,
             -1.7976931348623157e308::DOUBLE, NULL, -99999999999999999999.999999999999999999::DECIMAL(38, 18),
             -0.000001::DECIMAL(18, 6), (-170141183460469231731687303715884105727)::HUGEINT, NULL::INTEGER, NULL),
            (0::BIGINT, 1::UBIGINT, 127::TINYINT, NULL, 1e16::DOUBLE, 1e-7::DOUBLE, 3.4e38::REAL, NULL, 0::DECIMAL(18, 6),
             NULL, NULL::INTEGER, NULL)
        ) t(big, unsigned, tiny, flag, small_float, large_float, single, wide, money, huge, nothing, untyped)""")
    assert table.schema.field("huge").type == pa.decimal128(38, 0)  # DuckDB hands HUGEINT over as a decimal
    body = written_column_wise(table)
    assert b'"big":-9223372036854775808' in body and b'"unsigned":18446744073709551615' in body
    assert b'"small_float":-0.0' in body and b'"huge":"170141183460469231731687303715884105727"' in body
    assert b'"money":"-0.000001"' in body and b'"flag":null' in body and b'"nothing":null,"untyped":null}' in body
    for kind in (pa.int8(), pa.uint16(), pa.int32(), pa.float32(), pa.float64(), pa.bool_(), pa.string(), pa.null()):
        written_column_wise(pa.table({"a": pa.nulls(2, kind), "b": pa.nulls(2, kind)}))  # nothing but nulls
    written_column_wise(duckdb_table("SELECT * FROM (VALUES (1, 'x', 1.5::DECIMAL(9, 2))) t(a, b, c) WHERE false"))


def test_instants_and_dates_are_written_column_wise_byte_for_byte() -> None:
    table = duckdb_table("""
        SELECT * FROM (VALUES
            (TIMESTAMPTZ '2024-03-12 00:00:00.000001+00', TIMESTAMP_NS '2024-01-01 00:00:00.123456789',
             TIMESTAMP_S '0001-01-01 00:00:00', TIMESTAMP_MS '9999-12-31 23:59:59.999', 'infinity'::TIMESTAMP,
             DATE '2024-02-29', 'infinity'::DATE),
            (TIMESTAMPTZ '1970-01-01 00:00:00+00', NULL, TIMESTAMP_S '1969-12-31 23:59:59', NULL, '-infinity'::TIMESTAMP,
             DATE '0001-01-01', '-infinity'::DATE),
            (NULL, TIMESTAMP_NS '2262-04-11 23:47:16.854775806', NULL, TIMESTAMP_MS '2000-01-01 00:00:00', NULL,
             NULL, DATE '9999-12-31')
        ) t(instant, ns, sec, ms, infinite, day, infinite_day)""")
    written_column_wise(table)
    utc = dt.UTC
    zoned = pa.table({"syd": pa.array([dt.datetime(2024, 3, 12, 5, 6, 7, tzinfo=utc), None],
                                      pa.timestamp("ms", tz="Australia/Sydney")),
                      "beyond": pa.array([400_000_000_000_000_000, 0], pa.int64()).cast(pa.timestamp("us")),
                      "early": pa.array([dt.datetime(1, 1, 1, tzinfo=utc)] * 2, pa.timestamp("us", tz="UTC"))})
    written_column_wise(zoned)


def test_what_the_column_wise_writer_cannot_write_goes_the_general_way() -> None:
    nested = duckdb_table("SELECT [1, 2] AS l, {'a': 'x\"y'} AS st, 1 AS n UNION ALL SELECT NULL, NULL, 2")
    for name in ("l", "st"):
        written_the_general_way(nested.select([name, "n"]))
    for values in ([1.5, float("nan")], [float("inf"), 1.0], [None, float("-inf")]):
        written_the_general_way(pa.table({"f": pa.array(values, pa.float64()), "s": ["é", "x"]}))
    others = duckdb_table("SELECT INTERVAL 1 DAY AS iv, TIME '12:00:00' AS tm, 'ab'::BLOB AS bin, 'x' AS s")
    for name in ("iv", "tm", "bin"):
        written_the_general_way(others.select([name, "s"]))
    written_the_general_way(pa.table([pa.array([1, 2]), pa.array(["a", "b"])], names=["same", "same"]))
    written_the_general_way(pa.table({"d": pa.array(["x", "y"]).dictionary_encode()}))
    not_utf8 = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"),
                                                       pa.py_buffer(b"\xff\xfe")])
    assert formats.json_rows_fast(pa.table({"s": not_utf8})) is None


def test_a_meta_only_the_standard_library_can_write_sends_the_whole_document_the_general_way() -> None:
    table = pa.table({"name": ["Nestlé", None], "n": [1, 2]})
    assert formats.json_rows_fast(table) is not None  # the rows alone would be written column-wise
    meta = {"rows": 2, "snapshot_id": 2**70}
    body = formats.encode(table, "json", meta)
    assert body == general(table, meta)
    assert body == b'{"data":[{"name":"Nestl\\u00e9","n":1},{"name":null,"n":2}],"meta":{"rows":2,"snapshot_id":1180591620717411303424}}'
