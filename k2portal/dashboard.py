"""The admin's first page: the platform at a glance (issue 13, item 4).

Consumers with state, rows/s and lag; open gaps; each Iceberg table's last snapshot; sparklines
of lag and rows/s over the last hour (Redis samples written at each heartbeat); a candlestick
chart of one symbol and day in exchange time with volume and its sequence gaps marked; a gap
timeline of the day. Each part that depends on a service says so when that service is down
(the page itself never fails). Charts: Apache ECharts served from static/vendor (no CDN).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from django.contrib import admin
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from ingestion import admin_display as show
from k2core.logging import get_logger

log = get_logger(__name__, component="dashboard")
INTERVALS = ("1m", "5m", "15m", "1h")
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,31}$")
GAP_CANDIDATES = 2000


def _problem(what: str, exc: BaseException) -> str:
    log.warning("dashboard_part_unavailable", part=what, error=f"{type(exc).__name__}: {exc}")
    return f"{what} unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"


def consumers_part() -> dict[str, Any]:
    from ingestion import samples
    from ingestion.models import Consumer, SequenceGap

    rows = list(Consumer.objects.select_related("topic").order_by("name"))
    consumers = [{
        "name": c.name, "status": c.status, "url": reverse("admin:ingestion_consumer_change", args=[c.pk]),
        "rate": show.number((c.stats or {}).get("rate"), 1) if c.status == Consumer.Status.RUNNING else show.DASH,  # msgs/s
        "lag": show.number((c.stats or {}).get("lag")), "messages": show.number((c.stats or {}).get("messages")),
        "heartbeat": show.ago(c.heartbeat_at)} for c in rows]
    part: dict[str, Any] = {
        "consumers": consumers,
        "running": sum(c.status == Consumer.Status.RUNNING for c in rows),
        "failed": sum(c.status == Consumer.Status.FAILED for c in rows),
        "open_gaps": SequenceGap.objects.filter(state=SequenceGap.State.OPEN).count(),
        "open_gaps_url": reverse("admin:ingestion_sequencegap_changelist") + "?state__exact=open",
        "sparks": [], "sparks_error": "",
    }
    try:
        by_id = samples.series(consumer_ids=[c.pk for c in rows])
        part["sparks"] = [{"name": c.name, "lag": [[int(s["t"] * 1000), s.get("lag")] for s in by_id.get(c.pk, [])],
                           "rate": rows_per_second(by_id.get(c.pk, []))} for c in rows]
    except Exception as exc:  # noqa: BLE001 - Redis down: the rest of the page still shows
        part["sparks_error"] = _problem("lag and rows/s history (Redis)", exc)
    return part


def rows_per_second(points: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows written per second between consecutive samples ([t_ms, rows/s]); across a restart
    (the counter starts again) the sample's own messages/s is used."""
    out: list[list[Any]] = []
    for before, after in zip(points, points[1:], strict=False):
        span = after["t"] - before["t"]
        if after.get("rows") is not None and before.get("rows") is not None and span > 0 and after["rows"] >= before["rows"]:
            out.append([int(after["t"] * 1000), round((after["rows"] - before["rows"]) / span, 1)])
        else:
            out.append([int(after["t"] * 1000), after.get("rate")])
    return out


def tables_part() -> dict[str, Any]:
    from catalog.admin_tables import table_summaries
    from catalog.selectors import get_catalog
    from queries.selectors import namespace

    try:
        tables = table_summaries(catalog=get_catalog(), namespace=namespace())
        return {"tables": [{**dataclasses.asdict(t), "rows_text": show.number(t.rows), "committed_ago": show.ago(t.committed_at)}
                           for t in tables], "tables_error": ""}
    except Exception as exc:  # noqa: BLE001 - the catalog database is unreachable: say so
        return {"tables": [], "tables_error": _problem("the Iceberg catalog is unreachable: last snapshots are", exc)}


