"""Django system checks of the catalog app: `manage.py check` (and so every deploy, `make run`
and CI) fails when the installed pyiceberg is not the code `catalog.engine.fast_commit` was
audited against, instead of a consumer failing at its first append."""

from __future__ import annotations

from typing import Any

from django.core import checks


@checks.register(checks.Tags.compatibility)
def pyiceberg_is_the_audited_version(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from catalog.engine import fast_commit  # imported here: pyiceberg is heavy, and `help` needs none of it

    return [checks.Error(problem, hint="pin the audited pyiceberg, or re-audit catalog/engine/fast_commit.py",
                         obj="catalog.engine.fast_commit", id="catalog.E001")
            for problem in fast_commit.audit_problems()]
