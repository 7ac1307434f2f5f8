"""Topics, consumers and their runs, and sequence gaps (ADR #012, #014; data model)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from ingestion.engine.limits import MAX_COMMIT_INTERVAL_MS


class Topic(models.Model):
    name = models.CharField(max_length=249, unique=True)
    asset_class = models.CharField(max_length=32)
    data_type = models.CharField(max_length=32)
    exchange = models.CharField(max_length=16)
    partitions = models.PositiveIntegerField(default=30)
    watermarks = models.JSONField(default=dict, blank=True,
                                  help_text="Per partition: {\"low\": n, \"high\": n}, refreshed from the broker.")
    watermarks_refreshed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Consumer(models.Model):
    """A consumer loop operators start and stop from the admin; it runs as a Celery task."""

    class Status(models.TextChoices):
        STOPPED = "stopped"
        STARTING = "starting"
        RUNNING = "running"
        STOPPING = "stopping"
        FAILED = "failed"

    name = models.CharField(max_length=100, unique=True)
    data_type = models.CharField(max_length=32)
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.PROTECT)
    topic_pattern = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255)
    batch_size = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: K2_CONSUMER_BATCH_SIZE.")
    max_batch_ms = models.PositiveIntegerField(null=True, blank=True)
    min_commit_interval_ms = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(MAX_COMMIT_INTERVAL_MS)],
        help_text=f"With thin traffic, commit at most this often (ms, 0-{MAX_COMMIT_INTERVAL_MS}; 0: whenever the last commit is done). "
                  "Lower gives fresher data for more CPU per record and more snapshots. "
                  "Blank: K2_CONSUMER_MIN_COMMIT_INTERVAL_MS (100).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STOPPED)
    # What the operator asked for: the reconciler restarts a `failed` consumer whose desired
    # status is running (bounded by K2_CONSUMER_MAX_RESTARTS per K2_CONSUMER_RESTART_WINDOW_MINUTES).
    desired_status = models.CharField(max_length=16, choices=[("running", "running"), ("stopped", "stopped")],
                                      default="stopped")
    task_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="Celery worker host and pool process id.")
    restart_times = models.JSONField(default=list, blank=True,
                                     help_text="When the reconciler restarted it (ISO instants, inside the window).")
    next_restart_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    stats = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("operate_consumer", "Can start, stop and reset consumers and reset their offsets")]

    def __str__(self) -> str:
        return self.name


class ConsumerRun(models.Model):
    consumer = models.ForeignKey(Consumer, on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    messages = models.BigIntegerField(default=0)
    batches = models.BigIntegerField(default=0)
    gaps = models.BigIntegerField(default=0)
    dlq = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    end_reason = models.CharField(max_length=500, blank=True, help_text="Why the run ended.")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        started = f"{self.started_at:%Y-%m-%d %H:%M} UTC" if self.started_at else "not started"
        if self.ended_at is None:
            end = "running"
        else:
            end = f"failed: {self.error[:60]}" if self.error else f"ended {self.ended_at:%H:%M}"
        return f"{self.consumer.name} run {self.pk} · {started} · {end}" if self.consumer_id else f"run {self.pk}"


class SequenceGap(models.Model):
    """A jump in a stream's sequence numbers (ADR #014). Unique per stream and expected number,
    so re-detecting the same gap after a crash never makes a second row."""

    class State(models.TextChoices):
        OPEN = "open"
        FILLED = "filled"
        ACKNOWLEDGED = "acknowledged"

    detected_at = models.DateTimeField(db_index=True)
    symbol = models.CharField(max_length=32)
    exchange = models.CharField(max_length=16)
    asset_class = models.CharField(max_length=32)
    data_type = models.CharField(max_length=32)
    expected_sequence = models.BigIntegerField()
    received_sequence = models.BigIntegerField()
    gap_size = models.BigIntegerField()
    missing_remaining = models.BigIntegerField(help_text="Sequence numbers of the gap still missing.")
    filled_sequences = models.JSONField(default=list, blank=True, help_text="Late numbers that arrived inside the gap.")
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN, db_index=True)
    filled_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-detected_at"]
        permissions = [("acknowledge_gap", "Can acknowledge sequence gaps")]
        constraints = [
            models.UniqueConstraint(fields=["exchange", "data_type", "symbol", "expected_sequence"],
                                    name="uniq_gap_per_stream_start"),
        ]
        indexes = [
            models.Index(fields=["exchange", "data_type", "symbol", "state"]),
            models.Index(fields=["state", "detected_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.data_type} {self.symbol} {self.expected_sequence}->{self.received_sequence}"
