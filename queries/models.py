"""Saved queries and API keys (issue: query engine and API; PD-002)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SavedQuery(models.Model):
    """Read-only SQL over trades/quotes/reference_data, run in the DuckDB sandbox.

    `parameters` declares the named parameters the SQL uses as `$name`:
    {"symbol": {"type": "string", "default": "BHP"}, "day": {"type": "date"}}.
    """

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    sql = models.TextField(help_text="One SELECT (or WITH … SELECT) over trades, quotes, reference_data; "
                                     "parameters as $name.")
    parameters = models.JSONField(default=dict, blank=True,
                                  help_text='{"symbol": {"type": "string", "default": "BHP"}}; types: string, integer, '
                                            "decimal, float, boolean, date, timestamp.")
    row_limit = models.PositiveIntegerField(default=10_000, help_text="Rows returned at most (cap 100,000).")
    timeout_seconds = models.FloatField(default=30.0, help_text="The query is interrupted after this many seconds.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="saved_queries")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "saved queries"
        permissions = [("run_savedquery", "Can run saved queries (admin run view, API session)"),
                       ("read_market_data", "Can read market data through the API in a session")]

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    """An API key (PD-002). Only a SHA-256 hash of the key is stored; the raw key is shown
    once when it is issued. `prefix` (public) finds the row; the hash proves the rest."""

    class Scope(models.TextChoices):
        MARKET_DATA_READ = "market_data:read", "read market data"
        QUERIES_RUN = "queries:run", "run saved queries"
        SCHEMAS_WRITE = "schemas:write", "register, reconfigure and delete schemas (registry)"

    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="api_keys")
    rate_limit_per_minute = models.PositiveIntegerField(default=600)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        permissions = [("revoke_apikey", "Can revoke API keys")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        """Usable: not revoked, and its owner (if any) is still an active user."""
        return self.revoked_at is None and (self.owner is None or self.owner.is_active)
