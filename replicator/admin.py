"""Read-only admin pages for operators: replication status, checkpoints, dead letters and stream gaps."""

from django.contrib import admin

from replicator.models import DeadLetter, ReplicatorStatus, ShardCheckpoint, StreamGap


class ReadOnlyAdmin(admin.ModelAdmin):
    """The replicator writes these rows, and people only read or delete them."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ReplicatorStatus)
class ReplicatorStatusAdmin(ReadOnlyAdmin):
    list_display = (
        "stream_arn",
        "last_success_at",
        "last_lag_seconds",
        "caught_up",
        "last_run_records",
        "last_run_rows",
        "last_run_seconds",
        "consecutive_failures",
        "dead_letters",
        "last_error",
    )
    readonly_fields = (
        "stream_arn",
        "last_run_at",
        "last_success_at",
        "last_lag_seconds",
        "caught_up",
        "last_run_records",
        "last_run_rows",
        "last_run_seconds",
        "total_records",
        "total_rows",
        "consecutive_failures",
        "failed_runs",
        "last_error_at",
        "last_error",
    )

    @admin.display(description="dead letters")
    def dead_letters(self, _obj) -> int:
        return DeadLetter.objects.count()


@admin.register(ShardCheckpoint)
class ShardCheckpointAdmin(ReadOnlyAdmin):
    list_display = (
        "shard_id",
        "parent_shard_id",
        "sequence_number",
        "pending_sequence_number",
        "last_record_at",
        "finished",
        "updated_at",
        "stream_arn",
    )
    list_filter = ("finished",)
    search_fields = ("shard_id", "stream_arn")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "source", "dynamo_key", "event_name", "reason", "shard_id", "sequence_number")
    list_filter = ("source",)
    search_fields = ("dynamo_key", "reason", "sequence_number")
    readonly_fields = (
        "created_at",
        "source",
        "stream_arn",
        "shard_id",
        "sequence_number",
        "dynamo_key",
        "event_name",
        "reason",
        "image",
    )
    exclude = ("fingerprint",)


@admin.register(StreamGap)
class StreamGapAdmin(ReadOnlyAdmin):
    list_display = ("detected_at", "shard_id", "since", "until", "reconciled_at", "records_upserted", "last_error")
    list_filter = (("reconciled_at", admin.EmptyFieldListFilter),)
    readonly_fields = (
        "detected_at",
        "stream_arn",
        "shard_id",
        "after_sequence_number",
        "since",
        "until",
        "reconciled_at",
        "records_upserted",
        "last_error",
    )
