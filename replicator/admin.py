from django.contrib import admin

from replicator.models import DeadLetter, ReplicatorStatus, ShardCheckpoint


@admin.register(ShardCheckpoint)
class ShardCheckpointAdmin(admin.ModelAdmin):
    list_display = ("shard_id", "parent_shard_id", "sequence_number", "finished", "updated_at", "stream_arn")
    list_filter = ("finished",)
    search_fields = ("shard_id", "stream_arn")
    readonly_fields = ("stream_arn", "shard_id", "parent_shard_id", "sequence_number", "finished", "updated_at")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("created_at", "dynamo_key", "event_name", "reason", "shard_id")
    search_fields = ("dynamo_key", "reason")
    readonly_fields = (
        "created_at",
        "stream_arn",
        "shard_id",
        "sequence_number",
        "dynamo_key",
        "event_name",
        "reason",
        "image",
    )


@admin.register(ReplicatorStatus)
class ReplicatorStatusAdmin(admin.ModelAdmin):
    list_display = (
        "stream_arn",
        "last_run_at",
        "last_success_at",
        "last_run_records",
        "last_lag_seconds",
        "total_records",
        "last_error",
    )
    readonly_fields = list_display
