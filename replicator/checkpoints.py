"""Per-shard checkpoints: the last sequence number that is safely in ClickHouse.

Every change is a conditional update ("only where the stored sequence number
is still the one just read"), so a stale copy of a checkpoint, or a second
writer, can never move it backwards. Sequence numbers are decimal strings of
21 to 40 digits and are compared as integers.
"""

import logging
from datetime import datetime

from django.utils import timezone

from replicator.models import ShardCheckpoint

logger = logging.getLogger(__name__)

# Conditional updates retried when another writer changed the row in between.
CAS_ATTEMPTS = 5


class CheckpointConflict(RuntimeError):
    """The checkpoint kept changing under a conditional update."""


def sequence_value(sequence_number: str) -> int:
    return int(sequence_number) if sequence_number else -1


def load_checkpoint(stream_arn: str, shard: dict) -> ShardCheckpoint:
    """Return the shard's checkpoint, creating an empty one (read from TRIM_HORIZON) on first sight."""
    checkpoint, _ = ShardCheckpoint.objects.get_or_create(
        stream_arn=stream_arn,
        shard_id=shard["ShardId"],
        defaults={"parent_shard_id": shard.get("ParentShardId", "")},
    )
    return checkpoint


def advance_checkpoint(
    checkpoint: ShardCheckpoint, sequence_number: str, record_at: datetime | None = None
) -> ShardCheckpoint:
    """Move a checkpoint forward to `sequence_number` and clear its pending batch, never backwards.

    Return the stored checkpoint, which is unchanged (and newer) when the
    offered sequence number is not past the stored one.
    """
    for _ in range(CAS_ATTEMPTS):
        stored = ShardCheckpoint.objects.get(pk=checkpoint.pk)
        if sequence_value(stored.sequence_number) >= sequence_value(sequence_number):
            logger.warning(
                "checkpoint not moved backwards shard=%s stored=%s offered=%s",
                stored.shard_id,
                stored.sequence_number,
                sequence_number,
            )
            return stored
        changes = {"sequence_number": sequence_number, "updated_at": timezone.now()}
        if record_at is not None:
            changes["last_record_at"] = record_at
        if sequence_value(stored.pending_sequence_number) <= sequence_value(sequence_number):
            changes["pending_sequence_number"] = ""
        if _update_if_unchanged(stored, **changes):
            return _with(stored, changes)
    raise CheckpointConflict(f"checkpoint of shard {checkpoint.shard_id} kept changing; giving up this run")


def mark_pending(checkpoint: ShardCheckpoint, last_sequence_number: str) -> ShardCheckpoint:
    """Record the last sequence number of the batch about to be inserted, before the insert."""
    if checkpoint.pending_sequence_number == last_sequence_number:
        return checkpoint
    changes = {"pending_sequence_number": last_sequence_number}
    if not _update_if_unchanged(checkpoint, **changes):
        raise CheckpointConflict(f"checkpoint of shard {checkpoint.shard_id} changed during the run")
    return _with(checkpoint, changes)


def restart_at_trim_horizon(checkpoint: ShardCheckpoint) -> ShardCheckpoint:
    """Point a checkpoint whose position was trimmed away at TRIM_HORIZON.

    This is no step backwards in the stream: TRIM_HORIZON, the oldest record
    still kept, lies past the trimmed position. The update applies only if
    no other writer moved the checkpoint meanwhile.
    """
    changes = {"sequence_number": "", "pending_sequence_number": "", "updated_at": timezone.now()}
    if not _update_if_unchanged(checkpoint, **changes):
        raise CheckpointConflict(f"checkpoint of shard {checkpoint.shard_id} changed during the run")
    return _with(checkpoint, changes)


def mark_finished(checkpoint: ShardCheckpoint) -> ShardCheckpoint:
    ShardCheckpoint.objects.filter(pk=checkpoint.pk).update(finished=True, updated_at=timezone.now())
    return _with(checkpoint, {"finished": True})


def _update_if_unchanged(stored: ShardCheckpoint, **changes) -> bool:
    changed = ShardCheckpoint.objects.filter(
        pk=stored.pk,
        sequence_number=stored.sequence_number,
        pending_sequence_number=stored.pending_sequence_number,
    ).update(**changes)
    return changed == 1


def _with(checkpoint: ShardCheckpoint, changes: dict) -> ShardCheckpoint:
    for name, value in changes.items():
        setattr(checkpoint, name, value)
    return checkpoint
