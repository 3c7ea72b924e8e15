"""Conversion of a DynamoDB record image into a ClickHouse row.

Numbers arrive as exact decimals and leave as ints or floats; ISO 8601 times
become timezone-aware UTC datetimes whatever the process time zone; a missing
time becomes the epoch, which the queries read as "unknown".
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from oot_ingest.vocabulary import DELETED_RANK, STATUS_RANK

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REVISION_BITS = 40

STRING_COLUMNS = (
    "dynamoKey",
    "status",
    "updated_at",
    "downstream_repo",
    "downstream_repo_level",
    "upstream_repo",
    "pytorch_head_sha",
    "event_type",
    "delivery_id",
    "workflow_name",
    "job_name",
    "check_run_id",
    "run_id",
    "workflow_run_url",
    "conclusion",
    "failed_tests_json",
    "artifact_url",
    "environment",
)
COUNT_COLUMNS = (
    "revision",
    "pr_number",
    "total_tests",
    "passed_tests",
    "failed_tests",
    "skipped_tests",
    "failed_tests_entries_cut",
    "failed_tests_bytes_cut",
)
COLUMNS = (
    *STRING_COLUMNS,
    *COUNT_COLUMNS,
    "run_attempt",
    "swept",
    "queue_time",
    "execution_time",
    "started_at",
    "completed_at",
    "_version",
    "_is_deleted",
)

_deserializer = TypeDeserializer()


class ConversionError(ValueError):
    """A record image that can never become a row; it goes to the dead-letter table."""


def deserialize(image: dict) -> dict[str, Any]:
    """Turn a typed DynamoDB image ({"S": ...}, {"N": ...}) into plain Python values."""
    return {name: _deserializer.deserialize(value) for name, value in image.items()}


def parse_time(value: Any, field: str) -> datetime:
    if value in (None, ""):
        return EPOCH
    if not isinstance(value, str):
        raise ConversionError(f"{field} is not a string: {value!r}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConversionError(f"{field} is not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def version(status: str, revision: int, deleted: bool = False) -> int:
    """Build the ReplacingMergeTree version: status rank first, then the record's revision."""
    rank = DELETED_RANK if deleted else STATUS_RANK.get(status, 0)
    return (rank << REVISION_BITS) | min(revision, (1 << REVISION_BITS) - 1)


def _count(item: dict, name: str) -> int:
    value = item.get(name)
    if value is None:
        return 0
    if isinstance(value, Decimal) and value == value.to_integral_value() and value >= 0:
        return int(value)
    raise ConversionError(f"{name} is not a non-negative integer: {value!r}")


def _seconds(item: dict, name: str) -> float | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value)
    raise ConversionError(f"{name} is not a number: {value!r}")


def to_row(item: dict[str, Any], deleted: bool = False) -> list[Any]:
    """Convert a deserialized record into a row in COLUMNS order."""
    if not item.get("dynamoKey"):
        raise ConversionError("record has no dynamoKey")
    row: dict[str, Any] = {}
    for name in STRING_COLUMNS:
        value = item.get(name)
        row[name] = "" if value is None else str(value)
    for name in COUNT_COLUMNS:
        row[name] = _count(item, name)
    row["run_attempt"] = _count(item, "run_attempt") or 1
    row["swept"] = bool(item.get("swept", False))
    row["queue_time"] = _seconds(item, "queue_time")
    row["execution_time"] = _seconds(item, "execution_time")
    row["started_at"] = parse_time(item.get("started_at"), "started_at")
    row["completed_at"] = parse_time(item.get("completed_at"), "completed_at")
    row["_version"] = version(row["status"], row["revision"], deleted)
    row["_is_deleted"] = 1 if deleted else 0
    return [row[name] for name in COLUMNS]
