"""The writing half of replication: stream records to rows, dead letters, and the insert.

Only completed records become rows. A REMOVE made by a person becomes a
tombstone row that hides the record under FINAL. A REMOVE made by DynamoDB's
TTL (userIdentity type Service, principal dynamodb.amazonaws.com) is ignored,
so expired items stay in ClickHouse. A record that cannot be converted is
stored as a DeadLetter with the reason and never silently dropped.
"""

import hashlib
import json
import logging
import random
import time
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from django.db import IntegrityError

from oot_ingest.vocabulary import STATUS_COMPLETED
from replicator import clickhouse
from replicator.convert import COLUMNS, ConversionError, deserialize, to_row
from replicator.models import DeadLetter

logger = logging.getLogger(__name__)

TTL_PRINCIPAL = "dynamodb.amazonaws.com"
INSERT_ATTEMPTS = 4
# Delay before the second attempt. It doubles for each further one, with jitter.
INSERT_BACKOFF_SECONDS = 0.5
INSERT_BACKOFF_MAX_SECONDS = 8.0

KEY_INDEX = COLUMNS.index("dynamoKey")
VERSION_INDEX = COLUMNS.index("_version")


def removed_by_ttl(record: dict) -> bool:
    identity = record.get("userIdentity") or {}
    return identity.get("Type") == "Service" and identity.get("PrincipalId") == TTL_PRINCIPAL


def row_for_record(record: dict) -> list | None:
    """Return the row a stream record produces, or None when it produces none.

    Raise ConversionError when the record cannot be converted.
    """
    event = record.get("eventName")
    data = record.get("dynamodb") or {}
    if event == "REMOVE":
        if removed_by_ttl(record):
            return None
        image = data.get("OldImage")
    elif event in ("INSERT", "MODIFY"):
        image = data.get("NewImage")
    else:
        raise ConversionError(f"unknown eventName {event!r}")
    if not image:
        raise ConversionError(f"{event} without its image; the stream must use NEW_AND_OLD_IMAGES")
    # Most records of a running job are skipped here, before any conversion.
    if _status(image) != STATUS_COMPLETED:
        return None
    return to_row(deserialize(image), deleted=event == "REMOVE")


def _status(image: dict) -> str | None:
    status = image.get("status")
    return status.get("S") if isinstance(status, dict) else None


def rows_for_batch(stream_arn: str, shard_id: str, records: list[dict]) -> tuple[list[list], int]:
    """Convert a batch of stream records and return the newest row per key and the number of dead letters."""
    latest: dict[str, list] = {}
    dead_letters = 0
    for record in records:
        try:
            row = row_for_record(record)
        except (ConversionError, TypeError, ValueError, ArithmeticError) as error:
            store_dead_letter_record(stream_arn, shard_id, record, str(error))
            dead_letters += 1
            continue
        if row is None:
            continue
        key = row[KEY_INDEX]
        if key not in latest or row[VERSION_INDEX] >= latest[key][VERSION_INDEX]:
            latest[key] = row
    return list(latest.values()), dead_letters


def store_dead_letter_record(stream_arn: str, shard_id: str, record: dict, reason: str) -> None:
    """Keep a stream record that could not be converted, once per (stream, shard, sequence number)."""
    data = record.get("dynamodb") or {}
    image = data.get("NewImage") or data.get("OldImage") or {}
    key_attribute = image.get("dynamoKey") if isinstance(image, dict) else None
    key = key_attribute.get("S", "") if isinstance(key_attribute, dict) else ""
    sequence_number = str(data.get("SequenceNumber", ""))
    logger.error(
        "dead letter shard=%s sequence_number=%s dynamoKey=%s reason=%s", shard_id, sequence_number, key, reason
    )
    _store_dead_letter(
        fingerprint=_fingerprint("stream", stream_arn, shard_id, sequence_number),
        source=DeadLetter.SOURCE_STREAM,
        stream_arn=stream_arn,
        shard_id=shard_id,
        sequence_number=sequence_number,
        dynamo_key=key[:2048],
        event_name=str(record.get("eventName", ""))[:16],
        reason=reason,
        image=json.dumps(image, default=str),
    )


def store_dead_letter_item(item: dict[str, Any], reason: str) -> None:
    """Keep a DynamoDB item that the reconcile could not convert, once per (key, revision, reason)."""
    key = str(item.get("dynamoKey", ""))
    logger.error("dead letter from reconcile dynamoKey=%s reason=%s", key, reason)
    _store_dead_letter(
        fingerprint=_fingerprint("reconcile", key, str(item.get("revision", "")), reason),
        source=DeadLetter.SOURCE_RECONCILE,
        dynamo_key=key[:2048],
        reason=reason,
        image=json.dumps(item, default=str),
    )


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _store_dead_letter(fingerprint: str, **fields) -> None:
    if DeadLetter.objects.filter(fingerprint=fingerprint).exists():
        return
    try:
        DeadLetter.objects.create(fingerprint=fingerprint, **fields)
    except IntegrityError:
        # Stored by a concurrent writer between the check and the insert.
        pass


def insert_rows(rows: list[list], dedup_token: str | None = None) -> None:
    """Insert rows, retrying failures with jittered exponential backoff, and raise after the last attempt.

    With a deduplication token, ClickHouse drops a block whose token it has
    already stored (within the table's non_replicated_deduplication_window),
    so a batch re-sent after a crash is stored once.
    """
    insert_settings: dict[str, Any] = {"insert_deduplicate": 1}
    if dedup_token:
        insert_settings["insert_deduplication_token"] = dedup_token
    for attempt in range(1, INSERT_ATTEMPTS + 1):
        try:
            clickhouse.client().insert(clickhouse.TABLE, rows, column_names=list(COLUMNS), settings=insert_settings)
            return
        except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
            if attempt == INSERT_ATTEMPTS:
                logger.error("ClickHouse insert failed rows=%s attempts=%s error=%s", len(rows), attempt, error)
                raise
            delay = min(INSERT_BACKOFF_MAX_SECONDS, INSERT_BACKOFF_SECONDS * 2 ** (attempt - 1))
            delay *= 0.5 + random.random()
            logger.warning(
                "ClickHouse insert failed rows=%s attempt=%s error=%s; retrying in %.1f s",
                len(rows),
                attempt,
                str(error)[:300],
                delay,
            )
            time.sleep(delay)
