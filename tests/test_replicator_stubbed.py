"""Stream behaviour only AWS produces, through botocore's Stubber at the DynamoDB Streams client.

Shard splits, DescribeStream pagination, expired iterators, trimmed data and
throttling cannot be produced by DynamoDB Local. The Stubber returns AWS's
responses in a fixed order, so each test also checks the order of the calls:
a parent is read before its children, a child starts at TRIM_HORIZON, an
open shard's iterator is kept between runs. Checkpoints, ClickHouse and the
reconcile's DynamoDB scan are the real components.
"""

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.stub import Stubber

from oot_ingest import dynamo
from replicator import stream
from replicator.models import ShardCheckpoint, StreamGap
from replicator.stream import Replicator, current_stream_arn, list_shards, replicate_once
from tests.conftest import clickhouse_rows

pytestmark = pytest.mark.usefixtures("stores")

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/oot-workflow-job/stream/2026-12-01T00:00:00.000"
WRITTEN_AT = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
_serializer = TypeSerializer()


@pytest.fixture(autouse=True)
def fresh_iterator_cache():
    stream.iterator_cache.clear()
    yield
    stream.iterator_cache.clear()


@pytest.fixture
def streams():
    client = boto3.client(
        "dynamodbstreams", region_name="us-east-1", aws_access_key_id="stub", aws_secret_access_key="stub"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def seq(number: int) -> str:
    """Format a sequence number the way DynamoDB does: at least 21 digits."""
    return f"{number:021d}"


def record_image(key: str, status: str = "completed", revision: int = 2, **fields) -> dict:
    item = {
        "dynamoKey": key,
        "status": status,
        "revision": revision,
        "downstream_repo": "acme-ai/torch-npu",
        "delivery_id": key.split("/")[2],
        "workflow_name": "npu-ci",
        "job_name": key.rsplit("/", 2)[1],
        "check_run_id": key.rsplit("/", 1)[1],
        "pr_number": 4242,
        "upstream_repo": "pytorch/pytorch",
        "started_at": "2026-12-04T09:00:00Z",
        "updated_at": "2026-12-04T10:00:00.000000Z",
    }
    if status == "completed":
        item.update(conclusion="success", completed_at="2026-12-04T09:30:00Z")
    item.update(fields)
    return {name: _serializer.serialize(value) for name, value in item.items()}


def key_for(number: int) -> str:
    return f"acme-ai/torch-npu/delivery-{number}/npu-ci/job-{number}/{number}"


def stream_record(
    number: int,
    event: str = "MODIFY",
    status: str = "completed",
    identity: dict | None = None,
    sequence: int | None = None,
) -> dict:
    """Build a stream record for the job `number`, at sequence number `sequence` (default `number`)."""
    key = key_for(number)
    data = {
        "ApproximateCreationDateTime": WRITTEN_AT,
        "Keys": {"dynamoKey": {"S": key}},
        "SequenceNumber": seq(sequence or number),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event == "REMOVE":
        data["OldImage"] = record_image(key, status)
    else:
        data["NewImage"] = record_image(key, status)
    record = {"eventID": f"event-{number}", "eventName": event, "eventSource": "aws:dynamodb", "dynamodb": data}
    if identity is not None:
        record["userIdentity"] = identity
    return record


def sid(name: str) -> str:
    """Return a shard id in AWS's format (at least 28 characters) for a readable name."""
    return f"shardId-00000001796416094863-{name}"


def shard(name: str, start: int, end: int | None = None, parent: str | None = None) -> dict:
    numbers = {"StartingSequenceNumber": seq(start)}
    if end is not None:
        numbers["EndingSequenceNumber"] = seq(end)
    description = {"ShardId": sid(name), "SequenceNumberRange": numbers}
    if parent:
        description["ParentShardId"] = sid(parent)
    return description


def expect_listing(stubber, arn: str, *pages: list[dict]) -> None:
    """Queue DescribeStream responses, one page per list, linked by LastEvaluatedShardId."""
    previous = None
    for index, shards in enumerate(pages):
        description = {"StreamArn": arn, "StreamStatus": "ENABLED", "Shards": shards}
        if index < len(pages) - 1:
            description["LastEvaluatedShardId"] = shards[-1]["ShardId"]
        expected = {"StreamArn": arn}
        if previous:
            expected["ExclusiveStartShardId"] = previous
        stubber.add_response("describe_stream", {"StreamDescription": description}, expected)
        previous = description.get("LastEvaluatedShardId")


def expect_iterator(stubber, arn: str, name: str, iterator: str, after: int | None = None) -> None:
    expected = {"StreamArn": arn, "ShardId": sid(name)}
    if after is None:
        expected["ShardIteratorType"] = "TRIM_HORIZON"
    else:
        expected.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=seq(after))
    stubber.add_response("get_shard_iterator", {"ShardIterator": iterator}, expected)


def expect_page(stubber, iterator: str, records: list[dict], next_iterator: str | None) -> None:
    page = {"Records": records}
    if next_iterator:
        page["NextShardIterator"] = next_iterator
    stubber.add_response("get_records", page, {"ShardIterator": iterator, "Limit": stream.PAGE_LIMIT})


def expect_tip(stubber, iterator: str) -> str:
    """Queue the empty pages that end a run at an open shard's tip; return the iterator kept for the next run."""
    for index in range(stream.EMPTY_PAGES_AT_TIP):
        following = f"{iterator}-empty-{index}"
        expect_page(stubber, iterator, [], following)
        iterator = following
    return iterator


def checkpoint(name: str, arn: str = ARN) -> ShardCheckpoint:
    return ShardCheckpoint.objects.get(stream_arn=arn, shard_id=sid(name))


def replicated_keys() -> list[str]:
    return [row["dynamoKey"] for row in clickhouse_rows()]


def test_list_shards_follows_pagination(streams):
    client, stubber = streams
    expect_listing(stubber, ARN, [shard("shard-a", 1, 9)], [shard("shard-b", 10, 19)], [shard("shard-c", 20)])

    shards = list_shards(client, ARN)

    assert [item["ShardId"] for item in shards] == [sid("shard-a"), sid("shard-b"), sid("shard-c")]


def test_split_reads_parent_to_end_before_children(streams):
    client, stubber = streams
    ShardCheckpoint.objects.create(stream_arn=ARN, shard_id=sid("parent"), sequence_number=seq(100))
    # The listing pages put a child before its parent; the run must not.
    expect_listing(
        stubber,
        ARN,
        [shard("child-a", 200, parent="parent")],
        [shard("parent", 1, 102), shard("child-b", 300, parent="parent")],
    )
    expect_iterator(stubber, ARN, "parent", "parent-1", after=100)
    # A closed shard is read through empty pages until its iterator ends;
    # the records of its last page still count.
    expect_page(stubber, "parent-1", [], "parent-2")
    expect_page(stubber, "parent-2", [stream_record(101), stream_record(102)], None)
    expect_iterator(stubber, ARN, "child-a", "child-a-1")
    expect_page(stubber, "child-a-1", [stream_record(201)], "child-a-2")
    expect_tip(stubber, "child-a-2")
    expect_iterator(stubber, ARN, "child-b", "child-b-1")
    expect_page(stubber, "child-b-1", [stream_record(301)], "child-b-2")
    expect_tip(stubber, "child-b-2")

    stats = Replicator(streams=client, stream_arn=ARN).run()

    assert checkpoint("parent").finished
    assert checkpoint("parent").sequence_number == seq(102)
    assert checkpoint("child-a").sequence_number == seq(201)
    assert not checkpoint("child-a").finished
    assert checkpoint("child-b").sequence_number == seq(301)
    assert replicated_keys() == sorted(key_for(number) for number in (101, 102, 201, 301))
    assert stats.records_read == 4
    assert stats.caught_up


def test_trimmed_away_parent_is_not_waited_for(streams):
    client, stubber = streams
    expect_listing(stubber, ARN, [shard("orphan-child", 500, parent="trimmed-parent")])
    expect_iterator(stubber, ARN, "orphan-child", "orphan-1")
    expect_page(stubber, "orphan-1", [stream_record(501)], "orphan-2")
    expect_tip(stubber, "orphan-2")

    Replicator(streams=client, stream_arn=ARN).run()

    assert checkpoint("orphan-child").sequence_number == seq(501)
    assert replicated_keys() == [key_for(501)]


def test_child_waits_for_throttled_parent(streams, monkeypatch):
    client, stubber = streams
    monkeypatch.setattr(stream, "THROTTLE_BACKOFF_SECONDS", 0.001)
    listing = [shard("parent", 1, 9), shard("child", 10, parent="parent")]

    expect_listing(stubber, ARN, listing)
    expect_iterator(stubber, ARN, "parent", "parent-1")
    for _ in range(stream.THROTTLE_ATTEMPTS):
        stubber.add_client_error(
            "get_records",
            service_error_code="LimitExceededException",
            http_status_code=400,
            expected_params={"ShardIterator": "parent-1", "Limit": stream.PAGE_LIMIT},
        )
    first = Replicator(streams=client, stream_arn=ARN).run()

    assert not first.caught_up
    assert first.throttled == stream.THROTTLE_ATTEMPTS
    assert not ShardCheckpoint.objects.filter(shard_id=sid("child")).exists(), "child must wait for its parent"

    expect_listing(stubber, ARN, listing)
    expect_iterator(stubber, ARN, "parent", "parent-again")
    expect_page(stubber, "parent-again", [stream_record(5)], None)
    expect_iterator(stubber, ARN, "child", "child-1")
    expect_page(stubber, "child-1", [stream_record(11)], "child-2")
    expect_tip(stubber, "child-2")
    second = Replicator(streams=client, stream_arn=ARN).run()

    assert second.caught_up
    assert checkpoint("parent").finished
    assert replicated_keys() == sorted([key_for(5), key_for(11)])


def test_throttled_page_is_retried_with_backoff(streams, monkeypatch):
    client, stubber = streams
    monkeypatch.setattr(stream, "THROTTLE_BACKOFF_SECONDS", 0.001)
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_iterator(stubber, ARN, "open", "open-1")
    stubber.add_client_error(
        "get_records",
        service_error_code="ThrottlingException",
        http_status_code=400,
        expected_params={"ShardIterator": "open-1", "Limit": stream.PAGE_LIMIT},
    )
    expect_page(stubber, "open-1", [stream_record(2)], "open-2")
    expect_tip(stubber, "open-2")

    stats = Replicator(streams=client, stream_arn=ARN).run()

    assert stats.throttled == 1
    assert stats.caught_up
    assert replicated_keys() == [key_for(2)]


def test_throttled_iterator_skips_shard_until_next_run(streams, monkeypatch):
    client, stubber = streams
    monkeypatch.setattr(stream, "THROTTLE_BACKOFF_SECONDS", 0.001)
    expect_listing(stubber, ARN, [shard("busy", 1), shard("calm", 100)])
    for _ in range(stream.THROTTLE_ATTEMPTS):
        stubber.add_client_error(
            "get_shard_iterator",
            service_error_code="LimitExceededException",
            http_status_code=400,
            expected_params={"StreamArn": ARN, "ShardId": sid("busy"), "ShardIteratorType": "TRIM_HORIZON"},
        )
    expect_iterator(stubber, ARN, "calm", "calm-1")
    expect_page(stubber, "calm-1", [stream_record(101)], "calm-2")
    expect_tip(stubber, "calm-2")

    stats = Replicator(streams=client, stream_arn=ARN).run()

    assert not stats.caught_up
    assert checkpoint("busy").sequence_number == ""
    assert replicated_keys() == [key_for(101)], "the other shard is still read"


def test_missing_next_iterator_ends_shard(streams):
    client, stubber = streams
    # Listed as open, but closed by the time it is read: no NextShardIterator.
    expect_listing(stubber, ARN, [shard("closing", 1)])
    expect_iterator(stubber, ARN, "closing", "closing-1")
    expect_page(stubber, "closing-1", [stream_record(3)], None)

    Replicator(streams=client, stream_arn=ARN).run()

    assert checkpoint("closing").finished
    assert checkpoint("closing").sequence_number == seq(3)


def test_open_tip_iterator_is_kept_for_next_run(streams):
    client, stubber = streams
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_iterator(stubber, ARN, "open", "open-1")
    expect_page(stubber, "open-1", [stream_record(7)], "open-2")
    kept = expect_tip(stubber, "open-2")
    first = Replicator(streams=client, stream_arn=ARN).run()

    # The next run goes on from the kept iterator: no GetShardIterator call.
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_page(stubber, kept, [stream_record(8)], "open-3")
    expect_tip(stubber, "open-3")
    second = Replicator(streams=client, stream_arn=ARN).run()

    assert first.records_read == 1
    assert second.records_read == 1
    assert not checkpoint("open").finished
    assert checkpoint("open").sequence_number == seq(8)
    assert replicated_keys() == [key_for(7), key_for(8)]


def test_expired_iterator_is_renewed_from_checkpoint(streams):
    client, stubber = streams
    ShardCheckpoint.objects.create(stream_arn=ARN, shard_id=sid("open"), sequence_number=seq(40))
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_iterator(stubber, ARN, "open", "stale", after=40)
    stubber.add_client_error(
        "get_records",
        service_error_code="ExpiredIteratorException",
        http_status_code=400,
        expected_params={"ShardIterator": "stale", "Limit": stream.PAGE_LIMIT},
    )
    expect_iterator(stubber, ARN, "open", "fresh", after=40)
    expect_page(stubber, "fresh", [stream_record(41)], "fresh-2")
    expect_tip(stubber, "fresh-2")
    Replicator(streams=client, stream_arn=ARN).run()

    assert checkpoint("open").sequence_number == seq(41)

    # A later run in another process (nothing kept in memory) reads normally.
    stream.iterator_cache.clear()
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_iterator(stubber, ARN, "open", "next", after=41)
    expect_page(stubber, "next", [stream_record(42)], "next-2")
    expect_tip(stubber, "next-2")
    Replicator(streams=client, stream_arn=ARN).run()

    assert checkpoint("open").sequence_number == seq(42)
    assert replicated_keys() == [key_for(41), key_for(42)]


def write_completed(key_number: int) -> str:
    """Store a completed record in DynamoDB Local, as the API would, and return its key."""
    key = key_for(key_number)
    dynamo.write_record(
        {
            "dynamoKey": key,
            "status": "completed",
            "downstream_repo": "acme-ai/torch-npu",
            "upstream_repo": "pytorch/pytorch",
            "pr_number": 4242,
            "event_type": "pull_request",
            "delivery_id": f"delivery-{key_number}",
            "workflow_name": "npu-ci",
            "job_name": f"job-{key_number}",
            "check_run_id": str(key_number),
            "run_attempt": 1,
            "conclusion": "failure",
            "completed_at": "2026-12-04T09:45:00Z",
        }
    )
    return key


def test_trimmed_data_restarts_shard_and_reconciles_gap(streams):
    client, stubber = streams
    arn = current_stream_arn()
    last_read = datetime.now(UTC) - timedelta(hours=30)
    ShardCheckpoint.objects.create(
        stream_arn=arn, shard_id=sid("open"), sequence_number=seq(100), last_record_at=last_read
    )
    # Written during the gap: in DynamoDB, but its stream record was trimmed.
    lost_key = write_completed(900)

    expect_listing(stubber, arn, [shard("open", 1)])
    stubber.add_client_error(
        "get_shard_iterator",
        service_error_code="TrimmedDataAccessException",
        http_status_code=400,
        expected_params={
            "StreamArn": arn,
            "ShardId": sid("open"),
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "SequenceNumber": seq(100),
        },
    )
    expect_iterator(stubber, arn, "open", "horizon")
    expect_page(stubber, "horizon", [stream_record(500)], "horizon-2")
    expect_tip(stubber, "horizon-2")

    stats = replicate_once(deadline_seconds=20, streams=client)

    assert stats is not None
    assert stats.gaps == 1
    gap = StreamGap.objects.get()
    assert gap.shard_id == sid("open")
    assert gap.after_sequence_number == seq(100)
    assert gap.since == last_read - stream.GAP_MARGIN
    assert gap.reconciled_at is not None
    assert gap.records_upserted == 1
    assert checkpoint("open", arn).sequence_number == seq(500)
    assert sorted(replicated_keys()) == sorted([key_for(500), lost_key])

    # The next run (another process: nothing kept in memory) reads from the
    # new checkpoint instead of hitting the trimmed position again.
    stream.iterator_cache.clear()
    expect_listing(stubber, arn, [shard("open", 1)])
    expect_iterator(stubber, arn, "open", "after-gap", after=500)
    expect_tip(stubber, "after-gap")
    again = replicate_once(deadline_seconds=20, streams=client)

    assert again is not None
    assert again.gaps == 0
    assert StreamGap.objects.count() == 1


def test_trimmed_page_restarts_shard_at_trim_horizon(streams):
    client, stubber = streams
    ShardCheckpoint.objects.create(stream_arn=ARN, shard_id=sid("open"), sequence_number=seq(10))
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_iterator(stubber, ARN, "open", "old", after=10)
    stubber.add_client_error(
        "get_records",
        service_error_code="TrimmedDataAccessException",
        http_status_code=400,
        expected_params={"ShardIterator": "old", "Limit": stream.PAGE_LIMIT},
    )
    expect_iterator(stubber, ARN, "open", "horizon")
    expect_page(stubber, "horizon", [stream_record(60)], "horizon-2")
    expect_tip(stubber, "horizon-2")

    stats = Replicator(streams=client, stream_arn=ARN).run()

    assert stats.gaps == 1
    gap = StreamGap.objects.get()
    assert gap.since is None, "no record time known: the reconcile must scan everything"
    assert checkpoint("open").sequence_number == seq(60)


def test_unfinished_shard_trimmed_from_listing_is_a_gap(streams):
    client, stubber = streams
    ShardCheckpoint.objects.create(stream_arn=ARN, shard_id=sid("vanished"), sequence_number=seq(5))
    ShardCheckpoint.objects.create(stream_arn=ARN, shard_id=sid("done"), sequence_number=seq(9), finished=True)
    expect_listing(stubber, ARN, [shard("open", 20)])
    expect_iterator(stubber, ARN, "open", "open-1")
    expect_tip(stubber, "open-1")

    stats = Replicator(streams=client, stream_arn=ARN).run()

    assert stats.gaps == 1
    assert StreamGap.objects.get().shard_id == sid("vanished")
    assert list(ShardCheckpoint.objects.values_list("shard_id", flat=True)) == [sid("open")]


def test_ttl_remove_keeps_row_and_manual_remove_deletes(streams):
    client, stubber = streams
    ttl = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    expect_listing(stubber, ARN, [shard("open", 1)])
    expect_iterator(stubber, ARN, "open", "open-1")
    expect_page(stubber, "open-1", [stream_record(1), stream_record(2)], "open-2")
    expect_page(
        stubber,
        "open-2",
        [stream_record(1, "REMOVE", identity=ttl, sequence=3), stream_record(2, "REMOVE", sequence=4)],
        "open-3",
    )
    expect_tip(stubber, "open-3")

    Replicator(streams=client, stream_arn=ARN).run()

    assert replicated_keys() == [key_for(1)]
