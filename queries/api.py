"""The query API routers (django-ninja, mounted at /api/v1 by `install`).

Thin: validate the request, call the engine or a service, encode the result. Errors are
mapped to JSON responses in one place (`install`): 400 bad parameters or SQL, 401 no or
bad key, 403 missing scope, 404, 422 validation, 429 rate limit, 504 timeout.
Authentication (PD-002): an API key in the `X-API-Key` header with the scope the endpoint
needs, or a staff session in the browser.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Body, NinjaAPI, Query, Router, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader
from ninja.utils import check_csrf
from pydantic import BeforeValidator, ConfigDict, Field

from k2core import metrics
from k2core.datatypes import DATA_TYPES
from k2core.errors import ApplicationError, Unauthenticated
from queries import selectors, services
from queries.api_schemas import DOC, ERRORS, OhlcvOut, RunOut, SavedQueriesOut, SavedQueryDetailOut, SnapshotsOut, TablesOut, TradesOut
from queries.engine import formats
from queries.engine.errors import BadQuery, QueryError
from queries.engine.market import QueryResult
from queries.engine.source import snapshot_infos
from queries.engine.timeutil import make_range
from queries.models import ApiKey


def _iso_only(value: Any) -> Any:
    """Dates and instants in ISO 8601 only: pydantic would read a number as a Unix time."""
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\s*[-+]?[\d.eE+-]+\s*", value)
                                           and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip())):
        raise ValueError("expected an ISO 8601 date or instant (e.g. 2024-03-11 or 2024-03-11T05:00:00Z), not a number")
    return value


Instant = Annotated[dt.datetime, BeforeValidator(_iso_only)]
Day = Annotated[dt.date, BeforeValidator(_iso_only)]
Format = Literal["json", "csv", "parquet", "arrow"]
Interval = Literal["1m", "5m", "15m", "1h", "1d"]
ERROR_RESPONSES = ERRORS  # documented error body (queries.api_schemas.ErrorOut) for every error status


class MissingCredentials(Unauthenticated):
    """No API key and no staff session (401)."""


ScopeMissing = services.ScopeMissing


SCOPE_PERMISSIONS = {ApiKey.Scope.MARKET_DATA_READ.value: "queries.read_market_data",
                     ApiKey.Scope.QUERIES_RUN.value: "queries.run_savedquery"}


class KeyOrStaff(APIKeyHeader):
    """`X-API-Key: k2_…` with the endpoint's scope, or a logged-in staff user (session) holding
    the permission that stands for the scope (`SCOPE_PERMISSIONS`)."""

    param_name = "X-API-Key"

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = str(getattr(scope, "value", scope))

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if key:
            api_key = services.api_key_admit(raw_key=key, scope=self.scope)
            # who made the request, for the request log line (k2portal.middleware)
            request.k2_api_key_prefix = api_key.prefix  # type: ignore[attr-defined]
            request.k2_api_key_owner = api_key.owner.get_username() if api_key.owner_id else ""  # type: ignore[attr-defined]
            return api_key
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff and user.is_active:
            permission = SCOPE_PERMISSIONS[self.scope]
            if not user.has_perm(permission):
                raise ScopeMissing(f"your user lacks the {permission} permission this endpoint needs "
                                   f"(the session counterpart of the {self.scope!r} scope): ask an admin")
            if request.method not in ("GET", "HEAD", "OPTIONS") and check_csrf(request) is not None:
                raise ScopeMissing("CSRF check failed for a session request: send the csrftoken, or use an API key")
            return user
        raise MissingCredentials("authentication required: send an API key in the X-API-Key header "
                                 "(issued in the admin under API keys), or log in to the admin as staff")


market_auth = KeyOrStaff(ApiKey.Scope.MARKET_DATA_READ)
queries_auth = KeyOrStaff(ApiKey.Scope.QUERIES_RUN)
router = Router(tags=["market data"], auth=market_auth)
queries_router = Router(tags=["saved queries"], auth=queries_auth)


def _symbols(values: list[str] | None) -> list[str] | None:
    out = [s.strip() for v in (values or []) for s in v.split(",") if s.strip()]
    return out or None


def parse_as_of(value: str | None) -> int | dt.datetime | None:
    if value is None or value == "":
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"as_of={value!r} is neither a snapshot id nor an ISO 8601 instant (e.g. 2024-03-11T05:00:00Z)",
                       field="as_of") from None
    if stamp.tzinfo is None:
        raise BadQuery("as_of needs a UTC offset, e.g. 2024-03-11T05:00:00Z", field="as_of")
    return stamp


def _range(*, date: dt.date | None, end_date: dt.date | None, start: dt.datetime | None, end: dt.datetime | None,
           exchange: str) -> Any:
    try:
        return make_range(start=start, end=end, date=date, end_date=end_date, exchange=selectors.exchange(exchange))
    except OverflowError:
        raise BadQuery("the date range is outside the supported calendar (years 1–9999)", field="date") from None


def as_utc(name: str, value: dt.datetime | None) -> dt.datetime | None:
    try:
        return value.astimezone(dt.UTC) if value is not None else None
    except OverflowError:
        raise BadQuery(f"{name} is outside the supported calendar once in UTC (years 1–9999)", field=name) from None


def _format(request: HttpRequest, explicit: str | None) -> str:
    fmt = formats.negotiate(explicit, request.headers.get("Accept"))
    if fmt is None:
        raise BadQuery(f"format={explicit!r} is not supported: use one of {', '.join(formats.FORMATS)}", field="format")
    return fmt


def respond(request: HttpRequest, table: Any, meta: dict[str, Any], fmt: str, body: bytes | None = None) -> HttpResponse:
    body = formats.encode(table, fmt, meta) if body is None else body
    response = HttpResponse(body, content_type=formats.FORMATS[fmt])
    if fmt != "json":
        for key, value in meta.items():
            if value is not None:
                text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
                response[f"X-K2-{key.replace('_', '-').title()}"] = text
        response["Content-Disposition"] = f'attachment; filename="{meta.get("table", "result")}.{fmt}"'
    count_request(request, 200)
    return response


def count_request(request: HttpRequest, status: int) -> None:
    match = getattr(request, "resolver_match", None)
    metrics.API_REQUESTS.labels(endpoint=getattr(match, "route", None) or request.path, status=str(status)).inc()


def _result(request: HttpRequest, result: QueryResult, fmt: str, query_type: str, started: float) -> HttpResponse:
    metrics.QUERY_DURATION.labels(query_type=query_type).observe(time.perf_counter() - started)
    metrics.QUERY_ROWS.labels(query_type=query_type).inc(result.table.num_rows)
    meta = {"table": result.data_type, "snapshot_id": result.snapshot_id, "rows": result.table.num_rows,
            "next_cursor": result.next_cursor, "truncated": result.truncated}
    if result.fresh is not None:
        meta["fresh"] = result.fresh
    return respond(request, result.table, meta, fmt)


def _ticks(request: HttpRequest, data_type: str, *, symbol: list[str] | None, date: dt.date | None,
           end_date: dt.date | None, start: dt.datetime | None, end: dt.datetime | None, limit: int, cursor: str | None,
           as_of: str | None, order: str, exchange: str, format: str | None, fresh: bool = False) -> HttpResponse:
    fmt = _format(request, format)
    started = time.perf_counter()
    result = selectors.get_engine().ticks(
        data_type, rng=_range(date=date, end_date=end_date, start=start, end=end, exchange=exchange),
        symbols=_symbols(symbol), limit=limit, cursor=cursor, as_of=parse_as_of(as_of), order=order,
        exchange=selectors.exchange(exchange), fresh=fresh)
    return _result(request, result, fmt, data_type, started)


TICK_DOC = ("Time range: `date` (exchange-local trading date, optionally to `end_date`) or `start`/`end` "
            "(UTC instants). Pages: pass `next_cursor` back as `cursor`. Prices are decimal strings.")


def _tick_endpoint(data_type: str, summary: str) -> None:
    """`GET /{data_type}`: the one set of tick parameters (`_ticks`), for each tick table."""

    def endpoint(request: HttpRequest, symbol: list[str] | None = Query(None, max_length=500, description=DOC["symbol"]),
                 date: Day | None = Query(None, description=DOC["date"]),
                 end_date: Day | None = Query(None, description=DOC["end_date"]),
                 start: Instant | None = Query(None, description=DOC["start"]),
                 end: Instant | None = Query(None, description=DOC["end"]),
                 limit: int = Query(1000, ge=1, le=100_000, description=DOC["limit"]),
                 cursor: str | None = Query(None, max_length=1000, description=DOC["cursor"]),
                 as_of: str | None = Query(None, max_length=64, description=DOC["as_of"]),
                 order: Literal["asc", "desc"] = Query("asc", description=DOC["order"]),
                 exchange: str = Query("ASX", max_length=16, description=DOC["exchange"]),
                 format: Format | None = Query(None, description=DOC["format"]),
                 fresh: bool = Query(False, description=DOC["fresh"])) -> HttpResponse:
        return _ticks(request, data_type, symbol=symbol, date=date, end_date=end_date, start=start, end=end,
                      limit=limit, cursor=cursor, as_of=as_of, order=order, exchange=exchange, format=format, fresh=fresh)

    endpoint.__name__ = endpoint.__qualname__ = data_type  # the operation id and URL name, as for a def of that name
    router.get(f"/{data_type}", summary=summary, description=TICK_DOC, response={200: TradesOut, **ERRORS})(endpoint)


_tick_endpoint("trades", "Trades of one or more symbols in a time range")
_tick_endpoint("quotes", "Quotes of one or more symbols in a time range")


@router.get("/ohlcv", summary="OHLCV bars (open, high, low, close, volume, VWAP, trade count)",
            description="Bars with no trades are absent. Intraday bars align to UTC clock boundaries; 1d bars are "
                        "exchange-local trading days. Omit `symbol` for all symbols.",
            response={200: OhlcvOut, **ERRORS})
def ohlcv(request: HttpRequest, interval: Interval = Query("1m", description=DOC["interval"]),
          symbol: list[str] | None = Query(None, max_length=500, description=DOC["symbol"]),
          date: Day | None = Query(None, description=DOC["date"]),
          end_date: Day | None = Query(None, description=DOC["end_date"]),
          start: Instant | None = Query(None, description=DOC["start"]),
          end: Instant | None = Query(None, description=DOC["end"]),
          as_of: str | None = Query(None, max_length=64, description=DOC["as_of"]),
          exchange: str = Query("ASX", max_length=16, description=DOC["exchange"]),
          format: Format | None = Query(None, description=DOC["format"]),
          fresh: bool = Query(False, description=DOC["fresh"])) -> HttpResponse:
    fmt = _format(request, format)
    started = time.perf_counter()
    result = selectors.get_engine().ohlcv(
        interval=interval, rng=_range(date=date, end_date=end_date, start=start, end=end, exchange=exchange),
        symbols=_symbols(symbol), as_of=parse_as_of(as_of), exchange=selectors.exchange(exchange), fresh=fresh)
    return _result(request, result, fmt, "ohlcv", started)


@router.get("/reference_data", summary="The latest reference record of each company (optionally as of a snapshot or instant)",
            description="One row per company: its record with the greatest `last_updated`. Filter by `company_id` "
                        "and/or `symbol` (the latest record's symbol). `as_of` = a snapshot id or a UTC instant: the "
                        "table as it stood then. Instants are UTC.",
            response={200: dict, **ERROR_RESPONSES},
            openapi_extra={"responses": {"200": {"description": "OK", "content": {
                media: {"schema": {"type": "object"} if fmt == "json" else {"type": "string", "format": "binary"}}
                for fmt, media in formats.FORMATS.items()}}}})
def reference_data(request: HttpRequest, company_id: list[int] | None = Query(None, max_length=500),
                   symbol: list[str] | None = Query(None, max_length=500),
                   as_of: str | None = Query(None, max_length=64), limit: int = Query(1000, ge=1, le=100_000),
                   format: Format | None = None) -> HttpResponse:
    fmt = _format(request, format)
    started = time.perf_counter()
    result = selectors.get_engine().reference_data(company_ids=company_id, symbols=_symbols(symbol),
                                                   as_of=parse_as_of(as_of), limit=limit)
    return _result(request, result, fmt, "reference_data", started)


@router.get("/snapshots", summary="A table's snapshots (time travel points) with their summaries",
            response={200: SnapshotsOut, **ERRORS})
def snapshots(request: HttpRequest, table: Literal["trades", "quotes", "reference_data"] = "trades") -> HttpResponse:
    snaps = selectors.get_engine().snapshots(table)
    data = [{"snapshot_id": s.snapshot_id, "parent_id": s.parent_id, "committed_at": s.committed_at,
             "operation": s.operation, "summary": s.summary} for s in snaps]
    count_request(request, 200)
    return JsonResponse({"data": formats.json_value(data), "meta": {"table": table, "rows": len(data)}})


@router.get("/tables", summary="The market-data tables and their current snapshots", response={200: TablesOut, **ERRORS})
def tables(request: HttpRequest) -> HttpResponse:
    engine = selectors.get_engine()
    data = []
    for data_type in DATA_TYPES:
        try:
            table = engine.source.load(data_type)  # type: ignore[attr-defined]
        except QueryError:
            data.append({"table": data_type, "exists": False})
            continue
        snaps = snapshot_infos(table)
        current = table.current_snapshot()
        summary = next((s.summary for s in snaps if current and s.snapshot_id == current.snapshot_id), {})
        data.append({"table": data_type, "exists": True, "identifier": ".".join(table.name()),
                     "current_snapshot_id": current.snapshot_id if current else None,
                     "snapshots": len(snaps), "total_records": int(summary.get("total-records", 0)),
                     "total_data_files": int(summary.get("total-data-files", 0)),
                     "last_committed_at": snaps[-1].committed_at if snaps else None})
    count_request(request, 200)
    return JsonResponse({"data": formats.json_value(data)})


def _saved(q: Any, with_sql: bool = False) -> dict[str, Any]:
    out = {"slug": q.slug, "name": q.name, "description": q.description, "parameters": q.parameters,
           "row_limit": q.row_limit, "timeout_seconds": q.timeout_seconds, "updated_at": q.updated_at}
    if with_sql:
        out["sql"] = q.sql
    return out


@queries_router.get("/queries", summary="Saved queries", response={200: SavedQueriesOut, **ERRORS})
def query_list(request: HttpRequest) -> HttpResponse:
    data = [_saved(q) for q in selectors.saved_query_list()]
    count_request(request, 200)
    return JsonResponse({"data": formats.json_value(data)})


@queries_router.get("/queries/{slug}", summary="One saved query with its SQL", response={200: SavedQueryDetailOut, **ERRORS})
def query_detail(request: HttpRequest, slug: str) -> HttpResponse:
    count_request(request, 200)
    return JsonResponse({"data": formats.json_value(_saved(selectors.saved_query_get(slug=slug), with_sql=True))})


class RunIn(Schema):
    """Parameter values go under `params`; any other key is refused (not silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = {}
    as_of: str | None = Field(None, max_length=64)
    limit: int | None = Field(None, ge=1)


@queries_router.post("/queries/{slug}/run", summary="Run a saved query (read-only sandbox)",
                     description="Body: {\"params\": {...}, \"as_of\": snapshot id or UTC instant, \"limit\": n}.",
                     response={200: RunOut, **ERRORS})
def query_run(request: HttpRequest, slug: str, body: RunIn = Body(RunIn()), format: Format | None = None) -> HttpResponse:
    fmt = _format(request, format)
    if body.limit is not None and body.limit < 1:
        raise BadQuery("limit must be at least 1", field="limit")
    saved = selectors.saved_query_get(slug=slug)

    def meta_of(result: Any) -> dict[str, Any]:
        meta = {"query": saved.slug, "rows": result.table.num_rows, "truncated": result.truncated}
        return {**meta, "snapshot_ids": result.snapshot_ids} if fmt == "json" else meta

    result, body_bytes = services.saved_query_answer(
        saved_query=saved, params=body.params, as_of=parse_as_of(body.as_of), row_limit=body.limit,
        runner=services.runner_of(request.auth), encode=lambda r: formats.encode(r.table, fmt, meta_of(r)))
    return respond(request, result.table, meta_of(result), fmt, body=body_bytes)


def _error(api: NinjaAPI, request: HttpRequest, status: int, code: str, message: str, field: str | None = None,
           **extra: Any) -> HttpResponse:
    count_request(request, status)
    payload: dict[str, Any] = {"error": code, "message": message}
    if field:
        payload["field"] = field
    payload.update(extra)
    return api.create_response(request, payload, status=status)


def install(api: NinjaAPI) -> None:
    """Mount the routers and map every error to a JSON response (`map_errors`)."""
    api.add_router("/", router)
    api.add_router("/", queries_router)
    map_errors(api)


def map_errors(api: NinjaAPI) -> None:
    """Every error to a JSON response `{"error", "message", "field"?}` with its status, in this one place."""

    @api.exception_handler(ApplicationError)
    def application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
        """Every application error (k2core.errors): its status, code, message and field; its headers."""
        if isinstance(exc, QueryError):
            match = getattr(request, "resolver_match", None)
            metrics.QUERY_ERRORS.labels(query_type=getattr(match, "url_name", None) or "api", error=exc.code).inc()
        response = _error(api, request, exc.status, exc.code, exc.message, exc.field)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    # django-ninja's and Django's own exceptions, in the same JSON body
    @api.exception_handler(AuthenticationError)
    def unauthenticated(request: HttpRequest, exc: Exception) -> HttpResponse:
        return _error(api, request, 401, "unauthorized", "authentication required: send an API key in the X-API-Key header")

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400 and str(exc).startswith("Cannot parse request body"):
            return _error(api, request, 400, "bad_request", "the request body is not valid JSON: send a JSON object "
                                                            'such as {"params": {"symbol": "BHP"}}', "body")
        return _error(api, request, exc.status_code, "error", str(exc))

    @api.exception_handler(RequestDataTooBig)
    def too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
        return _error(api, request, 413, "payload_too_large",
                      f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes", "body")

    @api.exception_handler(ValidationError)
    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        details = []
        for e in exc.errors:
            problem = e.get("msg", "")
            if e.get("type") == "extra_forbidden":
                problem = 'not a field of the body: parameter values go under "params", e.g. {"params": {"symbol": "BHP"}}'
            details.append({"where": ".".join(str(p) for p in e.get("loc", [])), "problem": problem})
        message = "; ".join(f"{d['where']}: {d['problem']}" for d in details) or "the request is not valid"
        locations = [str(p) for p in (exc.errors[0].get("loc", []) if exc.errors else []) if not isinstance(p, int)]
        field = locations[-1] if locations else None
        return _error(api, request, 422, "validation_error", message, field, details=details)
