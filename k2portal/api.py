"""The django-ninja API at /api/v1 (OpenAPI docs at /api/v1/docs)."""

from ninja import NinjaAPI

api = NinjaAPI(title="K2 market data API", version="1", urls_namespace="api-v1",
               description="Trades, quotes, OHLCV bars, time travel, saved queries and sequence gaps.")


@api.get("/ping", tags=["meta"], summary="Liveness of the API layer")
def ping(request):  # type: ignore[no-untyped-def]
    return {"ok": True}


from queries.api import install as _install_queries  # noqa: E402 - routers + JSON error mapping

_install_queries(api)
