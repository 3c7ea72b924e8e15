"""Tail the records table's DynamoDB stream into ClickHouse.

One run (`replicate_once`) walks every shard of the table's current stream,
parents before children, each from its checkpoint. A batch (one GetRecords
page) goes to ClickHouse first and the checkpoint moves after, so a crash
in between re-sends the batch. Before the insert the checkpoint stores the
batch's last sequence number, so the re-sent batch has the same records and
the same deduplication token (stream ARN, shard, first and last sequence
number), and ClickHouse drops the copy.

Reading rules:

- A closed shard (its listing has an EndingSequenceNumber) is read until
  GetRecords returns no NextShardIterator, through any empty pages. The
  records of its last page are written before it is marked finished.
- The open tip of a shard is read until EMPTY_PAGES_AT_TIP empty pages in a
  row. The iterator it ended on is kept in memory (never stored) for the
  next run, so a long empty stretch is crossed over several runs instead of
  being walked again from the checkpoint each time. Shard iterators expire
  after 15 minutes; an expired one is replaced from the checkpoint.
- A child shard is read only after its parent is finished, from
  TRIM_HORIZON. A parent no longer listed has been trimmed away and is not
  waited for.
- Data trimmed before it was read restarts the shard at TRIM_HORIZON and is
  recorded as a StreamGap, which the run then reconciles from DynamoDB.
"""

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from clickhouse_connect.driver.exceptions import ClickHouseError
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone as django_timezone

from oot_ingest import dynamo
from replicator import clickhouse, rollup, status
from replicator.checkpoints import (
    CheckpointConflict,
    advance_checkpoint,
    load_checkpoint,
    mark_finished,
    mark_pending,
    restart_at_trim_horizon,
    sequence_value,
)
from replicator.models import ShardCheckpoint, StreamGap
from replicator.writer import insert_rows, rows_for_batch

logger = logging.getLogger(__name__)

PAGE_LIMIT = 1000
EMPTY_PAGES_AT_TIP = 3
# A kept iterator is used only while clearly younger than its 15-minute life.
ITERATOR_MAX_AGE_SECONDS = 10 * 60
THROTTLE_CODES = {
    "LimitExceededException",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
}
THROTTLE_ATTEMPTS = 4
THROTTLE_BACKOFF_SECONDS = 0.2
# Iterator renewals per shard and run before an ExpiredIteratorException is raised.
ITERATOR_RENEWALS = 3
# The reconcile after a gap starts this long before the time kept for the
# last record read. That time is the writer's clock (updated_at) or the
# stream's ApproximateCreationDateTime, which AWS rounds down to the second
# and DynamoDB Local to the minute. Other writers' clocks may also lag it.
GAP_MARGIN = timedelta(minutes=5)
DEFAULT_DEADLINE_SECONDS = 40.0


class Throttled(Exception):
    """DynamoDB Streams kept throttling one call, so the run leaves that shard for the next run."""


@dataclass
class RunStats:
    """Figures of one replication run, with times in seconds."""

    records_read: int = 0
    rows_inserted: int = 0
    batches: int = 0
    dead_letters: int = 0
    shards_read: int = 0
    gaps: int = 0
    throttled: int = 0
    # False when the run stopped before reading every shard to its end or tip.
    caught_up: bool = True
    max_lag_seconds: float | None = None
    read_seconds: float = 0.0
    # Conversion and insert, of which conversion alone. Checkpoint updates are timed apart.
    write_seconds: float = 0.0
    convert_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started)

    def observe_lag(self, written_at: datetime | None, visible_at: datetime) -> None:
        """Keep the longest time from a record's write to the end of its batch's insert."""
        if written_at is None:
            return
        lag = max(0.0, (visible_at - written_at).total_seconds())
        self.max_lag_seconds = lag if self.max_lag_seconds is None else max(self.max_lag_seconds, lag)


