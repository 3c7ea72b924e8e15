"""Tail the records table's DynamoDB stream into ClickHouse.

One run (`replicate_once`) walks every shard of the table's current stream,
parents before children, from each shard's checkpoint. A batch of stream
records is inserted into ClickHouse first and the checkpoint advanced after,
so a crash between the two re-sends the batch; the insert's deduplication
token (stream ARN, shard, first and last sequence number) makes ClickHouse
drop the copy.
"""

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from clickhouse_connect.driver.exceptions import ClickHouseError
from django.conf import settings
from django.db import transaction
from django.utils import timezone as django_timezone

from oot_ingest import dynamo
from oot_ingest.vocabulary import STATUS_COMPLETED
from replicator import clickhouse
from replicator.convert import COLUMNS, ConversionError, deserialize, to_row
from replicator.models import DeadLetter, ReplicatorStatus, ShardCheckpoint

logger = logging.getLogger(__name__)

PAGE_LIMIT = 1000
# An open shard returns empty pages at its tip; after this many in a row the
# run moves on. A closed shard is read until its iterator ends.
EMPTY_PAGES_AT_TIP = 2
INSERT_ATTEMPTS = 4
TTL_PRINCIPAL = "dynamodb.amazonaws.com"


@dataclass
class RunStats:
    records_read: int = 0
    rows_inserted: int = 0
    dead_letters: int = 0
    shards_read: int = 0
    max_lag_seconds: float | None = None
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    gaps: list[tuple[str, str]] = field(default_factory=list)

    def observe_lag(self, created: datetime | None) -> None:
        if created is None:
            return
        lag = (datetime.now(UTC) - created).total_seconds()
        self.max_lag_seconds = lag if self.max_lag_seconds is None else max(self.max_lag_seconds, lag)