def _default_symbol_day(engine: Any) -> tuple[str, dt.date] | None:
    """The symbol with most trades on the latest trading day in the table (cached 5 minutes)."""
    from queries.engine.market import scan_expr
    from queries.selectors import namespace

    key = f"k2:dashboard:default:{namespace()}"
    hit = cache.get(key)
    if hit:
        return hit[0], dt.date.fromisoformat(hit[1])
    resolved = engine.source.resolve("trades", None)
    if resolved.snapshot_id is None:
        return None
    rows = engine._arrow(f"""
        WITH d AS (SELECT CAST(timezone('Australia/Sydney', max(exchange_timestamp)) AS DATE) AS day
                   FROM {scan_expr(resolved)})
        SELECT symbol, (SELECT day FROM d) AS day, count(*) AS n FROM {scan_expr(resolved)}
        WHERE CAST(timezone('Australia/Sydney', exchange_timestamp) AS DATE) = (SELECT day FROM d)
        GROUP BY symbol ORDER BY n DESC, symbol LIMIT 1""").to_pylist()
    if not rows:
        return None
    cache.set(key, (rows[0]["symbol"], rows[0]["day"].isoformat()), 300)
    return rows[0]["symbol"], rows[0]["day"]


def market_part(request: HttpRequest) -> dict[str, Any]:
    from ingestion.models import SequenceGap
    from queries import dashboard
    from queries.selectors import get_engine

    part: dict[str, Any] = {"intervals": INTERVALS, "market_error": "", "candles": None, "gap_timeline": None}
    interval = request.GET.get("interval") if request.GET.get("interval") in INTERVALS else "5m"
    symbol = (request.GET.get("symbol") or "").strip().upper()
    part.update(interval=interval, symbol=symbol, day=request.GET.get("day", ""))
    if symbol and not SYMBOL_RE.match(symbol):
        part["market_error"] = f"symbol {symbol!r} is not a valid symbol (letters, digits, . _ -)"
        return part
    try:
        day = dt.date.fromisoformat(request.GET["day"]) if request.GET.get("day") else None
    except ValueError:
        part["market_error"] = f"day {request.GET['day']!r} is not a date (YYYY-MM-DD, exchange-local)"
        return part
    try:
        engine = get_engine()
        if not symbol or day is None:
            default = _default_symbol_day(engine)
            if default is None:
                part["market_error"] = "no trades in the table yet: load data (`manage.py load_sample`) to see charts"
                return part
            symbol, day = symbol or default[0], day or default[1]
        part.update(symbol=symbol, day=day.isoformat())
        candidates = list(SequenceGap.objects.filter(exchange__iexact="asx").order_by("-detected_at").values(
            "symbol", "data_type", "partition", "offset", "expected_sequence", "received_sequence", "gap_size",
            "state")[:GAP_CANDIDATES])
        placed: list[dict[str, Any]] = []
        for data_type in ("trades", "quotes"):
            chosen = [g for g in candidates if g["data_type"] == data_type]
            if chosen:
                placed += dashboard.gap_times(engine=engine, data_type=data_type, day=day, gaps=chosen)
        chart = dashboard.candles(engine=engine, symbol=symbol, day=day, interval=interval)
        chart["gaps"] = [g for g in placed if g["symbol"] == symbol]
        part["candles"] = chart
        times = [b[0] for b in chart["bars"]] + [g["t"] for g in placed]
        part["gap_timeline"] = {"day": day.isoformat(), "zone": chart["zone"], "zone_abbr": chart["zone_abbr"],
                                "gaps": placed, "start": min(times, default=None), "end": max(times, default=None)}
    except Exception as exc:  # noqa: BLE001 - catalog or warehouse unreachable: say so, keep the page
        part["market_error"] = _problem("market charts are", exc)
    return part


def dashboard_index(request: HttpRequest) -> HttpResponse:
    """The admin index with the dashboard above the list of models."""
    context: dict[str, Any] = {"k2_dashboard": True}
    context.update(consumers_part())
    context.update(tables_part())
    context.update(market_part(request))
    return admin.site.index(request, extra_context=context)