def streams_client():
    # A GetRecords page of 1,000 large images took over 2 s on a busy DynamoDB
    # Local. Three attempts of 30 s each still end within the lock's 120 s TTL.
    options = {
        "region_name": settings.AWS_REGION,
        "config": Config(connect_timeout=2, read_timeout=30, retries={"mode": "standard", "total_max_attempts": 3}),
    }
    if settings.DYNAMODB_ENDPOINT:
        options.update(
            endpoint_url=settings.DYNAMODB_ENDPOINT, aws_access_key_id="local", aws_secret_access_key="local"
        )
    return boto3.client("dynamodbstreams", **options)


def current_stream_arn() -> str | None:
    description = dynamo.client().describe_table(TableName=settings.DYNAMODB_TABLE)["Table"]
    return description.get("LatestStreamArn")


def list_shards(streams, stream_arn: str) -> list[dict]:
    """Return every shard of the stream, following DescribeStream pagination."""
    shards: list[dict] = []
    arguments = {"StreamArn": stream_arn}
    while True:
        description = streams.describe_stream(**arguments)["StreamDescription"]
        shards.extend(description.get("Shards", []))
        last = description.get("LastEvaluatedShardId")
        if not last:
            return shards
        arguments["ExclusiveStartShardId"] = last


def order_parents_first(shards: list[dict]) -> list[dict]:
    """Sort shards so that every parent comes before its children, older lineages first."""
    by_id = {shard["ShardId"]: shard for shard in shards}
    ordered: list[dict] = []
    placed: set[str] = set()

    def place(shard: dict, trail: set[str]) -> None:
        shard_id = shard["ShardId"]
        if shard_id in placed or shard_id in trail:
            return
        parent = by_id.get(shard.get("ParentShardId", ""))
        if parent is not None:
            place(parent, trail | {shard_id})
        placed.add(shard_id)
        ordered.append(shard)

    def start(shard: dict) -> int:
        return sequence_value(shard.get("SequenceNumberRange", {}).get("StartingSequenceNumber", ""))

    for shard in sorted(shards, key=start):
        place(shard, set())
    return ordered


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _sequence(record: dict) -> str:
    return record["dynamodb"]["SequenceNumber"]


def _written_at(record: dict) -> datetime | None:
    """Return when the record was written: the item's updated_at, else the stream's approximate time."""
    data = record.get("dynamodb") or {}
    stamp = (data.get("NewImage") or {}).get("updated_at", {}).get("S")
    if stamp:
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            pass
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        return created if created.tzinfo else created.replace(tzinfo=UTC)
    if isinstance(created, (int, float)):
        return datetime.fromtimestamp(created, UTC)
    return None


