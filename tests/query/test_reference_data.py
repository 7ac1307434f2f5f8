"""GET /api/v1/reference_data: the latest reference record per company, now and as of a past
snapshot or instant, filtered by company or symbol, on records that went CSV-shaped → Kafka
(Avro) → the consumer → Iceberg (issue 14)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from catalog.engine import schemas, wire
from queries import services
from queries.models import ApiKey
from tests.consumer.conftest import DictRegistry, create_topic, make_config, produce, run_consumer

pytestmark = pytest.mark.django_db(transaction=True)
UTC = dt.UTC
URL = "/api/v1/reference_data"


def _record(company_id: int, symbol: str, name: str, cap: int | None, updated: str) -> dict:
    return {"company_id": company_id, "symbol": symbol, "company_name": name, "sector": "Materials",
            "market_cap": cap, "last_updated": dt.datetime.fromisoformat(updated)}


def _consume(bootstrap: str, topic: str, registry: DictRegistry, records: list[dict], unique: str,
             catalog_config) -> None:  # type: ignore[no-untyped-def]
    schema_id = registry.register(schemas.subject_name(topic), schemas.schema_text("reference_data"))
    parsed = schemas.parsed_schema("reference_data")
    produce(bootstrap, topic, [(str(r["company_id"]).encode(), wire.encode(schema_id, parsed, r)) for r in records])
    run_consumer(make_config(bootstrap, topic, unique, data_type="reference_data", namespace=catalog_config.namespace,
                             max_messages=len(records)), catalog_config, registry)


def _get(client, key: str, query: str = ""):  # type: ignore[no-untyped-def]
    response = client.get(f"{URL}{query}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.content
    return response.json()


def test_latest_record_per_company_now_and_as_of_a_past_snapshot_or_instant(
        client, query_settings, kafka_bootstrap, catalog_config, unique) -> None:  # type: ignore[no-untyped-def]
    key = services.api_key_create(name="ref", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    topic = f"market.equities.reference_data.r{unique}"
    create_topic(kafka_bootstrap, topic)
    registry = DictRegistry()
    _consume(kafka_bootstrap, topic, registry, [
        _record(1001, "BHP", "BHP Billiton Limited", 121413600000, "2014-03-02T18:00:00+11:00"),
        _record(1002, "RIO", "Rio Tinto Limited", 27883500000, "2014-03-02T18:00:00+11:00"),
    ], unique, catalog_config)
    first = _get(client, key)
    time.sleep(0.05)
    between = dt.datetime.now(UTC)
    time.sleep(0.05)
    _consume(kafka_bootstrap, topic, registry, [
        _record(1001, "BHP", "BHP Group Limited", 130000000000, "2014-03-03T18:00:00+11:00"),  # newer
        _record(1003, "CBA", "Commonwealth Bank of Australia", None, "2014-03-02T18:00:00+11:00"),
        _record(1002, "RIO", "Rio Tinto (stale)", 1, "2014-02-01T00:00:00Z"),  # arrives late, is older
    ], unique, catalog_config)

    now = _get(client, key)
    assert [(r["company_id"], r["symbol"], r["company_name"], r["market_cap"]) for r in now["data"]] == [
        (1001, "BHP", "BHP Group Limited", 130000000000),
        (1002, "RIO", "Rio Tinto Limited", 27883500000),
        (1003, "CBA", "Commonwealth Bank of Australia", None)]
    stamp = now["data"][0]["last_updated"]  # 18:00 Sydney (AEDT) as a UTC instant
    assert stamp.endswith("Z") and dt.datetime.fromisoformat(stamp) == dt.datetime(2014, 3, 3, 7, tzinfo=UTC)
    assert now["meta"]["table"] == "reference_data" and now["meta"]["rows"] == 3
    assert now["meta"]["snapshot_id"] != first["meta"]["snapshot_id"]

    then = [(r["company_id"], r["company_name"]) for r in first["data"]]
    assert then == [(1001, "BHP Billiton Limited"), (1002, "Rio Tinto Limited")]
    by_snapshot = _get(client, key, f"?as_of={first['meta']['snapshot_id']}")
    assert [(r["company_id"], r["company_name"]) for r in by_snapshot["data"]] == then
    by_instant = _get(client, key, f"?as_of={between.isoformat().replace('+00:00', 'Z')}")
    assert [(r["company_id"], r["company_name"]) for r in by_instant["data"]] == then
    assert by_instant["meta"]["snapshot_id"] == first["meta"]["snapshot_id"]

    assert [r["company_id"] for r in _get(client, key, "?symbol=RIO")["data"]] == [1002]
    assert [r["company_id"] for r in _get(client, key, "?company_id=1003&company_id=1001")["data"]] == [1001, 1003]
    assert _get(client, key, "?symbol=XYZ")["data"] == []

    csv = client.get(f"{URL}?format=csv&company_id=1001", headers={"X-API-Key": key})
    assert csv.status_code == 200 and b"BHP Group Limited" in csv.content


def test_bad_parameters_are_clear_errors(client, query_settings) -> None:  # type: ignore[no-untyped-def]
    key = services.api_key_create(name="ref", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    r = client.get(f"{URL}?as_of=yesterday", headers={"X-API-Key": key})
    assert r.status_code == 400 and r.json()["field"] == "as_of"
    r = client.get(f"{URL}?symbol=BAD;DROP", headers={"X-API-Key": key})
    assert r.status_code == 400 and r.json()["field"] == "symbol"
    r = client.get(f"{URL}?company_id=abc", headers={"X-API-Key": key})
    assert r.status_code == 422
    r = client.get(f"{URL}?company_id=99999999999", headers={"X-API-Key": key})
    assert r.status_code == 400 and r.json()["field"] == "company_id"
    assert client.get(URL).status_code == 401


def test_an_empty_table_answers_no_rows(client, query_settings) -> None:  # type: ignore[no-untyped-def]
    key = services.api_key_create(name="ref", scopes=[ApiKey.Scope.MARKET_DATA_READ])[1]
    body = _get(client, key)
    assert body["data"] == [] and body["meta"]["snapshot_id"] is None
