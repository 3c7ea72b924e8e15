"""Replication state: per-shard checkpoints, dead letters, stream gaps and run statistics."""

from django.db import models
from django.utils import timezone


class ShardCheckpoint(models.Model):
    """The last sequence number of a shard that is safely in ClickHouse.

    Keyed by stream ARN, so a re-created table (a new stream) starts clean.
    Only sequence numbers are stored, because shard iterators expire after 15 minutes.
    """

    stream_arn = models.CharField(max_length=400)
    shard_id = models.CharField(max_length=200)
    parent_shard_id = models.CharField(max_length=200, blank=True)
    sequence_number = models.CharField(
        max_length=64, blank=True, help_text="Empty: read the shard from TRIM_HORIZON, its oldest record"
    )
    pending_sequence_number = models.CharField(
        max_length=64,
        blank=True,
        help_text="Last sequence number of a batch sent to ClickHouse but not yet checkpointed; after a crash "
        "the batch is re-sent with the same boundaries, so its deduplication token matches",
    )
    last_record_at = models.DateTimeField(
        null=True, blank=True, help_text="Creation time of the checkpointed stream record"
    )
    finished = models.BooleanField(default=False, help_text="The shard is closed and read to its end")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream_arn", "shard_id"], name="checkpoint_unique_shard")]

    def __str__(self) -> str:
        return f"{self.shard_id} @ {self.sequence_number or 'TRIM_HORIZON'}"


class DeadLetter(models.Model):
    """A record that could not be converted into a row, kept with the reason."""

    SOURCE_STREAM = "stream"
    SOURCE_RECONCILE = "reconcile"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(
        max_length=16,
        default=SOURCE_STREAM,
        choices=[(SOURCE_STREAM, "stream"), (SOURCE_RECONCILE, "reconcile")],
    )
    fingerprint = models.CharField(
        max_length=64,
        unique=True,
        null=True,
        help_text="Identity of the failed record, so a retried batch adds no copy",
    )
    stream_arn = models.CharField(max_length=400, blank=True)
    shard_id = models.CharField(max_length=200, blank=True)
    sequence_number = models.CharField(max_length=64, blank=True)
    dynamo_key = models.CharField(max_length=2048, blank=True)
    event_name = models.CharField(max_length=16, blank=True)
    reason = models.TextField()
    image = models.TextField(help_text="The record's NewImage (or OldImage for a REMOVE) as JSON")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.dynamo_key or self.sequence_number}: {self.reason[:80]}"


class StreamGap(models.Model):
    """A stretch of the stream that was trimmed before it was read, and its reconcile.

    The records written in it may be missing from ClickHouse until the
    reconcile (a scan of DynamoDB for records updated since `since`) has run.
    """

    detected_at = models.DateTimeField(default=timezone.now, db_index=True)
    stream_arn = models.CharField(max_length=400)
    shard_id = models.CharField(max_length=200)
    after_sequence_number = models.CharField(max_length=64, blank=True)
    since = models.DateTimeField(
        null=True, blank=True, help_text="Start of the possible gap; empty when unknown (reconcile scans everything)"
    )
    until = models.DateTimeField(help_text="End of the possible gap: when it was detected")
    reconciled_at = models.DateTimeField(null=True, blank=True)
    records_upserted = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"{self.shard_id} after {self.after_sequence_number or 'TRIM_HORIZON'}"


class ReplicatorStatus(models.Model):
    """Statistics of the latest replication runs for one stream, for operators."""

    stream_arn = models.CharField(max_length=400, unique=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    failed_runs = models.PositiveBigIntegerField(default=0)
    last_run_records = models.PositiveIntegerField(default=0, help_text="Stream records read by the last run")
    last_run_rows = models.PositiveIntegerField(default=0, help_text="Rows inserted into ClickHouse by the last run")
    last_run_seconds = models.FloatField(default=0.0)
    last_lag_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="Longest time from a record's write in DynamoDB to its insert into ClickHouse in the last run; "
        "0 when the run found nothing new",
    )
    caught_up = models.BooleanField(default=False, help_text="The last run read every shard to its end or tip")
    total_records = models.PositiveBigIntegerField(default=0)
    total_rows = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "replicator status"

    def __str__(self) -> str:
        return self.stream_arn
