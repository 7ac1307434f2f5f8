"""Admin for saved queries (validated at save time, with a "run" view) and API keys
(issued with the raw key shown once, revoked by an action). Thin: calls services."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from queries import services
from queries.engine import formats
from queries.engine.errors import QueryError
from queries.models import ApiKey, SavedQuery

OHLC_COLUMNS = {"bar_start", "open", "high", "low", "close"}


class SavedQueryForm(forms.ModelForm):
    class Meta:
        model = SavedQuery
        fields = ["slug", "name", "description", "sql", "parameters", "row_limit", "timeout_seconds", "owner"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "sql" in data:
            try:
                services.saved_query_validate(sql=data["sql"], parameters=data.get("parameters") or {})
            except QueryError as exc:
                self.add_error("parameters" if exc.field == "parameters" else "sql", exc.message)
        if data.get("timeout_seconds") is not None and not 0 < data["timeout_seconds"] <= 600:
            self.add_error("timeout_seconds", "between 0 and 600 seconds")
        return data


@admin.register(SavedQuery)
class SavedQueryAdmin(admin.ModelAdmin):
    form = SavedQueryForm
    list_display = ["slug", "name", "row_limit", "timeout_seconds", "owner", "updated_at", "run_link"]
    search_fields = ["slug", "name", "description"]
    prepopulated_fields = {"slug": ("name",)}

    @admin.display(description="run")
    def run_link(self, obj: SavedQuery) -> str:
        return format_html('<a href="{}">run</a>', reverse("admin:queries_savedquery_run", args=[obj.pk]))

    def get_urls(self) -> list:
        return [path("<int:pk>/run/", self.admin_site.admin_view(self.run_view), name="queries_savedquery_run"),
                *super().get_urls()]

    def run_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        saved = get_object_or_404(SavedQuery, pk=pk)
        params = {name: request.GET[name] for name in (saved.parameters or {}) if request.GET.get(name)}
        context: dict[str, Any] = {**self.admin_site.each_context(request), "title": f"Run {saved.slug}",
                                   "saved": saved, "opts": self.model._meta, "params": params,
                                   "declared": saved.parameters or {}}
        try:
            result = services.saved_query_run(saved_query=saved, params=params)
        except QueryError as exc:
            context["error"] = exc.message
        else:
            table = result.table
            context["columns"] = table.column_names
            context["rows"] = [[formats.json_value(v) for v in row.values()] for row in table.to_pylist()[:1000]]
            context["row_count"] = table.num_rows
            context["truncated"] = result.truncated
            if OHLC_COLUMNS <= set(table.column_names) and table.num_rows:
                context["chart"] = _candles_svg(table.to_pylist()[:500])
        return TemplateResponse(request, "admin/queries/savedquery/run.html", context)


def _candles_svg(bars: list[dict]) -> str:
    """A small candlestick chart as inline SVG (no JavaScript dependency)."""
    width, height, pad = 900, 300, 20
    highs = [float(b["high"]) for b in bars]
    lows = [float(b["low"]) for b in bars]
    top, bottom = max(highs), min(lows)
    span = (top - bottom) or 1.0
    step = (width - 2 * pad) / max(len(bars), 1)

    def y(value: Any) -> float:
        return pad + (top - float(value)) / span * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'style="background:#fff;border:1px solid #ccc">']
    for i, b in enumerate(bars):
        x = pad + i * step + step / 2
        colour = "#2a7" if b["close"] >= b["open"] else "#c33"
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(b["high"]):.1f}" y2="{y(b["low"]):.1f}" stroke="{colour}"/>')
        body_top, body_bottom = min(y(b["open"]), y(b["close"])), max(y(b["open"]), y(b["close"]))
        parts.append(f'<rect x="{x - max(step * 0.35, 0.5):.1f}" y="{body_top:.1f}" width="{max(step * 0.7, 1):.1f}" '
                     f'height="{max(body_bottom - body_top, 1):.1f}" fill="{colour}"/>')
    parts.append(f'<text x="4" y="14" font-size="11">{top:g}</text>'
                 f'<text x="4" y="{height - 4}" font-size="11">{bottom:g}</text></svg>')
    return "".join(parts)


class ApiKeyForm(forms.ModelForm):
    scope_choices = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple,
                                              label="scopes", initial=[ApiKey.Scope.MARKET_DATA_READ])

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "rate_limit_per_minute"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scopes", "owner", "rate_limit_per_minute", "created_at", "last_used_at", "revoked_at"]
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

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for key in queryset:
            services.api_key_revoke(api_key=key)
            self.log_change(request, key, f"Revoked API key {key.prefix}")
        messages.success(request, f"Revoked {queryset.count()} key(s) at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.")
