"""The admin page that resets a stopped consumer's offsets: preview per partition, then apply
(calls `ingestion.offset_services`; gated on `ingestion.operate_consumer`; logged in History)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from ingestion.engine.offset_reset import OffsetResetError
from ingestion.models import Consumer
from ingestion.offset_services import (
    describe_plans,
    parse_partition_offsets,
    plan_consumer_reset,
    reset_consumer_offsets,
)
from k2core.errors import ApplicationError

MODES = [("earliest", "earliest"), ("latest", "latest (skip everything not yet read)"),
         ("timestamp", "a time"), ("offsets", "an offset per partition")]


def _parse(post: Any) -> tuple[str, dt.datetime | None, dict[int, int] | None, bool]:
    mode = post.get("mode") or ""
    if mode not in dict(MODES):
        raise OffsetResetError("choose what to reset to: earliest, latest, a time or an offset per partition")
    timestamp = None
    if mode == "timestamp":
        text = (post.get("timestamp") or "").strip()
        try:
            timestamp = dt.datetime.fromisoformat(text)
        except ValueError:
            raise OffsetResetError(f"time {text!r} is not an ISO 8601 instant, e.g. 2026-03-10T10:00:00+00:00") from None
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=dt.UTC)  # the form says UTC
    offsets = parse_partition_offsets(post.get("offsets", "")) if mode == "offsets" else None
    return mode, timestamp, offsets, post.get("rewrite") == "1"


def reset_offsets_view(model_admin: Any, request: HttpRequest, object_id: int) -> HttpResponse:
    if not request.user.has_perm("ingestion.operate_consumer"):
        raise PermissionDenied
    consumer = get_object_or_404(Consumer, pk=object_id)
    context: dict[str, Any] = {**model_admin.admin_site.each_context(request), "title": f"Reset offsets: {consumer}",
                               "opts": Consumer._meta, "consumer": consumer, "modes": MODES, "mode": "latest",
                               "group": consumer.group_id, "timestamp": "", "offsets": "", "rewrite": False}
    if request.method == "POST":
        context.update(mode=request.POST.get("mode", ""), timestamp=request.POST.get("timestamp", ""),
                       offsets=request.POST.get("offsets", ""), rewrite=request.POST.get("rewrite") == "1")
        mode = ""
        try:
            mode, timestamp, offsets, rewrite = _parse(request.POST)
            if "apply" in request.POST:
                plans = reset_consumer_offsets(consumer=consumer, mode=mode, timestamp=timestamp, offsets=offsets,
                                               rewrite=rewrite)
                how = f"{mode}, rewriting rows already in the table" if any(p.rewrite for p in plans) else mode
                model_admin.log_change(request, consumer, f"Offsets reset to {how}: {describe_plans(plans)}")
                model_admin.message_user(request, f"{consumer.name}: offsets reset ({describe_plans(plans)}).",
                                         messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:ingestion_consumer_change", args=[consumer.pk]))
            plans = plan_consumer_reset(consumer=consumer, mode=mode, timestamp=timestamp, offsets=offsets,
                                            rewrite=rewrite)
            context.update(plans=plans, refused=any(p.refused for p in plans))
            if consumer.status != Consumer.Status.STOPPED:
                context.update(refused=True, error=f"{consumer.name} is {consumer.status}: stop it first.")
        except ApplicationError as exc:  # shown on the form, with what was typed
            context["error"] = f"Nothing changed: {exc.message}"
            if "apply" in request.POST and mode:  # keep the plan on screen so the operator can apply again
                try:
                    plans = plan_consumer_reset(consumer=consumer, mode=mode, timestamp=timestamp, offsets=offsets,
                                                rewrite=rewrite)
                    context.update(plans=plans, refused=any(p.refused for p in plans))
                except ApplicationError:
                    pass
    return TemplateResponse(request, "admin/ingestion/consumer/reset_offsets.html", context)