class IteratorCache:
    """Shard iterators kept in this process between runs, valid only for an unchanged checkpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[str, str, float]] = {}

    def take(self, stream_arn: str, shard_id: str, sequence_number: str) -> str | None:
        with self._lock:
            entry = self._entries.pop((stream_arn, shard_id), None)
        if entry is None:
            return None
        kept_for, iterator, kept_at = entry
        if kept_for != sequence_number or time.monotonic() - kept_at > ITERATOR_MAX_AGE_SECONDS:
            return None
        return iterator

    def keep(self, stream_arn: str, shard_id: str, sequence_number: str, iterator: str) -> None:
        with self._lock:
            self._entries[(stream_arn, shard_id)] = (sequence_number, iterator, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


iterator_cache = IteratorCache()


class Replicator:
    """Reads one stream's shards and writes completed records to ClickHouse.

    `streams` is the DynamoDB Streams client (tests pass a stubbed one).
    `should_stop` is polled between pages; the runner sets it when its lock
    is lost, so a run never continues without the lock.
    """

    def __init__(
        self,
        streams=None,
        stream_arn: str | None = None,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.streams = streams or streams_client()
        self.stream_arn = stream_arn or current_stream_arn()
        self.deadline = time.monotonic() + deadline_seconds
        self.should_stop = should_stop or (lambda: False)
        self.stats = RunStats()

    def run(self) -> RunStats:
        self.stats.started = time.monotonic()
        try:
            self._run()
        finally:
            self.stats.finished = time.monotonic()
        return self.stats

    def _run(self) -> None:
        if not self.stream_arn:
            logger.warning("table %s has no stream; nothing to replicate", settings.DYNAMODB_TABLE)
            return
        try:
            shards = order_parents_first(self._call(list_shards, self.streams, self.stream_arn))
        except Throttled:
            logger.warning("DescribeStream throttled stream=%s; trying again next run", self.stream_arn)
            self.stats.caught_up = False
            return
        listed = {shard["ShardId"] for shard in shards}
        checkpoints = {
            checkpoint.shard_id: checkpoint for checkpoint in ShardCheckpoint.objects.filter(stream_arn=self.stream_arn)
        }
        self._forget_vanished_shards(checkpoints, listed)
        finished = {shard_id for shard_id, checkpoint in checkpoints.items() if checkpoint.finished}

        for shard in shards:
            if self._out_of_time():
                self.stats.caught_up = False
                return
            shard_id = shard["ShardId"]
            if shard_id in finished:
                continue
            parent_id = shard.get("ParentShardId", "")
            if parent_id in listed and parent_id not in finished:
                # The parent was not read to its end in this run, and its records come first.
                self.stats.caught_up = False
                continue
            checkpoint = checkpoints.get(shard_id) or load_checkpoint(self.stream_arn, shard)
            try:
                checkpoint = self.read_shard(shard, checkpoint)
            except Throttled as error:
                # Batches written so far are checkpointed, and the rest waits for the next run.
                logger.warning("DynamoDB Streams throttled shard=%s error=%s; reading it next run", shard_id, error)
                self.stats.caught_up = False
                continue
            if checkpoint.finished:
                finished.add(shard_id)

    def _out_of_time(self) -> bool:
        return time.monotonic() > self.deadline or self.should_stop()

    def _forget_vanished_shards(self, checkpoints: dict[str, ShardCheckpoint], listed: set[str]) -> None:
        """Delete checkpoints of shards trimmed out of the listing, recording a gap for an unfinished one."""
        for shard_id in [shard_id for shard_id in checkpoints if shard_id not in listed]:
            checkpoint = checkpoints.pop(shard_id)
            if not checkpoint.finished:
                logger.error(
                    "shard trimmed away before it was read to its end stream=%s shard=%s sequence_number=%s",
                    self.stream_arn,
                    shard_id,
                    checkpoint.sequence_number or "TRIM_HORIZON",
                )
                self._record_gap(checkpoint)
            checkpoint.delete()

    # --- calls to DynamoDB Streams ------------------------------------------

    def _call(self, function, *args, **kwargs):
        """Call DynamoDB Streams, backing off while it throttles, and raise Throttled when it keeps throttling."""
        for attempt in range(1, THROTTLE_ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except ClientError as error:
                if _error_code(error) not in THROTTLE_CODES:
                    raise
                self.stats.throttled += 1
                if attempt == THROTTLE_ATTEMPTS:
                    raise Throttled(_error_code(error)) from error
                delay = THROTTLE_BACKOFF_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random())
                logger.info("DynamoDB Streams throttled attempt=%s; retrying in %.2f s", attempt, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _iterator(self, shard_id: str, checkpoint: ShardCheckpoint) -> tuple[str | None, ShardCheckpoint]:
        """Return an iterator just past the checkpoint, recovering from trimmed data."""
        if not checkpoint.sequence_number:
            return self._trim_horizon_iterator(shard_id), checkpoint
        try:
            response = self._call(
                self.streams.get_shard_iterator,
                StreamArn=self.stream_arn,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                SequenceNumber=checkpoint.sequence_number,
            )
            return response.get("ShardIterator"), checkpoint
        except ClientError as error:
            if _error_code(error) != "TrimmedDataAccessException":
                raise
        checkpoint = self._recover_trimmed(checkpoint)
        return self._trim_horizon_iterator(shard_id), checkpoint

    def _trim_horizon_iterator(self, shard_id: str) -> str | None:
        response = self._call(
            self.streams.get_shard_iterator,
            StreamArn=self.stream_arn,
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )
        return response.get("ShardIterator")

    def _recover_trimmed(self, checkpoint: ShardCheckpoint) -> ShardCheckpoint:
        self._record_gap(checkpoint)
        return restart_at_trim_horizon(checkpoint)

    def _record_gap(self, checkpoint: ShardCheckpoint) -> None:
        now = django_timezone.now()
        since = checkpoint.last_record_at - GAP_MARGIN if checkpoint.last_record_at else None
        logger.error(
            "stream data trimmed before it was read stream=%s shard=%s after_sequence_number=%s: records written "
            "from %s to %s may be missing; restarting the shard at TRIM_HORIZON and reconciling that range",
            self.stream_arn,
            checkpoint.shard_id,
            checkpoint.sequence_number or "TRIM_HORIZON",
            since.isoformat() if since else "the table's beginning",
            now.isoformat(),
        )
        StreamGap.objects.create(
            stream_arn=self.stream_arn,
            shard_id=checkpoint.shard_id,
            after_sequence_number=checkpoint.sequence_number,
            since=since,
            until=now,
        )
        self.stats.gaps += 1

    # --- one shard -------------------------------------------------------------

    def read_shard(self, shard: dict, checkpoint: ShardCheckpoint) -> ShardCheckpoint:
        """Read one shard from its checkpoint to its end (closed) or tip (open) and return the new checkpoint."""
        shard_id = shard["ShardId"]
        self.stats.shards_read += 1
        iterator = iterator_cache.take(self.stream_arn, shard_id, checkpoint.sequence_number)
        if iterator is None:
            iterator, checkpoint = self._iterator(shard_id, checkpoint)
        # Records of an interrupted batch, collected again up to its pending boundary.
        interrupted: list[dict] = []
        empty_pages = renewals = trims = 0

        while iterator:
            if self._out_of_time():
                self.stats.caught_up = False
                return checkpoint
            started = time.monotonic()
            try:
                page = self._call(self.streams.get_records, ShardIterator=iterator, Limit=PAGE_LIMIT)
            except ClientError as error:
                code = _error_code(error)
                if code == "ExpiredIteratorException" and renewals < ITERATOR_RENEWALS:
                    renewals += 1
                    interrupted = []
                    logger.info("shard iterator expired shard=%s; renewing it from the checkpoint", shard_id)
                    iterator, checkpoint = self._iterator(shard_id, checkpoint)
                    continue
                if code == "TrimmedDataAccessException" and trims == 0:
                    trims += 1
                    interrupted = []
                    checkpoint = self._recover_trimmed(checkpoint)
                    iterator = self._trim_horizon_iterator(shard_id)
                    continue
                raise
            finally:
                self.stats.read_seconds += time.monotonic() - started

            records = page.get("Records", [])
            next_iterator = page.get("NextShardIterator")
            self.stats.records_read += len(records)
            if records:
                empty_pages = 0
            else:
                empty_pages += 1

            if checkpoint.pending_sequence_number and records:
                records, interrupted, checkpoint = self._complete_pending_batch(
                    shard_id, checkpoint, records, interrupted, ended=not next_iterator
                )
            if records:
                checkpoint = self.write_batch(shard_id, records, checkpoint)

            iterator = next_iterator
            if (
                iterator
                and empty_pages >= EMPTY_PAGES_AT_TIP
                and "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})
            ):
                if not interrupted:
                    iterator_cache.keep(self.stream_arn, shard_id, checkpoint.sequence_number, iterator)
                return checkpoint

        checkpoint = mark_finished(checkpoint)
        logger.info("shard finished stream=%s shard=%s", self.stream_arn, shard_id)
        return checkpoint

    def _complete_pending_batch(
        self, shard_id: str, checkpoint: ShardCheckpoint, records: list[dict], interrupted: list[dict], ended: bool
    ) -> tuple[list[dict], list[dict], ShardCheckpoint]:
        """Re-send a batch interrupted before its checkpoint, with its original boundaries.

        Return the page's records past the batch, the records of the batch
        collected so far (when it continues on the next page), and the
        checkpoint.
        """
        boundary = sequence_value(checkpoint.pending_sequence_number)
        interrupted = interrupted + [record for record in records if sequence_value(_sequence(record)) <= boundary]
        rest = [record for record in records if sequence_value(_sequence(record)) > boundary]
        reached = bool(interrupted) and sequence_value(_sequence(interrupted[-1])) == boundary
        if not (rest or ended or reached):
            return [], interrupted, checkpoint
        logger.info(
            "re-sending a batch interrupted before its checkpoint shard=%s last_sequence_number=%s records=%s",
            shard_id,
            checkpoint.pending_sequence_number,
            len(interrupted),
        )
        if interrupted:
            checkpoint = self.write_batch(shard_id, interrupted, checkpoint)
        return rest, [], checkpoint

    def write_batch(self, shard_id: str, records: list[dict], checkpoint: ShardCheckpoint) -> ShardCheckpoint:
        """Insert the completed records of one batch, then move the checkpoint past it."""
        first, last = _sequence(records[0]), _sequence(records[-1])
        started = time.monotonic()
        rows, dead_letters = rows_for_batch(self.stream_arn, shard_id, records)
        self.stats.dead_letters += dead_letters
        self.stats.convert_seconds += time.monotonic() - started
        self.stats.write_seconds += time.monotonic() - started

        if rows:
            started = time.monotonic()
            checkpoint = mark_pending(checkpoint, last)
            self.stats.checkpoint_seconds += time.monotonic() - started

            started = time.monotonic()
            insert_rows(rows, dedup_token=f"{self.stream_arn}|{shard_id}|{first}|{last}")
            self.stats.write_seconds += time.monotonic() - started
            self.stats.rows_inserted += len(rows)

        visible_at = datetime.now(UTC)
        for record in records:
            self.stats.observe_lag(_written_at(record), visible_at)

        started = time.monotonic()
        checkpoint = advance_checkpoint(checkpoint, last, _written_at(records[-1]))
        self.stats.checkpoint_seconds += time.monotonic() - started
        self.stats.batches += 1
        return checkpoint


RUN_ERRORS = (ClientError, BotoCoreError, ClickHouseError, clickhouse.ClickHouseBusy, OSError, CheckpointConflict)


def replicate_once(
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    should_stop: Callable[[], bool] | None = None,
    streams=None,
) -> RunStats | None:
    """Run one replication pass over the current stream, reconcile open gaps and record the statistics.

    Return None when the run failed. The failure is logged and stored in
    ReplicatorStatus, and checkpoints stay where the last good batch left them.
    """
    try:
        replicator = Replicator(streams=streams, deadline_seconds=deadline_seconds, should_stop=should_stop)
    except (ClientError, BotoCoreError) as error:
        status.record_failure(None, f"cannot describe table {settings.DYNAMODB_TABLE}: {error}")
        return None
    if not replicator.stream_arn:
        return replicator.run()
    try:
        stats = replicator.run()
    except (*RUN_ERRORS, DatabaseError) as error:
        status.record_failure(replicator.stream_arn, f"{type(error).__name__}: {error}")
        return None
    status.record_success(replicator.stream_arn, stats)
    reconcile_open_gaps(replicator.stream_arn)
    fold_rollups()
    return stats


def fold_rollups() -> None:
    """Fold the rows this run inserted into the page rollups; after a failure, the next run folds them."""
    try:
        rollup.catch_up()
    except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.error("rollup fold failed: %s", str(error)[:500])


def reconcile_open_gaps(stream_arn: str) -> None:
    """Reconcile the stream's recorded gaps that have not been reconciled yet, with one scan from the earliest."""
    from replicator.reconcile import reconcile

    gaps = list(StreamGap.objects.filter(stream_arn=stream_arn, reconciled_at__isnull=True))
    if not gaps:
        return
    starts = [gap.since for gap in gaps]
    since = None if None in starts else min(starts)
    try:
        result = reconcile(since=since)
    except (ClientError, BotoCoreError, ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.error("reconcile of stream gaps failed gaps=%s since=%s error=%s", len(gaps), since, error)
        StreamGap.objects.filter(pk__in=[gap.pk for gap in gaps]).update(last_error=str(error)[:2000])
        return
    StreamGap.objects.filter(pk__in=[gap.pk for gap in gaps]).update(
        reconciled_at=django_timezone.now(), records_upserted=result.upserted, last_error=""
    )
    logger.info("stream gaps reconciled gaps=%s since=%s upserted=%s", len(gaps), since, result.upserted)
