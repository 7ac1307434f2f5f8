"""K2's admin site: Django's, with application errors (k2core.errors) turned into admin messages
in this one place. A service that refuses (a consumer that cannot start, a gap acknowledged
without a note, ...) raises its ApplicationError; every admin view, action and custom page is
wrapped by `admin_view`, so the user sees the error's message on the page they came from
instead of a server error."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from k2core.errors import ApplicationError


class K2AdminSite(admin.AdminSite):
    def admin_view(self, view: Callable[..., HttpResponse], cacheable: bool = False) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except ApplicationError as exc:
                return self.application_error_response(request, exc)
        return super().admin_view(inner, cacheable)

    def application_error_response(self, request: HttpRequest, exc: ApplicationError) -> HttpResponse:
        """The error's message, back on the page the user came from: the same page after a POST
        (a form or an action), else the referring admin page, else the admin index."""
        messages.error(request, exc.message)
        if request.method == "POST":
            return HttpResponseRedirect(request.get_full_path())
        referer = request.headers.get("Referer", "")
        if referer and url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()},
                                                       require_https=request.is_secure()):
            return HttpResponseRedirect(referer)
        return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
