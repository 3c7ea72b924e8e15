"""Rebuild ClickHouse rows from DynamoDB itself, independent of the stream.

Used after a stream gap (trimmed data) and by the `reconcile` command. Rows
carry the record's own version, so running it twice changes nothing under
FINAL, and each batch has a deduplication token made from its keys and
versions, so an identical batch is not stored twice either.
"""

import hashlib
import logging
from datetime import datetime

from boto3.dynamodb.conditions import Attr
from django.conf import settings

from oot_ingest import dynamo
from oot_ingest.vocabulary import STATUS_COMPLETED
from replicator.convert import COLUMNS, ConversionError, to_row
from replicator.stream import insert_rows

logger = logging.getLogger(__name__)

BATCH_ROWS = 2000


def reconcile_since(since: datetime | None, dry_run: bool = False) -> tuple[int, int]:
    """Upsert completed records updated at or after `since` (all when None); return (scanned, upserted)."""
    condition = Attr("status").eq(STATUS_COMPLETED)
    if since is not None:
        stamp = since.isoformat().replace("+00:00", "Z")
        condition = condition & Attr("updated_at").gte(stamp)
    arguments = {"FilterExpression": condition}
    scanned = upserted = 0
    batch: list[list] = []
    table = dynamo.table()
    while True:
        page = table.scan(**arguments)
        scanned += page.get("ScannedCount", 0)
        for item in page.get("Items", []):
            try:
                batch.append(to_row(item))
            except ConversionError as error:
                logger.error("reconcile skipped dynamoKey=%s reason=%s", item.get("dynamoKey"), error)
            if len(batch) >= BATCH_ROWS:
                upserted += _flush(batch, dry_run)
                batch = []
        if "LastEvaluatedKey" not in page:
            break
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    upserted += _flush(batch, dry_run)
    logger.info(
        "reconcile finished table=%s since=%s scanned=%s upserted=%s dry_run=%s",
        settings.DYNAMODB_TABLE,
        since,
        scanned,
        upserted,
        dry_run,
    )
    return scanned, upserted


def _flush(batch: list[list], dry_run: bool) -> int:
    if not batch or dry_run:
        return len(batch)
    key_index, version_index = COLUMNS.index("dynamoKey"), COLUMNS.index("_version")
    digest = hashlib.sha256()
    for row in sorted(batch, key=lambda row: row[key_index]):
        digest.update(f"{row[key_index]}|{row[version_index]}\n".encode())
    insert_rows(batch, dedup_token=f"reconcile|{digest.hexdigest()}")
    return len(batch)
