"""Replication state: per-shard checkpoints, dead letters and run statistics."""

from django.db import models
from django.utils import timezone


class ShardCheckpoint(models.Model):
    """The last sequence number of a shard that is safely in ClickHouse.

    Keyed by stream ARN, so a re-created table (a new stream) starts clean.
    Only sequence numbers are stored: shard iterators expire after 15 minutes.
    """

    stream_arn = models.CharField(max_length=400)
    shard_id = models.CharField(max_length=200)
    parent_shard_id = models.CharField(max_length=200, blank=True)
    sequence_number = models.CharField(max_length=64, blank=True)
    finished = models.BooleanField(default=False, help_text="The shard is closed and read to its end")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream_arn", "shard_id"], name="checkpoint_unique_shard")]

    def __str__(self) -> str:
        return f"{self.shard_id} @ {self.sequence_number or 'TRIM_HORIZON'}"


class DeadLetter(models.Model):
    """A stream record that could not be converted into a row, kept with the reason."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    stream_arn = models.CharField(max_length=400)
    shard_id = models.CharField(max_length=200)
    sequence_number = models.CharField(max_length=64)
    dynamo_key = models.CharField(max_length=2048, blank=True)
    event_name = models.CharField(max_length=16)
    reason = models.TextField()
    image = models.TextField(help_text="The record's NewImage (or OldImage for a REMOVE) as JSON")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.dynamo_key or self.sequence_number}: {self.reason[:80]}"


class ReplicatorStatus(models.Model):
    """Statistics of the latest replication runs for one stream, for operators."""

    stream_arn = models.CharField(max_length=400, unique=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_run_records = models.PositiveIntegerField(default=0)
    last_lag_seconds = models.FloatField(null=True, blank=True, help_text="Stream record creation to ClickHouse insert")
    total_records = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "replicator status"

    def __str__(self) -> str:
        return self.stream_arn
