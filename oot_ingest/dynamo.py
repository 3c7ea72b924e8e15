"""The DynamoDB table of records: client, table definition and the write.

One conditional `UpdateItem` per callback. It SETs only the fields the
callback carries, so fields from the first callback survive the second. It
ADDs 1 to `revision` and sets `updated_at`. Its condition keeps the status
from going back from completed to in_progress. A callback that would change
nothing fails the condition, so it writes nothing and the response reports
the status as stored. Only a late in_progress for a completed job
that still lacks started_at or queue_time costs a second, filling write.

Two sparse global secondary indexes find running jobs without a scan: the
attributes `running_pr` ("<upstream_repo>#<pr_number>") and `running_backend`
(the downstream repository) exist only while a record is in_progress.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.conditions import Key
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from oot_ingest.vocabulary import STATUS_COMPLETED, STATUS_IN_PROGRESS

logger = logging.getLogger(__name__)

RUNNING_PR_INDEX = "running-by-pr"
RUNNING_BACKEND_INDEX = "running-by-backend"

# Errors that mean DynamoDB is shedding load; every other failure except a
# refused record is reported as unavailable too, and logged as an error.
THROTTLING_ERROR_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}

_local = threading.local()


class DynamoUnavailable(Exception):
    """DynamoDB is unreachable, throttling or failing; the caller should retry later."""


class RecordRejected(ValueError):
    """DynamoDB refused the record itself (a ValidationException); retrying cannot help."""


@dataclass
class WriteResult:
    """The outcome of one callback's write, and the status the item has now."""

    status: str
    changed: bool
    late: bool = False

    @property
    def outcome(self) -> str:
        """Name the outcome for counters: accepted, duplicate or ignored_late."""
        if self.changed:
            return "accepted"
        return "ignored_late" if self.late else "duplicate"


def _client_options() -> dict[str, Any]:
    options: dict[str, Any] = {
        "region_name": settings.AWS_REGION,
        "config": Config(
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "total_max_attempts": 2},
            tcp_keepalive=True,
            # The write path builds typed parameters itself and DynamoDB
            # validates every request, so botocore's client-side check, which
            # walks every attribute value, is skipped: it cost more than the
            # rest of preparing a request in a profile of the callback path.
            parameter_validation=False,
        ),
    }
    if settings.DYNAMODB_ENDPOINT:
        # DynamoDB Local accepts any credentials; never send real ones to it.
        options.update(
            endpoint_url=settings.DYNAMODB_ENDPOINT, aws_access_key_id="local", aws_secret_access_key="local"
        )
    return options


def _cache_key() -> tuple[str, str]:
    return settings.DYNAMODB_ENDPOINT, settings.DYNAMODB_TABLE


def client():
    """Return this thread's low-level DynamoDB client (the write path uses typed attribute values)."""
    if getattr(_local, "client_key", None) != _cache_key():
        _local.client = boto3.client("dynamodb", **_client_options())
        _local.client.meta.events.register("before-send.dynamodb.UpdateItem", _run_before_send)
        _local.client_key = _cache_key()
    return _local.client


def _run_before_send(**_kwargs) -> None:
    """Run the pending `before_send` of write_record once, when the request is signed and about to go.

    botocore passes on an exception raised here to the caller of update_item
    without retrying it, and sends nothing.
    """
    hook = getattr(_local, "before_send", None)
    if hook is not None:
        _local.before_send = None
        hook()


def table():
    """Return this thread's resource-level Table, for reads that want plain Python values.

    It has a client of its own: the resource layer registers serialisation
    hooks on its client, which must not leak into the low-level write path.
    """
    if getattr(_local, "table_key", None) != _cache_key():
        _local.table = boto3.resource("dynamodb", **_client_options()).Table(settings.DYNAMODB_TABLE)
        _local.table_key = _cache_key()
    return _local.table


def table_definition(name: str) -> dict:
    """Return the CreateTable arguments for the records table."""
    projection = {"ProjectionType": "ALL"}
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "dynamoKey", "AttributeType": "S"},
            {"AttributeName": "running_pr", "AttributeType": "S"},
            {"AttributeName": "running_backend", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "dynamoKey", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": RUNNING_PR_INDEX,
                "KeySchema": [{"AttributeName": "running_pr", "KeyType": "HASH"}],
                "Projection": projection,
            },
            {
                "IndexName": RUNNING_BACKEND_INDEX,
                "KeySchema": [{"AttributeName": "running_backend", "KeyType": "HASH"}],
                "Projection": projection,
            },
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }


def ensure_table(name: str | None = None) -> bool:
    """Create the records table if it does not exist; return True when it was created."""
    name = name or settings.DYNAMODB_TABLE
    dynamodb = client()
    try:
        dynamodb.describe_table(TableName=name)
        return False
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    try:
        dynamodb.create_table(**table_definition(name))
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
        return False
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    logger.info("created DynamoDB table %s", name)
    return True


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _is_throttling(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code", "") in THROTTLING_ERROR_CODES


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class _Update:
    """Collects SET, REMOVE and ADD clauses with placeholder names and values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.adds: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._placeholders: dict[str, str] = {}
        # attribute -> (name placeholder, value placeholder) of each plain SET
        self.assigned: dict[str, tuple[str, str]] = {}

    def name(self, attribute: str) -> str:
        placeholder = self._placeholders.get(attribute)
        if placeholder is None:
            placeholder = f"#a{len(self.names)}"
            self._placeholders[attribute] = placeholder
            self.names[placeholder] = attribute
        return placeholder

    def value(self, python_value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _to_attribute(python_value)
        return placeholder

    def set(self, attribute: str, python_value: Any) -> None:
        name, value = self.name(attribute), self.value(python_value)
        self.sets.append(f"{name} = {value}")
        self.assigned[attribute] = (name, value)

    def set_if_absent(self, attribute: str, python_value: Any) -> None:
        name = self.name(attribute)
        self.sets.append(f"{name} = if_not_exists({name}, {self.value(python_value)})")

    def remove(self, attribute: str) -> None:
        self.removes.append(self.name(attribute))

    def add(self, attribute: str, amount: int) -> None:
        self.adds.append(f"{self.name(attribute)} {self.value(amount)}")

    def any_differs(self, attributes: list[str]) -> str:
        """Build a condition that holds when any of these SET attributes would change."""
        clauses = []
        for attribute in attributes:
            name, value = self.assigned[attribute]
            clauses.append(f"attribute_not_exists({name}) OR {name} <> {value}")
        return " OR ".join(clauses)

    def expression(self) -> str:
        parts = ["SET " + ", ".join(self.sets)]
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        if self.adds:
            parts.append("ADD " + ", ".join(self.adds))
        return " ".join(parts)


def _to_attribute(value: Any) -> dict:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": str(value)}
    if isinstance(value, float):
        # repr() gives the shortest decimal that reads back as the same float.
        return {"N": repr(value)}
    return {"S": str(value)}


# Attributes the write manages itself; a record's own value for them is ignored.
BOOKKEEPING = ("dynamoKey", "status", "revision", "updated_at", "running_pr", "running_backend", "swept")
# Fields a late in_progress may add to a completed record, only where absent.
LATE_FILLABLE = ("started_at", "queue_time")


def _running_pr(record: dict) -> str:
    return f"{record['upstream_repo']}#{record['pr_number']}"


def write_record(record: dict, *, sweep: bool = False, before_send: Callable[[], None] | None = None) -> WriteResult:
    """Upsert one callback's record with a conditional UpdateItem.

    Raises DynamoUnavailable when DynamoDB cannot take the write (throttling,
    an unreachable endpoint, a server error) and RecordRejected when DynamoDB
    refuses the record itself. `sweep` marks a completion made by the service
    itself for an orphaned job: it applies only while the record is still
    in_progress. `before_send` runs once, after the request is built and
    signed and before it is sent. An exception it raises reaches the caller
    unchanged, and nothing is written.
    """
    _local.before_send = before_send
    try:
        if record["status"] == STATUS_IN_PROGRESS:
            return _write_in_progress(record)
        return _write_completed(record, sweep=sweep)
    finally:
        _local.before_send = None


def _record_update(record: dict) -> tuple[_Update, list[str]]:
    """SET every field the record carries, plus status and updated_at; ADD 1 to revision."""
    update = _Update()
    fields = [attribute for attribute in record if attribute not in BOOKKEEPING]
    for attribute in fields:
        update.set(attribute, record[attribute])
    update.set("status", record["status"])
    update.set("updated_at", now_iso())
    update.add("revision", 1)
    return update, fields


def _write_in_progress(record: dict) -> WriteResult:
    """Store an in_progress callback unless it changes nothing or the job already completed.

    The condition admits a new item, or an in_progress item on which at least
    one field would change. So a duplicate neither writes nor bumps revision,
    and a completed item is never sent back to in_progress.
    """
    update, fields = _record_update(record)
    update.set("running_pr", _running_pr(record))
    update.set("running_backend", record["downstream_repo"])
    status = update.name("status")
    condition = (
        f"attribute_not_exists(dynamoKey) OR "
        f"({status} = {update.value(STATUS_IN_PROGRESS)} AND ({update.any_differs(fields)}))"
    )
    stored = _update_item(record["dynamoKey"], update, condition)
    if stored is None:
        return WriteResult(status=STATUS_IN_PROGRESS, changed=True)
    if _stored_status(stored) == STATUS_IN_PROGRESS:
        return WriteResult(status=STATUS_IN_PROGRESS, changed=False)
    return _fill_after_completion(record, stored)


def _fill_after_completion(record: dict, stored: dict) -> WriteResult:
    """Apply a late in_progress to a completed record: fill started_at and queue_time only where absent."""
    missing = [name for name in LATE_FILLABLE if name in record and name not in stored]
    if not missing:
        return WriteResult(status=_stored_status(stored), changed=False, late=True)

    update = _Update()
    for attribute in missing:
        update.set_if_absent(attribute, record[attribute])
    update.set("updated_at", now_iso())
    update.add("revision", 1)
    absent = " OR ".join(f"attribute_not_exists({update.name(attribute)})" for attribute in missing)
    condition = f"{update.name('status')} = {update.value(STATUS_COMPLETED)} AND ({absent})"
    stored_now = _update_item(record["dynamoKey"], update, condition)
    if stored_now is None:
        return WriteResult(status=STATUS_COMPLETED, changed=True, late=True)
    # Another callback filled the fields (or removed the item) in between.
    return WriteResult(status=_stored_status(stored_now), changed=False, late=True)


def _write_completed(record: dict, *, sweep: bool) -> WriteResult:
    """Store a completed callback on a new or in_progress item, or over a sweep's result.

    A completed item is final, so a second completed changes nothing: the
    only exception is an item the service itself completed as timed_out
    (swept), which a genuine completed replaces.
    """
    update, _fields = _record_update(record)
    update.set("swept", sweep)
    update.remove("running_pr")
    update.remove("running_backend")
    status = update.name("status")
    in_progress = update.value(STATUS_IN_PROGRESS)
    if sweep:
        condition = f"{status} = {in_progress}"
    else:
        swept = update.name("swept")
        condition = f"attribute_not_exists(dynamoKey) OR {status} = {in_progress} OR {swept} = {update.value(True)}"
    stored = _update_item(record["dynamoKey"], update, condition)
    if stored is None:
        return WriteResult(status=STATUS_COMPLETED, changed=True)
    return WriteResult(status=_stored_status(stored), changed=False)


def _stored_status(item: dict) -> str:
    return item.get("status", {}).get("S", STATUS_COMPLETED)


def _update_item(key: str, update: _Update, condition: str) -> dict | None:
    """Run one conditional UpdateItem; return None when it was applied, else the item as stored."""
    try:
        client().update_item(
            TableName=settings.DYNAMODB_TABLE,
            Key={"dynamoKey": {"S": key}},
            UpdateExpression=update.expression(),
            ConditionExpression=condition,
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as error:
        if _condition_failed(error):
            return error.response.get("Item") or {}
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ValidationException":
            logger.error("DynamoDB rejected the record dynamoKey=%s error=%s", key, message)
            raise RecordRejected(message) from error
        if _is_throttling(error):
            logger.warning("DynamoDB throttled the write dynamoKey=%s error=%s", key, code)
        else:
            logger.error("DynamoDB write failed dynamoKey=%s error=%s message=%s", key, code, message)
        raise DynamoUnavailable(code or "unknown error") from error
    except BotoCoreError as error:
        logger.error("DynamoDB unreachable dynamoKey=%s error=%s", key, error)
        raise DynamoUnavailable(type(error).__name__) from error
    return None


def running_jobs_for_pr(upstream_repo: str, pr_number: int) -> list[dict]:
    """Return in_progress records of one upstream PR, read from the sparse running-by-pr index."""
    return _query_all(RUNNING_PR_INDEX, Key("running_pr").eq(f"{upstream_repo}#{pr_number}"))


def running_jobs_for_backend(repo: str) -> list[dict]:
    """Return in_progress records of one backend."""
    return _query_all(RUNNING_BACKEND_INDEX, Key("running_backend").eq(repo))


def _query_all(index: str, condition) -> list[dict]:
    items: list[dict] = []
    arguments = {"IndexName": index, "KeyConditionExpression": condition}
    try:
        while True:
            page = table().query(**arguments)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page or len(items) >= 5000:
                return items
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    except (ClientError, BotoCoreError) as error:
        raise DynamoUnavailable(str(error)) from error
