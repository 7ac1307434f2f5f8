"""`manage.py issue_api_key --name N [--user U] [--scope S ...]`: issue an API key and print
the raw key once (for `make run`'s ready-to-paste curl example and for scripts)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from queries import services
from queries.models import ApiKey


class Command(BaseCommand):
    help = "Issue an API key (stored hashed) and print it; it cannot be shown again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--user", default=None, help="username of the owner")
        parser.add_argument("--scope", action="append", choices=ApiKey.Scope.values,
                            help="repeatable; default: market_data:read and queries:run")
        parser.add_argument("--rate-limit", type=int, default=600, help="requests per minute")

    def handle(self, *args: Any, **opts: Any) -> None:
        owner = None
        if opts["user"]:
            owner = get_user_model().objects.filter(username=opts["user"]).first()
            if owner is None:
                raise CommandError(f"no user {opts['user']!r}: create it first (manage.py createsuperuser)")
        _, raw = services.api_key_create(name=opts["name"], owner=owner,
                                         scopes=opts["scope"] or [ApiKey.Scope.MARKET_DATA_READ, ApiKey.Scope.QUERIES_RUN],
                                         rate_limit_per_minute=opts["rate_limit"])
        self.stdout.write(raw)
