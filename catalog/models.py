"""The embedded Avro schema registry (K2's default when K2_SCHEMA_REGISTRY_URL is unset)."""

from __future__ import annotations

from django.db import models


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
