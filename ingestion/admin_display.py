"""How the admin shows consumers' figures to a person: numbers with separators, instants as
"3 s ago" with the exact UTC instant on hover, stats as a small table (never raw JSON or epoch
floats), lag per partition. Tolerant of stats written by older consumers (missing keys)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

DASH = "—"


def number(value: Any, digits: int = 0) -> str:
    """1234567 → "1,234,567"; 12.345 with digits=1 → "12.3"; None → "—"."""
    if value is None or value == "":
        return DASH
    try:
        return f"{float(value):,.{digits}f}" if digits else f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def duration(seconds: float | None) -> str:
    """Seconds as "45 s", "12 min 3 s", "2 h 5 min", "3 d 4 h"."""
    if seconds is None:
        return DASH
    s = int(max(0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def instant(value: Any) -> dt.datetime | None:
    """A datetime, an ISO 8601 string or epoch seconds as an aware UTC datetime (None if unreadable)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def ago(value: Any, now: dt.datetime | None = None) -> SafeString | str:
    """'3 s ago' in a <time> element whose title (hover) is the exact UTC instant."""
    when = instant(value)
    if when is None:
        return DASH
    now = now or timezone.now()
    delta = (now - when).total_seconds()
    text = f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"
    exact = when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return format_html('<time datetime="{}" title="{}">{}</time>', when.isoformat(), exact, text)


STAT_ROWS = (
    ("messages", "messages read", number),
    ("rows_written", "rows written", number),
    ("batches", "batches committed", number),
    ("rate", "messages/s (last report)", lambda v: number(v, 1)),
    ("lag", "lag (messages, all partitions)", number),
    ("gaps", "sequence gaps", number),
    ("dlq", "dead letters", number),
    ("started_at", "running since", ago),
    ("duration_s", "run time", duration),
    ("member_id", "group member", lambda v: v or DASH),
)


def stats_table(stats: Mapping[str, Any] | None) -> SafeString | str:
    """The consumer's last reported stats as a two-column table (unknown keys are left out)."""
    stats = stats or {}
    rows = [(label, fmt(stats[key])) for key, label, fmt in STAT_ROWS if key in stats]
    if not rows:
        return "no report yet"
    body = format_html_join("", "<tr><th scope='row'>{}</th><td class='k2-num'>{}</td></tr>", rows)
    return format_html('<table class="k2-stats">{}</table>', body)


def partitions(stats: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per-partition figures from stats["partitions"], sorted by topic and partition."""
    items = (stats or {}).get("partitions") or []
    rows = [p for p in items if isinstance(p, Mapping)]
    return sorted(rows, key=lambda p: (str(p.get("topic", "")), int(p.get("partition") or 0)))


def partitions_table(stats: Mapping[str, Any] | None) -> SafeString | str:
    """Committed offset, end offset, lag and last commit per partition."""
    rows = partitions(stats)
    if not rows:
        return "no per-partition figures in the last report (a consumer reports them while it runs)"
    member = (stats or {}).get("member_id") or DASH  # this consumer's group member owns the partitions it reports
    body = format_html_join("", (
        "<tr><td>{}</td><td class='k2-num'>{}</td><td class='k2-num'>{}</td><td class='k2-num'>{}</td>"
        "<td class='k2-num{}'>{}</td><td>{}</td><td>{}</td></tr>"), (
        (p.get("topic", DASH), p.get("partition", DASH), number(p.get("committed")), number(p.get("end")),
         " k2-lagging" if (p.get("lag") or 0) > 0 else "", number(p.get("lag")), ago(p.get("last_commit_at")),
         p.get("member_id") or p.get("member") or member)
        for p in rows))
    head = mark_safe("<thead><tr><th>topic</th><th>partition</th><th>committed</th><th>end</th><th>lag</th>"
                     "<th>last commit</th><th>member</th></tr></thead>")
    return format_html('<table class="k2-partitions">{}<tbody>{}</tbody></table>', head, body)
