"""The django-ninja API at /api/v1 (OpenAPI docs at /api/v1/docs).

The query app owns the API's conventions (authentication, formats, the error mapping) and its
routers (`queries.api.install`). An endpoint that serves another app's rows through them lives
here, in the package that may import both: `/gaps` returns ingestion's sequence gaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Query, Swagger

from ingestion import selectors as ingestion_selectors
from queries import api as queries_api
from queries.api import Instant, as_utc, count_request
from queries.api_schemas import ERRORS, GapsOut
from queries.engine import formats
from queries.engine.errors import BadQuery


class BundledSwagger(Swagger):
    """ninja's Swagger UI page with its bundled assets. ninja serves that page only when the literal
    "ninja" is in INSTALLED_APPS (otherwise its CDN page); K2 installs ninja's app as
    `k2portal.apps.NinjaConfig`, so the bundled template is named here."""

    template_cdn = str(Path(Swagger.template_cdn).with_name("swagger.html"))


api = NinjaAPI(title="K2 market data API", version="1", urls_namespace="api-v1", docs=BundledSwagger(),
               description="Trades, quotes, OHLCV bars, time travel, saved queries and sequence gaps.")


@api.get("/ping", tags=["meta"], summary="Liveness of the API layer")
def ping(request):  # type: ignore[no-untyped-def]
    return {"ok": True}


# On the market-data router (its tags and API-key scope), after its other endpoints; the operation
# id is the one it had when it lived in queries.api.
@queries_api.router.get("/gaps", summary="Sequence gaps (ADR #014) from Postgres, newest first",
                        response={200: GapsOut, **ERRORS}, operation_id="queries_api_gaps",
                        description="`format=csv` answers the filtered page as a CSV attachment (one row per gap, the "
                                    "JSON fields as columns).",
                        openapi_extra={"responses": {"200": {"description": "OK", "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/GapsOut"}},
                            "text/csv": {"schema": {"type": "string"}}}}}})
def gaps(request: HttpRequest, exchange: str | None = Query(None, max_length=16),
         data_type: Literal["trades", "quotes", "reference_data"] | None = None,
         symbol: str | None = Query(None, max_length=32), state: Literal["open", "filled", "acknowledged"] | None = None,
         detected_from: Instant | None = None, detected_to: Instant | None = None,
         limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0, le=10_000_000),
         format: Literal["json", "csv"] | None = None) -> HttpResponse:
    for name, value in (("detected_from", detected_from), ("detected_to", detected_to)):
        if value is not None and value.tzinfo is None:
            raise BadQuery(f"{name} needs a UTC offset, e.g. 2024-03-11T05:00:00Z", field=name)
    for name, text in (("exchange", exchange), ("symbol", symbol)):
        if text is not None and "\x00" in text:
            raise BadQuery(f"{name} contains a NUL character", field=name)
    # Postgres accepts offsets up to ±15:59 only: compare in UTC.
    detected_from = as_utc("detected_from", detected_from)
    detected_to = as_utc("detected_to", detected_to)
    if format == "csv":
        qs = ingestion_selectors.gaps(exchange=exchange, data_type=data_type, symbol=symbol, state=state,
                                      detected_from=detected_from, detected_to=detected_to)[offset:offset + limit]
        response = HttpResponse(ingestion_selectors.gaps_csv(qs), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="sequence_gaps.csv"'
        count_request(request, 200)
        return response
    rows = ingestion_selectors.gap_list(exchange=exchange, data_type=data_type, symbol=symbol, state=state,
                                        detected_from=detected_from, detected_to=detected_to, limit=limit, offset=offset)
    count_request(request, 200)
    return JsonResponse({"data": formats.json_value(rows), "meta": {"rows": len(rows), "offset": offset, "limit": limit}})


queries_api.install(api)  # the query app's routers + the JSON error mapping
