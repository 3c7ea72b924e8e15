"""Conversion of a DynamoDB record image into a ClickHouse row.

Numbers arrive as exact decimals and leave as ints or floats. ISO 8601 times
become timezone-aware UTC datetimes whatever the process time zone, because
the ClickHouse client reads a naive datetime as local time. A missing
started_at becomes the epoch, which the queries read as "unknown": the
duration is 0 and the record is placed in time by completed_at.

A value the column cannot hold raises ConversionError, so the record goes
to the dead-letter table instead of failing the whole batch's insert.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from oot_ingest.vocabulary import DELETED_RANK, STATUS_RANK

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The range of ClickHouse's DateTime64(9).
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
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

STATUS_INDEX = STRING_COLUMNS.index("status")
REVISION_INDEX = COUNT_COLUMNS.index("revision")

_deserializer = TypeDeserializer()


class ConversionError(ValueError):
    """A record image that can never become a row, which goes to the dead-letter table."""


def deserialize(image: dict) -> dict[str, Any]:
    """Turn a typed DynamoDB image ({"S": ...}, {"N": ...}) into plain Python values.

    Numbers become int when they are plain non-negative integers and Decimal
    otherwise, so no number loses precision.
    """
    return {name: _plain(value) for name, value in image.items()}


def _plain(value: dict) -> Any:
    # The record's own attributes are S, N and BOOL. Those skip boto3's
    # generic dispatch, which took most of the conversion time.
    if "S" in value:
        return value["S"]
    if "N" in value:
        text = value["N"]
        return int(text) if text.isdigit() else Decimal(text)
    if "BOOL" in value:
        return value["BOOL"]
    return _deserializer.deserialize(value)


def parse_time(value: Any, field: str) -> datetime:
    """Parse an ISO 8601 time into an aware UTC datetime, or the epoch when the value is missing."""
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
    moment = moment.astimezone(UTC)
    if not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise ConversionError(f"{field} is outside the range of DateTime64(9): {value!r}")
    return moment


def version(status: str, revision: int, deleted: bool = False) -> int:
    """Build the ReplacingMergeTree version: status rank first, then the record's revision."""
    # NOTE: a deletion outranks every status, so a key written again after a
    # person deleted it stays hidden under FINAL, reconcile included.
    rank = DELETED_RANK if deleted else STATUS_RANK.get(status, 0)
    return (rank << REVISION_BITS) | min(revision, (1 << REVISION_BITS) - 1)


def _count(name: str, value: Any, maximum: int = UINT64_MAX) -> int:
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= maximum:
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        if 0 <= value <= maximum:
            return int(value)
    raise ConversionError(f"{name} is not an integer from 0 to {maximum}: {value!r}")


def _seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is int or (isinstance(value, Decimal) and value.is_finite()):
        return float(value)
    raise ConversionError(f"{name} is not a number: {value!r}")


def _text(name: str, value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if type(value) is int or (isinstance(value, Decimal) and value.is_finite()):
        return str(value)
    if isinstance(value, (dict, list)):
        # A JSON column (environment, failed_tests_json) written as a map or list.
        return json.dumps(value, sort_keys=True, default=str)
    raise ConversionError(f"{name} is not a string: {value!r}")


def to_row(item: dict[str, Any], deleted: bool = False) -> list[Any]:
    """Convert a deserialized record into a row in COLUMNS order, or raise ConversionError."""
    get = item.get
    key = get("dynamoKey")
    if not key or not isinstance(key, str):
        raise ConversionError("record has no dynamoKey")
    strings = [_text(name, get(name)) for name in STRING_COLUMNS]
    counts = [_count(name, get(name)) for name in COUNT_COLUMNS]
    swept = get("swept", False)
    if not isinstance(swept, bool):
        raise ConversionError(f"swept is not a boolean: {swept!r}")
    # A completion reported without completed_at is placed at the time the
    # service stored it, so it still falls into the pages' time windows.
    completed_at = get("completed_at") or get("updated_at")
    return [
        *strings,
        *counts,
        _count("run_attempt", get("run_attempt"), UINT32_MAX) or 1,
        swept,
        _seconds("queue_time", get("queue_time")),
        _seconds("execution_time", get("execution_time")),
        parse_time(get("started_at"), "started_at"),
        parse_time(completed_at, "completed_at"),
        version(strings[STATUS_INDEX], counts[REVISION_INDEX], deleted),
        1 if deleted else 0,
    ]