def streams_client():
    options = {
        "region_name": settings.AWS_REGION,
        "config": Config(connect_timeout=2, read_timeout=10, retries={"mode": "standard", "total_max_attempts": 3}),
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
    """Sort shards so that every parent comes before its children."""
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

    for shard in sorted(shards, key=lambda item: item["SequenceNumberRange"].get("StartingSequenceNumber", "")):
        place(shard, set())
    return ordered


class Replicator:
    """Reads one stream's shards and writes completed records to ClickHouse."""

    def __init__(self, streams=None, stream_arn: str | None = None, deadline_seconds: float = 50.0, on_progress=None):
        self.streams = streams or streams_client()
        self.stream_arn = stream_arn or current_stream_arn()
        self.deadline = time.monotonic() + deadline_seconds
        self.on_progress = on_progress or (lambda: None)
        self.stats = RunStats()

    def run(self) -> RunStats:
        if not self.stream_arn:
            logger.warning("table %s has no stream; nothing to replicate", settings.DYNAMODB_TABLE)
            return self.stats
        checkpoints = {
            checkpoint.shard_id: checkpoint for checkpoint in ShardCheckpoint.objects.filter(stream_arn=self.stream_arn)
        }
        shards = order_parents_first(list_shards(self.streams, self.stream_arn))
        listed = {shard["ShardId"] for shard in shards}

        for shard in shards:
            if time.monotonic() > self.deadline:
                break
            checkpoint = checkpoints.get(shard["ShardId"])
            if checkpoint is not None and checkpoint.finished:
                continue
            parent_id = shard.get("ParentShardId", "")
            parent = checkpoints.get(parent_id)
            # A parent no longer listed was trimmed away: do not wait for it.
            if parent_id in listed and not (parent is not None and parent.finished):
                continue
            checkpoints[shard["ShardId"]] = self.read_shard(shard, checkpoint)
        return self.stats

    def _iterator(self, shard_id: str, sequence_number: str) -> str | None:
        arguments = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if sequence_number:
            arguments.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=sequence_number)
        else:
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            return self.streams.get_shard_iterator(**arguments)["ShardIterator"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "TrimmedDataAccessException" or not sequence_number:
                raise
        self._note_gap(shard_id, sequence_number)
        return self.streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    def _note_gap(self, shard_id: str, sequence_number: str) -> None:
        checkpoint = ShardCheckpoint.objects.filter(stream_arn=self.stream_arn, shard_id=shard_id).first()
        since = checkpoint.updated_at.isoformat() if checkpoint else "unknown"
        logger.error(
            "stream data trimmed past the checkpoint shard=%s sequence_number=%s: records written since %s "
            "may be missing; restarting at TRIM_HORIZON and reconciling that range",
            shard_id,
            sequence_number,
            since,
        )
        self.stats.gaps.append((shard_id, since))

    def read_shard(self, shard: dict, checkpoint: ShardCheckpoint | None) -> ShardCheckpoint:
        shard_id = shard["ShardId"]
        if checkpoint is None:
            checkpoint, _ = ShardCheckpoint.objects.get_or_create(
                stream_arn=self.stream_arn,
                shard_id=shard_id,
                defaults={"parent_shard_id": shard.get("ParentShardId", "")},
            )
        self.stats.shards_read += 1
        closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
        iterator = self._iterator(shard_id, checkpoint.sequence_number)
        empty_pages = 0

        while iterator and time.monotonic() < self.deadline:
            started = time.monotonic()
            try:
                page = self.streams.get_records(ShardIterator=iterator, Limit=PAGE_LIMIT)
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code == "ExpiredIteratorException":
                    logger.info("shard iterator expired shard=%s; renewing from the checkpoint", shard_id)
                    iterator = self._iterator(shard_id, checkpoint.sequence_number)
                    continue
                if code == "TrimmedDataAccessException":
                    self._note_gap(shard_id, checkpoint.sequence_number)
                    iterator = self.streams.get_shard_iterator(
                        StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                    )["ShardIterator"]
                    continue
                raise
            self.stats.read_seconds += time.monotonic() - started

            records = page.get("Records", [])
            if records:
                self.write_batch(shard_id, records)
                checkpoint = advance_checkpoint(checkpoint, records[-1]["dynamodb"]["SequenceNumber"])
                self.on_progress()
                empty_pages = 0
            else:
                empty_pages += 1

            iterator = page.get("NextShardIterator")
            if not records and not closed and empty_pages >= EMPTY_PAGES_AT_TIP:
                return checkpoint

        if not iterator:
            ShardCheckpoint.objects.filter(pk=checkpoint.pk).update(finished=True)
            checkpoint.finished = True
            logger.info("shard finished shard=%s", shard_id)
        return checkpoint

    def write_batch(self, shard_id: str, records: list[dict]) -> None:
        """Insert the completed records of one page; conversion failures go to dead letters."""
        latest: dict[str, list] = {}
        for record in records:
            self.stats.records_read += 1
            data = record.get("dynamodb", {})
            self.stats.observe_lag(data.get("ApproximateCreationDateTime"))
            row = self._row_for(shard_id, record)
            if row is None:
                continue
            key = row[0]
            if key not in latest or row[COLUMNS.index("_version")] >= latest[key][COLUMNS.index("_version")]:
                latest[key] = row

        if not latest:
            return
        first = records[0]["dynamodb"]["SequenceNumber"]
        last = records[-1]["dynamodb"]["SequenceNumber"]
        token = f"{self.stream_arn}|{shard_id}|{first}|{last}"
        started = time.monotonic()
        insert_rows(list(latest.values()), dedup_token=token)
        self.stats.write_seconds += time.monotonic() - started
        self.stats.rows_inserted += len(latest)

    def _row_for(self, shard_id: str, record: dict) -> list | None:
        event = record.get("eventName")
        data = record.get("dynamodb", {})
        try:
            if event == "REMOVE":
                if _removed_by_ttl(record):
                    return None
                old = deserialize(data.get("OldImage", {}))
                if old.get("status") != STATUS_COMPLETED:
                    return None
                return to_row(old, deleted=True)
            new = deserialize(data.get("NewImage", {}))
            if new.get("status") != STATUS_COMPLETED:
                return None
            return to_row(new)
        except (ConversionError, TypeError, ValueError) as error:
            self._dead_letter(shard_id, record, str(error))
            return None

    def _dead_letter(self, shard_id: str, record: dict, reason: str) -> None:
        data = record.get("dynamodb", {})
        image = data.get("NewImage") or data.get("OldImage") or {}
        key = image.get("dynamoKey", {}).get("S", "") if isinstance(image.get("dynamoKey"), dict) else ""
        logger.error(
            "dead letter shard=%s sequence_number=%s dynamoKey=%s reason=%s",
            shard_id,
            data.get("SequenceNumber"),
            key,
            reason,
        )
        DeadLetter.objects.create(
            stream_arn=self.stream_arn,
            shard_id=shard_id,
            sequence_number=data.get("SequenceNumber", ""),
            dynamo_key=key[:2048],
            event_name=record.get("eventName", ""),
            reason=reason,
            image=json.dumps(image, default=str),
        )
        self.stats.dead_letters += 1


def _removed_by_ttl(record: dict) -> bool:
    identity = record.get("userIdentity") or {}
    return identity.get("Type") == "Service" and identity.get("PrincipalId") == TTL_PRINCIPAL


def insert_rows(rows: list[list], dedup_token: str | None = None) -> None:
    """Insert rows, retrying transient failures with jittered backoff; raise after the last attempt."""
    insert_settings = {"insert_deduplicate": 1}
    if dedup_token:
        insert_settings["insert_deduplication_token"] = dedup_token
    for attempt in range(1, INSERT_ATTEMPTS + 1):
        try:
            clickhouse.client().insert(clickhouse.TABLE, rows, column_names=list(COLUMNS), settings=insert_settings)
            return
        except (ClickHouseError, OSError) as error:
            if attempt == INSERT_ATTEMPTS:
                raise
            delay = min(8.0, 0.25 * 2**attempt) * (0.5 + random.random())
            logger.warning(
                "ClickHouse insert failed attempt=%s rows=%s error=%s; retrying in %.1fs",
                attempt,
                len(rows),
                error,
                delay,
            )
            time.sleep(delay)


def advance_checkpoint(checkpoint: ShardCheckpoint, sequence_number: str) -> ShardCheckpoint:
    """Move a checkpoint forward, never backwards: compare-and-set against the stored value."""
    with transaction.atomic():
        stored = ShardCheckpoint.objects.select_for_update().get(pk=checkpoint.pk)
        if stored.sequence_number and int(stored.sequence_number) >= int(sequence_number):
            logger.warning(
                "checkpoint not moved backwards shard=%s stored=%s offered=%s",
                stored.shard_id,
                stored.sequence_number,
                sequence_number,
            )
            return stored
        stored.sequence_number = sequence_number
        stored.save(update_fields=["sequence_number", "updated_at"])
        return stored


def record_status(stream_arn: str, stats: RunStats | None, error: str = "") -> None:
    now = django_timezone.now()
    status, _ = ReplicatorStatus.objects.get_or_create(stream_arn=stream_arn)
    status.last_run_at = now
    if stats is not None:
        status.last_run_records = stats.records_read
        status.total_records += stats.records_read
        if stats.max_lag_seconds is not None:
            status.last_lag_seconds = stats.max_lag_seconds
        status.last_success_at = now
        status.last_error = ""
    else:
        status.last_error = error[:2000]
    status.save()


def replicate_once(deadline_seconds: float = 50.0, on_progress=None) -> RunStats | None:
    """Run one replication pass over the current stream and record its statistics."""
    try:
        replicator = Replicator(deadline_seconds=deadline_seconds, on_progress=on_progress)
    except (ClientError, BotoCoreError) as error:
        logger.warning("replication skipped: cannot describe table %s: %s", settings.DYNAMODB_TABLE, error)
        return None
    if not replicator.stream_arn:
        return replicator.stats
    try:
        stats = replicator.run()
    except (ClientError, BotoCoreError, ClickHouseError, OSError) as error:
        logger.exception("replication run failed stream=%s", replicator.stream_arn)
        record_status(replicator.stream_arn, None, str(error))
        return None
    record_status(replicator.stream_arn, stats)
    if stats.gaps:
        from replicator.reconcile import reconcile_since

        for _shard_id, since in stats.gaps:
            reconcile_since(None if since == "unknown" else datetime.fromisoformat(since))
    return stats
