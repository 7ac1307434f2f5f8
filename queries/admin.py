"""Admin for saved queries (validated at save time, with a "run" view) and API keys
(issued with the raw key shown once, revoked by an action). Thin: calls services."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from importlib import import_module
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html

from queries.engine.errors import QueryError
from queries.models import ApiKey, SavedQuery

# Services and encoders import DuckDB, pyarrow and pyiceberg (seconds of imports); the admin is
# loaded by every manage.py command, so they are imported at first use.
services = SimpleLazyObject(lambda: import_module("queries.services"))
formats = SimpleLazyObject(lambda: import_module("queries.engine.formats"))

OHLC_COLUMNS = {"bar_start", "open", "high", "low", "close"}


class SavedQueryForm(forms.ModelForm):
    class Meta:
        model = SavedQuery
        fields = ["slug", "name", "description", "sql", "parameters", "row_limit", "timeout_seconds", "owner"]

    def clean(self) -> dict[str, Any]:
        """The service's rules (saved_query_validate: sandbox, row limit, timeout), run here too so a
        refusal shows on the form, next to the field, with what was typed kept."""
        data = super().clean()
        if "sql" in data:
            try:
                services.saved_query_validate(sql=data["sql"], parameters=data.get("parameters") or {},
                                              row_limit=data.get("row_limit"), timeout_seconds=data.get("timeout_seconds"))
            except QueryError as exc:
                field = exc.field if exc.field in ("parameters", "row_limit", "timeout_seconds") else "sql"
                self.add_error(field, exc.message)
        return data


@admin.register(SavedQuery)
class SavedQueryAdmin(admin.ModelAdmin):
    form = SavedQueryForm
    list_display = ["slug", "name", "row_limit", "timeout_seconds", "owner", "updated_at", "run_link"]
    search_fields = ["slug", "name", "description"]
    prepopulated_fields = {"slug": ("name",)}

    def save_model(self, request: HttpRequest, obj: SavedQuery, form: Any, change: bool) -> None:
        """Saved through the service (saved_query_create / saved_query_update), as any other caller would."""
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields if name in form.cleaned_data}
        if change:
            services.saved_query_update(saved_query=obj, **fields)
            return
        created = services.saved_query_create(**fields)
        obj.pk = created.pk
        obj._state.adding = False
        obj.refresh_from_db()

    @admin.display(description="run")
    def run_link(self, obj: SavedQuery) -> str:
        return format_html('<a href="{}">run</a>', reverse("admin:queries_savedquery_run", args=[obj.pk]))

    def get_urls(self) -> list:
        return [path("<int:pk>/run/", self.admin_site.admin_view(self.run_view), name="queries_savedquery_run"),
                *super().get_urls()]

    def run_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not request.user.has_perm("queries.run_savedquery"):
            raise PermissionDenied("running saved queries needs the queries.run_savedquery permission")
        saved = get_object_or_404(SavedQuery, pk=pk)
        params = {name: request.GET[name] for name in (saved.parameters or {}) if request.GET.get(name)}
        context: dict[str, Any] = {**self.admin_site.each_context(request), "title": f"Run {saved.slug}",
                                   "saved": saved, "opts": self.model._meta, "params": params,
                                   "declared": saved.parameters or {}, "ran_with": _ran_with(saved, params)}
        try:
            result = services.saved_query_run(saved_query=saved, params=params,
                                               runner=services.runner_of(request.user))
        except QueryError as exc:
            context["error"] = exc.message
        else:
            table = result.table
            try:
                shown = formats.rows(table.slice(0, 1000))  # JSON-safe values: infinite instants, NaN, nested
            except formats.UnencodableResult as exc:
                context["error"] = str(exc)
                return TemplateResponse(request, "admin/queries/savedquery/run.html", context)
            context["columns"] = table.column_names
            context["rows"] = [list(row.values()) for row in shown]
            context["row_count"] = table.num_rows
            context["truncated"] = result.truncated
            if OHLC_COLUMNS <= set(table.column_names) and table.num_rows:
                try:
                    chart_rows = table.slice(0, 2000).to_pylist()
                except (OverflowError, ValueError):  # values Python cannot hold (infinite instants)
                    chart_rows = []
                bars = [r for r in chart_rows if _bar(r) is not None]
                if bars:
                    context["chart"] = _candles_chart(bars, params)
        return TemplateResponse(request, "admin/queries/savedquery/run.html", context)


def _bar(row: dict[str, Any]) -> dict[str, float] | None:
    """A row's open/high/low/close as finite numbers; None when any is missing or not a number
    (such rows are left out of the chart, not a server error)."""
    out = {}
    for name in ("open", "high", "low", "close"):
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            return None
        try:
            number = float(value)  # decimals arrive as exact strings
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        out[name] = number
    return out


def _ran_with(saved: SavedQuery, params: dict[str, str]) -> list[dict[str, Any]]:
    """Each declared parameter with the value the run used: the one given, else its default."""
    out = []
    for name, spec in (saved.parameters or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        given = name in params
        out.append({"name": name, "type": spec.get("type", ""), "value": params[name] if given else spec.get("default"),
                    "given": given})
    return out


def _candles_chart(rows: list[dict], params: dict[str, str]) -> dict[str, Any]:
    """Bars for K2Charts.candles: exchange-local time (the `exchange` parameter's zone, ASX by
    default), OHLC as decimal strings, volume when the query returns it; one symbol (the first)."""
    from catalog.engine.exchanges import ASX
    from queries.dashboard import local_ms
    from queries.selectors import exchange as registered

    try:
        zone = registered(params.get("exchange") or "ASX").zone
    except QueryError:
        zone = ASX.zone
    symbols = list(dict.fromkeys(str(r.get("symbol")) for r in rows if r.get("symbol") is not None))
    symbol = symbols[0] if symbols else ""
    shown = [r for r in rows if not symbols or str(r.get("symbol")) == symbol]
    starts = [r["bar_start"] for r in shown if isinstance(r.get("bar_start"), dt.datetime)]
    bars = [[local_ms(r["bar_start"] if r["bar_start"].tzinfo else r["bar_start"].replace(tzinfo=dt.UTC), zone),
             str(r["open"]), str(r["close"]), str(r["low"]), str(r["high"]),
             int(r["volume"]) if r.get("volume") is not None else None]
            for r in shown if isinstance(r.get("bar_start"), dt.datetime)]
    day = starts[0].astimezone(zone) if starts else dt.datetime.now(zone)
    return {"symbol": symbol or "result", "day": f"{day:%Y-%m-%d}", "interval": "", "zone": zone.key,
            "zone_abbr": day.tzname(), "bars": bars, "gaps": [], "other_symbols": symbols[1:]}


class ApiKeyForm(forms.ModelForm):
    scope_choices = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple,
                                              label="scopes", initial=[ApiKey.Scope.MARKET_DATA_READ])

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "rate_limit_per_minute"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scopes", "owner", "state", "rate_limit_per_minute", "created_at", "last_used_at",
                    "revoked_at"]
    list_filter = ["revoked_at"]
    readonly_fields = ["prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, **kwargs: Any) -> Any:
        if obj is not None:  # an issued key: its secret and scopes do not change; revoke and re-issue instead
            kwargs["fields"] = ["name", "owner", "rate_limit_per_minute"]
            return forms.modelform_factory(ApiKey, fields=kwargs["fields"])
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else []

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = services.api_key_create(name=obj.name, scopes=form.cleaned_data["scope_choices"],
                                           owner=obj.owner or request.user, rate_limit_per_minute=obj.rate_limit_per_minute)
        obj.__dict__.update({k: v for k, v in key.__dict__.items() if not k.startswith("_")})
        messages.warning(request, format_html(
            "Copy this API key now, it is not stored and will not be shown again: <code>{}</code> "
            "— send it as the <code>X-API-Key</code> header.", raw))

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        if obj.owner is not None and not obj.owner.is_active:
            return "refused: owner deactivated"
        return "active"

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # ?key_hash__startswith=… would answer whether a hash starts with a guess: an oracle.
        if lookup.split("__")[0] == "key_hash":
            return False
        return super().lookup_allowed(lookup, value, request)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("queries.revoke_apikey")

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for key in queryset:
            services.api_key_revoke(api_key=key)
            self.log_change(request, key, f"Revoked API key {key.prefix}")
        messages.success(request, f"Revoked {queryset.count()} key(s) at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.")
