"""The embedded Avro schema registry (K2's default when K2_SCHEMA_REGISTRY_URL is unset)."""

from __future__ import annotations

import datetime

from django.core.validators import RegexValidator
from django.db import models

from catalog.engine.exchanges import Exchange as EngineExchange


def _default_weekend() -> list[int]:
    return [6, 7]


class AvroSchema(models.Model):
    """A distinct schema text; its primary key is the registry's global schema id."""

    schema = models.TextField(help_text="Canonical JSON text of the Avro schema.")
    fingerprint = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the canonical text.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "Avro schema"

    def __str__(self) -> str:
        return f"schema {self.pk}"


class SchemaSubject(models.Model):
    """A subject (`{topic}-value`) with its compatibility mode."""

    name = models.CharField(max_length=255, unique=True)
    compatibility = models.CharField(max_length=32, default="BACKWARD")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("write_schemas", "Can register, reconfigure and delete schemas through the registry API")]

    def __str__(self) -> str:
        return self.name


class SubjectVersion(models.Model):
    subject = models.ForeignKey(SchemaSubject, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    schema = models.ForeignKey(AvroSchema, on_delete=models.PROTECT, related_name="versions")
    registered_at = models.DateTimeField(auto_now_add=True)
    deleted = models.BooleanField(default=False, help_text="Soft-deleted (Confluent DELETE without permanent=true).")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "version"], name="uniq_subject_version"),
            models.UniqueConstraint(fields=["subject", "schema"], name="uniq_subject_schema"),
        ]
        ordering = ["subject", "version"]

    def __str__(self) -> str:
        return f"{self.subject.name} v{self.version}"


def _check_timezone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from django.core.exceptions import ValidationError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Australia/Sydney, Pacific/Auckland)") from None


def _check_weekend(value: object) -> None:
    from django.core.exceptions import ValidationError

    if not isinstance(value, list) or not all(isinstance(d, int) and 1 <= d <= 7 for d in value):
        raise ValidationError("weekend days are a list of ISO weekdays, Monday = 1 … Sunday = 7, e.g. [6, 7]")


class Exchange(models.Model):
    """An exchange K2 takes data from: its topic code, time zone and trading-calendar basics.

    Timestamps without an offset in a CSV file are this exchange's local time, and `date=` and
    1d bars of the API are its local trading days. Engines get it as `catalog.engine.exchanges.Exchange`."""

    code = models.CharField(primary_key=True, max_length=16,
                            validators=[RegexValidator(r"^[a-z0-9]{1,16}\Z", "1 to 16 lower-case letters or digits")],
                            help_text="Lower case, as in topic names: market.equities.trades.<code>.")
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, validators=[_check_timezone], help_text="IANA time zone, e.g. Australia/Sydney.")
    session_open = models.TimeField(default=datetime.time(10, 0), help_text="Regular session open, local time.")
    session_close = models.TimeField(default=datetime.time(16, 0), help_text="Regular session close, local time.")
    weekend_days = models.JSONField(default=_default_weekend, validators=[_check_weekend],
                                    help_text="ISO weekdays with no trading (Monday = 1): [6, 7] is Saturday and Sunday.")

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} ({self.timezone})"

    def to_engine(self) -> EngineExchange:
        return EngineExchange(code=self.code, name=self.name, timezone=self.timezone, session_open=self.session_open,
                              session_close=self.session_close, weekend_days=tuple(self.weekend_days))
