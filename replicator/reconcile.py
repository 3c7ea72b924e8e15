"""Rebuild ClickHouse rows from DynamoDB itself, independent of the stream.

Used after a stream gap (trimmed data) and by the `reconcile` command. The
scan reads completed records (all, or those updated at or after a time).
Each batch inserts only the rows whose version ClickHouse does not hold
yet, so a second run inserts nothing and neither the FINAL nor the raw row
count changes. Rows carry the record's own version, so a reconcile never
replaces a newer row.

The reconcile never deletes. A record missing from DynamoDB may have been
removed by TTL, whose rows ClickHouse keeps.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from boto3.dynamodb.conditions import Attr
from django.conf import settings

from oot_ingest import dynamo
from oot_ingest.vocabulary import STATUS_COMPLETED
from replicator import clickhouse
from replicator.convert import COLUMNS, ConversionError, to_row
from replicator.writer import KEY_INDEX, VERSION_INDEX, insert_rows, store_dead_letter_item

logger = logging.getLogger(__name__)

BATCH_ROWS = 2000
REPO_INDEX = COLUMNS.index("downstream_repo")
DELIVERY_INDEX = COLUMNS.index("delivery_id")

STORED_VERSIONS_SQL = """
SELECT dynamoKey, max(_version) AS version
FROM {table:Identifier}
WHERE (downstream_repo, delivery_id, dynamoKey) IN {keys:Array(Tuple(String, String, String))}
GROUP BY dynamoKey
"""


@dataclass
class ReconcileResult:
    scanned: int = 0
    completed: int = 0
    upserted: int = 0
    up_to_date: int = 0
    dead_letters: int = 0


def _stamp(since: datetime) -> str:
    # updated_at is written as 2026-12-04T10:15:30.123456Z. A bound without the
    # microseconds would sort after every record of its own second.
    return since.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def reconcile(since: datetime | None = None, dry_run: bool = False, batch_rows: int = BATCH_ROWS) -> ReconcileResult:
    """Upsert the completed records updated at or after `since` (all when None) that ClickHouse lacks."""
    condition = Attr("status").eq(STATUS_COMPLETED)
    if since is not None:
        condition = condition & Attr("updated_at").gte(_stamp(since))
    arguments = {"FilterExpression": condition, "ConsistentRead": True}
    result = ReconcileResult()
    batch: list[list] = []
    table = dynamo.table()
    while True:
        page = table.scan(**arguments)
        result.scanned += page.get("ScannedCount", 0)
        for item in page.get("Items", []):
            result.completed += 1
            try:
                batch.append(to_row(item))
            except (ConversionError, TypeError, ValueError, ArithmeticError) as error:
                store_dead_letter_item(item, str(error))
                result.dead_letters += 1
            if len(batch) >= batch_rows:
                _flush(batch, dry_run, result)
                batch = []
        if "LastEvaluatedKey" not in page:
            break
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    _flush(batch, dry_run, result)
    logger.info(
        "reconcile finished table=%s since=%s scanned=%s completed=%s upserted=%s up_to_date=%s dead_letters=%s "
        "dry_run=%s",
        settings.DYNAMODB_TABLE,
        since.isoformat() if since else "the beginning",
        result.scanned,
        result.completed,
        result.upserted,
        result.up_to_date,
        result.dead_letters,
        dry_run,
    )
    return result


def _flush(batch: list[list], dry_run: bool, result: ReconcileResult) -> None:
    if not batch:
        return
    stored = _stored_versions(batch)
    missing = [row for row in batch if stored.get(row[KEY_INDEX], -1) < row[VERSION_INDEX]]
    result.up_to_date += len(batch) - len(missing)
    result.upserted += len(missing)
    if not missing or dry_run:
        return
    digest = hashlib.sha256()
    for row in sorted(missing, key=lambda row: row[KEY_INDEX]):
        digest.update(f"{row[KEY_INDEX]}|{row[VERSION_INDEX]}\n".encode())
    insert_rows(missing, dedup_token=f"reconcile|{digest.hexdigest()}")


def _stored_versions(batch: list[list]) -> dict[str, int]:
    keys = [(row[REPO_INDEX], row[DELIVERY_INDEX], row[KEY_INDEX]) for row in batch]
    answer = clickhouse.client().query(
        STORED_VERSIONS_SQL, parameters={"table": clickhouse.TABLE, "keys": keys}, settings={"max_execution_time": 60}
    )
    return {key: version for key, version in answer.result_rows}
