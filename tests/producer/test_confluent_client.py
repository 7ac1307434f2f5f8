"""Outside tools read K2's topics: Confluent's own client and AvroDeserializer against the portal's registry."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from catalog.engine.registry import CachedRegistry, ConfluentRegistry, IncompatibleSchema
from catalog.engine.schemas import schema_text, subject_name
from ingestion.engine.producer import ProducerSettings, produce_csv
from tests.producer.conftest import QUOTE_HEADER, read_all, write_csv


@pytest.mark.django_db(transaction=True)
def test_confluent_avro_deserializer_decodes_what_the_producer_wrote(
        live_server, tmp_path: Path, kafka_bootstrap: str, topics: dict[str, str],  # type: ignore[no-untyped-def]
        producer_settings: ProducerSettings, unique: str) -> None:
    url = f"{live_server.url}/schema-registry"
    from queries import services

    _, raw = services.api_key_create(name="producer", scopes=["schemas:write"])
    rows = [["BHP", "1001", "2014-03-03T10:00:01", "37.79", "300", "37.81", "200"],
            ["RIO", "1002", "2014-03-03T10:00:02", "64.10", "50", "64.12", "75"]]
    csv_path = write_csv(tmp_path / "quotes.csv", QUOTE_HEADER, rows)
    # The producer reaches the registry over HTTP here, exactly as with a Confluent Schema Registry.
    result = produce_csv(csv_path=csv_path, settings=producer_settings, registry=CachedRegistry(ConfluentRegistry(url, basic_auth=f"k2:{raw}")),
                         data_type="quotes", exchange="asx", asset_class=topics["quotes"].split(".")[1])
    assert result.acked == 2
    messages = read_all(kafka_bootstrap, topics["quotes"], expected=2, group=f"g-{unique}")
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}))
    decoded = sorted((deserializer(m.value(), SerializationContext(m.topic(), MessageField.VALUE)) for m in messages),
                     key=lambda r: r["symbol"])
    assert [(r["symbol"], r["bid_price"], r["ask_price"], r["sequence_number"]) for r in decoded] == [
        ("BHP", Decimal("37.790000"), Decimal("37.810000"), 1), ("RIO", Decimal("64.100000"), Decimal("64.120000"), 1)]
    assert decoded[0]["exchange_timestamp"].isoformat() == "2014-03-02T23:00:01+00:00"


@pytest.mark.django_db(transaction=True)
def test_schema_registry_client_calls_work_against_the_portal(live_server, unique: str) -> None:  # type: ignore[no-untyped-def]
    from queries import services

    _, raw = services.api_key_create(name="tool", scopes=["schemas:write"])
    client = SchemaRegistryClient({"url": f"{live_server.url}/schema-registry", "basic.auth.user.info": f"k2:{raw}"})
    subject = subject_name(f"market.t{unique}.trades.asx")
    schema_id = client.register_schema(subject, Schema(schema_text("trades"), "AVRO"))
    assert client.get_schema(schema_id).schema_str == schema_text("trades")
    latest = client.get_latest_version(subject)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, subject)
    assert client.get_version(subject, 1).schema_id == schema_id
    assert subject in client.get_subjects()
    assert client.get_versions(subject) == [1]
    assert client.lookup_schema(subject, Schema(schema_text("trades"), "AVRO")).version == 1
    evolved = json.loads(schema_text("trades"))
    evolved["fields"].append({"name": "note", "type": "string"})
    assert client.test_compatibility(subject, Schema(json.dumps(evolved), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, Schema(json.dumps(evolved), "AVRO"))
    assert caught.value.http_status_code == 409
    with pytest.raises(SchemaRegistryError) as missing:
        client.get_latest_version(f"{subject}-missing")
    assert missing.value.error_code == 40401
    # K2's own registry interface over HTTP maps 409 to IncompatibleSchema.
    with pytest.raises(IncompatibleSchema):
        ConfluentRegistry(f"{live_server.url}/schema-registry", basic_auth=f"k2:{raw}").register(subject,
                                                                                                json.dumps(evolved))
    # Without credentials the registry refuses the write with Confluent's 401 body.
    with pytest.raises(SchemaRegistryError) as refused:
        SchemaRegistryClient({"url": f"{live_server.url}/schema-registry"}).register_schema(
            f"{subject}-other", Schema(schema_text("trades"), "AVRO"))
    assert (refused.value.http_status_code, refused.value.error_code) == (401, 401)
