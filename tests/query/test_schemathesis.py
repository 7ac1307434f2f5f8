"""A bounded schemathesis run over the whole OpenAPI schema of /api/v1 (through WSGI, with a
valid API key and real data behind it) with every check schemathesis has: no 5xx, status codes,
content types, headers and bodies as documented, bad data refused, good data accepted."""

from __future__ import annotations

import dataclasses

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from k2portal.wsgi import application
from queries import services

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
# OpenAPI cannot state rules between query parameters (`date` XOR `start`/`end`, `end_date` only
# with `date`; stated in each operation's description), so a schema-valid request may still get the
# documented 400 naming the conflict; every other positive-data status must be as documented.
schema.config.checks.positive_data_acceptance.expected_statuses = [
    *schema.config.checks.positive_data_acceptance.expected_statuses, "400"]
# The API ignores query parameters it does not declare (as most HTTP APIs do): not generated as negative data.
schema.config.generation.update(allow_extra_parameters=False)


@pytest.fixture
def keep_test_db_connection():  # type: ignore[no-untyped-def]
    """Raw WSGI calls close the DB connection at request end (Django's test client turns
    that off); keep it open so the test's transaction survives, as the test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(query_settings, generated, keep_test_db_connection, kafka_bootstrap):  # type: ignore[no-untyped-def]
    # fresh=true is fuzzed too: fresh reads go to this worker's broker
    query_settings.K2 = dataclasses.replace(query_settings.K2, kafka_bootstrap=kafka_bootstrap)
    services.saved_query_create(slug="bars", name="Bars", sql="SELECT count(*) AS n FROM trades WHERE symbol = $symbol",
                                parameters={"symbol": {"type": "string", "default": "BHP"}})
    yield services.api_key_create(name="fuzz", scopes=["market_data:read", "queries:run"],
                                  rate_limit_per_minute=1_000_000)[1]
    from queries.selectors import close_fresh_readers

    close_fresh_readers()


# One pytest item per operation, with its own node id: schemathesis's `schema.parametrize()` gives
# all of them the same node id, and pytest-xdist (`make test` runs `-n 2`) keys items by node id,
# so under xdist only one of the eleven operations ran.
OPERATIONS = {operation.label: operation for operation in (result.ok() for result in schema.get_all_operations())}


@pytest.mark.django_db
@pytest.mark.parametrize("label", list(OPERATIONS))
def test_api_conforms_to_its_schema(label, api_key):  # type: ignore[no-untyped-def]
    operation = OPERATIONS[label]
    cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in schema.config.generation.modes))

    @given(case=cases)
    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def conforms(case):  # type: ignore[no-untyped-def]
        case.call_and_validate(headers={"X-API-Key": api_key})

    conforms()


def test_every_operation_of_the_schema_is_a_test_of_its_own() -> None:
    """The items above cover every operation the API documents, each under a distinct node id."""
    assert len(OPERATIONS) == len(list(schema.get_all_operations())) >= 11
    assert "POST /api/v1/queries/{slug}/run" in OPERATIONS and "GET /api/v1/ohlcv" in OPERATIONS
