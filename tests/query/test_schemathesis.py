"""A schemathesis run over the OpenAPI schema of /api/v1 (through WSGI, with a valid API key
and real data behind it) finds no 5xx: every bad input is a 4xx with a JSON message."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings

from k2portal.wsgi import application
from queries import services

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


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
def api_key(query_settings, generated, keep_test_db_connection):  # type: ignore[no-untyped-def]
    services.saved_query_create(slug="bars", name="Bars", sql="SELECT count(*) AS n FROM trades WHERE symbol = $symbol",
                                parameters={"symbol": {"type": "string", "default": "BHP"}})
    return services.api_key_create(name="fuzz", scopes=["market_data:read", "queries:run"],
                                   rate_limit_per_minute=1_000_000)[1]


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=50, deadline=None, database=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, api_key):  # type: ignore[no-untyped-def]
    response = case.call(headers={"X-API-Key": api_key})
    assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: " \
                                       f"{response.text[:500]}"
