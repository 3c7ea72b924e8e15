"""The DynamoDB table of records: client, table definition and the write.

One `UpdateItem` per callback. It SETs only the fields the callback carries,
so fields from the first callback survive the second, and its condition keeps
the status from going back from completed to in_progress.

Two sparse global secondary indexes find running jobs without a scan: the
attributes `running_pr` ("<upstream_repo>#<pr_number>") and `running_backend`
(the downstream repository) exist only while a record is in_progress.
"""

import logging
import threading
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

# Errors that mean "try again later" rather than "this request is wrong".
RETRYABLE_ERROR_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "TransactionConflictException",
}

_local = threading.local()


class DynamoUnavailable(Exception):
    """DynamoDB is unreachable or throttling; the caller should retry later."""


@dataclass
class WriteResult:
    status: str
    changed: bool
    late: bool = False


def _client_options() -> dict[str, Any]:
    options: dict[str, Any] = {
        "region_name": settings.AWS_REGION,
        "config": Config(
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "total_max_attempts": 2},
            tcp_keepalive=True,
        ),
    }
    if settings.DYNAMODB_ENDPOINT:
        # DynamoDB Local accepts any credentials; never send real ones to it.
        options.update(endpoint_url=settings.DYNAMODB_ENDPOINT, aws_access_key_id="local", aws_secret_access_key="local")
    return options


def _cache_key() -> tuple[str, str]:
    return settings.DYNAMODB_ENDPOINT, settings.DYNAMODB_TABLE


def client():
    """Return this thread's low-level DynamoDB client (the write path uses typed attribute values)."""
    if getattr(_local, "client_key", None) != _cache_key():
        _local.client = boto3.client("dynamodb", **_client_options())
        _local.client_key = _cache_key()
    return _local.client


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


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, BotoCoreError):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE_ERROR_CODES or status >= 500
    return False


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _stored_status(error: ClientError) -> str:
    item = error.response.get("Item") or {}
    return item.get("status", {}).get("S", STATUS_COMPLETED)


class _Update:
    """Collects SET/REMOVE clauses with placeholder names and values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        placeholder = f"#a{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, python_value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _to_attribute(python_value)
        return placeholder

    def set(self, attribute: str, python_value: Any) -> None:
        self.sets.append(f"{self.name(attribute)} = {self.value(python_value)}")

    def set_if_absent(self, attribute: str, python_value: Any) -> None:
        placeholder = self.name(attribute)
        self.sets.append(f"{placeholder} = if_not_exists({placeholder}, {self.value(python_value)})")

    def remove(self, attribute: str) -> None:
        self.removes.append(self.name(attribute))

    def expression(self) -> str:
        parts = ["SET " + ", ".join(self.sets)]
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        return " ".join(parts)


def _to_attribute(value: Any) -> dict:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": str(value)}
    if isinstance(value, float):
        # Floats go through str() so DynamoDB gets the shortest exact decimal.
        return {"N": str(Decimal(repr(value)))}
    return {"S": str(value)}


# Attributes written on every callback besides those the record carries.
BOOKKEEPING = ("status", "revision", "updated_at", "running_pr", "running_backend", "swept")


def _running_pr(record: dict) -> str:
    return f"{record['upstream_repo']}#{record['pr_number']}"


def write_record(record: dict, *, sweep: bool = False) -> WriteResult:
    """Upsert one callback's record; raise DynamoUnavailable when DynamoDB cannot take it.

    `sweep` marks a completion made by the service itself for an orphaned
    job: it applies only while the record is still in_progress.
    """
    if record["status"] == STATUS_IN_PROGRESS:
        return _write_in_progress(record)
    return _write_completed(record, sweep=sweep)


def _common_update(record: dict) -> _Update:
    update = _Update()
    for attribute, value in record.items():
        if attribute in ("dynamoKey",) or attribute in BOOKKEEPING:
            continue
        update.set(attribute, value)
    update.set("status", record["status"])
    update.set("updated_at", now_iso())
    return update


def _write_in_progress(record: dict) -> WriteResult:
    update = _common_update(record)
    update.set("running_pr", _running_pr(record))
    update.set("running_backend", record["downstream_repo"])
    update.sets.append(
        f"{update.name('revision')} = if_not_exists({update.name('revision')}, {update.value(0)}) + {update.value(1)}"
    )
    status_name = update.name("status")
    condition = f"attribute_not_exists(dynamoKey) OR {status_name} = {update.value(STATUS_IN_PROGRESS)}"
    try:
        _update_item(record["dynamoKey"], update, condition)
        return WriteResult(status=STATUS_IN_PROGRESS, changed=True)
    except ClientError as error:
        if not _condition_failed(error):
            raise
    return _fill_after_completion(record)


def _fill_after_completion(record: dict) -> WriteResult:
    """Apply a late in_progress to a completed record: fill started_at and queue_time only where absent."""
    fillable = {name: record[name] for name in ("started_at", "queue_time") if name in record}
    if not fillable:
        return WriteResult(status=STATUS_COMPLETED, changed=False, late=True)

    update = _Update()
    missing = []
    for attribute, value in fillable.items():
        update.set_if_absent(attribute, value)
        missing.append(f"attribute_not_exists({update.name(attribute)})")
    update.set("updated_at", now_iso())
    update.sets.append(f"{update.name('revision')} = {update.name('revision')} + {update.value(1)}")
    condition = f"attribute_exists(dynamoKey) AND ({' OR '.join(missing)})"
    try:
        _update_item(record["dynamoKey"], update, condition)
        return WriteResult(status=STATUS_COMPLETED, changed=True, late=True)
    except ClientError as error:
        if not _condition_failed(error):
            raise
        return WriteResult(status=_stored_status(error), changed=False, late=True)


def _write_completed(record: dict, *, sweep: bool) -> WriteResult:
    update = _common_update(record)
    update.set("swept", sweep)
    update.remove("running_pr")
    update.remove("running_backend")
    update.sets.append(
        f"{update.name('revision')} = if_not_exists({update.name('revision')}, {update.value(0)}) + {update.value(1)}"
    )
    status_name = update.name("status")
    in_progress = update.value(STATUS_IN_PROGRESS)
    if sweep:
        condition = f"{status_name} = {in_progress}"
    else:
        swept_name = update.name("swept")
        condition = (
            f"attribute_not_exists(dynamoKey) OR {status_name} = {in_progress} OR {swept_name} = {update.value(True)}"
        )
    try:
        _update_item(record["dynamoKey"], update, condition)
        return WriteResult(status=STATUS_COMPLETED, changed=True)
    except ClientError as error:
        if not _condition_failed(error):
            raise
        return WriteResult(status=_stored_status(error), changed=False)


def _update_item(key: str, update: _Update, condition: str) -> None:
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
    except (ClientError, BotoCoreError) as error:
        if isinstance(error, ClientError) and _condition_failed(error):
            raise
        if _is_retryable(error):
            code = error.response["Error"].get("Code") if isinstance(error, ClientError) else type(error).__name__
            logger.warning("DynamoDB write failed dynamoKey=%s error=%s", key, code)
            raise DynamoUnavailable(code) from error
        raise


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
