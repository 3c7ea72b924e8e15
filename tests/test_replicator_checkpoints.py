"""Checkpoints: one per shard and stream ARN, sequence numbers only, never moved backwards.

The stream is DynamoDB Local's. A batch interrupted between its insert and
its checkpoint is re-sent with the same boundaries, so ClickHouse drops the
copy and the raw row count stays exact.
"""

import pytest

from replicator import clickhouse, stream
from replicator.checkpoints import advance_checkpoint, mark_pending
from replicator.models import ShardCheckpoint
from replicator.stream import current_stream_arn
from tests.conftest import callback_body, clickhouse_rows, post_callback, replicate, reset_dynamodb

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

ARN = "arn:aws:dynamodb:ddblocal:000000000000:table/oot-test-workflow-job/stream/2026-12-04T00:00:00.000"


@pytest.fixture
def merges_stopped(stores):
    """Keep every inserted row countable: a background merge folds copies of a row together."""
    clickhouse.client().command(f"SYSTEM STOP MERGES {clickhouse.TABLE}")
    yield
    clickhouse.client().command(f"SYSTEM START MERGES {clickhouse.TABLE}")


def seq(number: int) -> str:
    return f"{number:021d}"


def raw_row_count() -> int:
    return clickhouse.client().query(f"SELECT count() FROM {clickhouse.TABLE}").result_rows[0][0]


def send_job(client, job: int, status: str = "completed") -> None:
    body = callback_body(status, job_name=f"job-{job}", check_run_id=str(1000 + job))
    assert post_callback(client, body).status_code == 200


def test_advance_never_moves_backwards():
    checkpoint = ShardCheckpoint.objects.create(stream_arn=ARN, shard_id="shard-1", sequence_number=seq(200))

    stored = advance_checkpoint(checkpoint, seq(100))

    assert stored.sequence_number == seq(200)
    assert ShardCheckpoint.objects.get().sequence_number == seq(200)


def test_advance_compares_numbers_not_strings():
    # AWS sequence numbers grow in length; "9" sorts after "10" as text.
    checkpoint = ShardCheckpoint.objects.create(stream_arn=ARN, shard_id="shard-1", sequence_number="9" * 21)

    advance_checkpoint(checkpoint, "1" + "0" * 21)

    assert ShardCheckpoint.objects.get().sequence_number == "1" + "0" * 21


def test_stale_copy_cannot_overwrite_newer():
    created = ShardCheckpoint.objects.create(stream_arn=ARN, shard_id="shard-1", sequence_number=seq(100))
    stale = ShardCheckpoint.objects.get(pk=created.pk)

    advance_checkpoint(created, seq(300))
    result = advance_checkpoint(stale, seq(200))

    assert result.sequence_number == seq(300)
    assert ShardCheckpoint.objects.get().sequence_number == seq(300)


def test_advance_clears_pending_batch():
    checkpoint = ShardCheckpoint.objects.create(stream_arn=ARN, shard_id="shard-1", sequence_number=seq(10))
    checkpoint = mark_pending(checkpoint, seq(20))

    advance_checkpoint(checkpoint, seq(20))

    stored = ShardCheckpoint.objects.get()
    assert stored.sequence_number == seq(20)
    assert stored.pending_sequence_number == ""


def test_checkpoint_stores_sequence_numbers_only(client):
    send_job(client, 1)

    replicate()

    checkpoint = ShardCheckpoint.objects.get()
    assert checkpoint.stream_arn == current_stream_arn()
    assert checkpoint.sequence_number.isdigit()
    assert 21 <= len(checkpoint.sequence_number) <= 40
    assert checkpoint.pending_sequence_number == ""
    assert checkpoint.last_record_at is not None


def test_recreated_table_starts_clean(client):
    send_job(client, 1)
    replicate()
    old_arn = current_stream_arn()

    reset_dynamodb()
    send_job(client, 2)
    replicate()
    new_arn = current_stream_arn()

    assert new_arn != old_arn
    assert ShardCheckpoint.objects.filter(stream_arn=old_arn).count() == 1
    assert ShardCheckpoint.objects.filter(stream_arn=new_arn).count() == 1
    assert len(clickhouse_rows()) == 2


@pytest.mark.usefixtures("merges_stopped")
def test_interrupted_batch_is_resent_once(client):
    for job in range(3):
        send_job(client, job, "in_progress")
        send_job(client, job)
    replicate()
    checkpoint = ShardCheckpoint.objects.get()
    first_batch_end = checkpoint.sequence_number
    rows_before = raw_row_count()
    assert rows_before == 3

    # Simulate a crash after the insert but before the checkpoint moved: the
    # checkpoint is back at the start with the batch still pending. Records
    # written since then make the next page longer than the original batch.
    ShardCheckpoint.objects.filter(pk=checkpoint.pk).update(sequence_number="", pending_sequence_number=first_batch_end)
    stream.iterator_cache.clear()
    for job in range(3, 5):
        send_job(client, job)
    replicate()

    assert raw_row_count() == rows_before + 2, "the re-sent batch must be dropped by its deduplication token"
    assert len(clickhouse_rows()) == 5
    checkpoint = ShardCheckpoint.objects.get()
    assert checkpoint.pending_sequence_number == ""
    assert int(checkpoint.sequence_number) > int(first_batch_end)


@pytest.mark.usefixtures("merges_stopped")
def test_batch_without_pending_mark_would_duplicate(client):
    # The control for the test above: without the pending boundary the
    # longer page gets another token and the rows are stored twice.
    for job in range(3):
        send_job(client, job)
    replicate()
    checkpoint = ShardCheckpoint.objects.get()
    ShardCheckpoint.objects.filter(pk=checkpoint.pk).update(sequence_number="")
    stream.iterator_cache.clear()
    send_job(client, 3)

    replicate()

    assert raw_row_count() == 3 + 4
    assert len(clickhouse_rows()) == 4
