"""A real browser for the platform tests: Debian's Chromium, headless, driven by Playwright (no
browser download), and signing in through the admin's own login form."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from k2portal.config import BASE_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = BASE_DIR / "var" / "artifacts"  # screenshots (gitignored)


@contextlib.contextmanager
def chromium_page(monkeypatch: pytest.MonkeyPatch, *, timeout_ms: int, **context_options: Any) -> Iterator[Any]:
    """A new page of a headless Chromium (closed afterwards); `context_options` go to `new_context` (e.g. viewport)."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are ordinary synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: `apt-get install chromium` (.ci/run does)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(**context_options)
            context.set_default_timeout(timeout_ms)
            yield context.new_page()
        finally:
            browser.close()


def sign_in(page: Any, base_url: str, username: str, password: str, next_path: str = "/admin/") -> None:
    """A new superuser, signed in through the admin's login form; the page is then on `next_path`."""
    get_user_model().objects.create_superuser(username, f"{username}@example.com", password)
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")
