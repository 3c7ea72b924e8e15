"""Complete orphaned jobs: records still in_progress long after their last callback.

A job whose completed callback never arrives (the runner died, the relay lost
it) would show as running forever. The sweep finds records that are still
in_progress OOT_ORPHAN_HOURS (6 by default) after their last write and
completes them as timed_out through the normal write path with `sweep=True`,
which marks them swept. A genuine completed that arrives later replaces the
swept result, and the saved queries leave swept jobs out of duration averages.

Running records are read per allowlisted backend from the sparse
running-by-backend index, never by a table scan. Celery beat runs the sweep
every OOT_SWEEP_INTERVAL_SECONDS; in embedded mode the serving process does
(`start_embedded`); `manage.py sweep_orphans` runs it once.
"""

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import LockError, RedisError

from oot_ingest import counters, dynamo
from oot_ingest.models import AllowlistEntry
from oot_ingest.vocabulary import STATUS_COMPLETED, STATUS_IN_PROGRESS

logger = logging.getLogger(__name__)

SWEPT_CONCLUSION = "timed_out"
LOCK_NAME = "oot:sweeper:lock"
LOCK_TTL_SECONDS = 300
# A run stops starting new writes after this long; the next run continues.
# It stays under CELERY_TASK_SOFT_TIME_LIMIT (50 s).
RUN_DEADLINE_SECONDS = 40.0


@dataclass
class SweepStats:
    """Counts of one sweep run."""

    backends: int = 0
    found: int = 0
    swept: int = 0
    # Orphans that completed between the query and the write.
    completed_meanwhile: int = 0
    failed_backends: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    stopped_at_deadline: bool = False


def _iso(moment: datetime) -> str:
    """Format a time like `dynamo.now_iso`, so that stored updated_at values compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def orphaned_records(repo: str, cutoff: datetime) -> Iterator[dict]:
    """Yield the backend's in_progress records last written before `cutoff`; raise DynamoUnavailable.

    The query reads the sparse running-by-backend index, which holds only
    in_progress records. The filter on updated_at runs in DynamoDB after the
    index read, so every running record of the backend is still read.
    """
    arguments = {
        "IndexName": dynamo.RUNNING_BACKEND_INDEX,
        "KeyConditionExpression": Key("running_backend").eq(repo),
        "FilterExpression": Attr("status").eq(STATUS_IN_PROGRESS) & Attr("updated_at").lt(_iso(cutoff)),
    }
    try:
        while True:
            page = dynamo.table().query(**arguments)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    except (ClientError, BotoCoreError) as error:
        raise dynamo.DynamoUnavailable(str(error)) from error


def timed_out_record(item: dict, now: datetime) -> dict:
    """Build the completion the service writes for an orphaned record.

    Only the completion fields are set: every other field of the stored
    record survives the UpdateItem.
    """
    return {
        "dynamoKey": item["dynamoKey"],
        "status": STATUS_COMPLETED,
        "conclusion": SWEPT_CONCLUSION,
        "completed_at": _iso(now),
    }


def sweep_orphans(
    *,
    hours: float | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    deadline_seconds: float | None = None,
) -> SweepStats:
    """Complete every allowlisted backend's orphaned records as timed_out; return the counts.

    With `dry_run`, the orphans are found and listed in `SweepStats.keys`
    but not written. A backend whose query fails is listed in
    `failed_backends`, and the sweep goes on with the next one.
    """
    now = now or datetime.now(UTC)
    hours = settings.OOT_ORPHAN_HOURS if hours is None else hours
    cutoff = now - timedelta(hours=hours)
    started = time.monotonic()
    stats = SweepStats()

    # NOTE: the index key is the repository as the relay spelled it, but the
    # allowlist matches case-insensitively. A backend whose callbacks use
    # another letter case than its allowlist entry is not swept.
    repositories = sorted(set(AllowlistEntry.objects.values_list("repository", flat=True)))
    for repo in repositories:
        stats.backends += 1
        try:
            for item in orphaned_records(repo, cutoff):
                if deadline_seconds is not None and time.monotonic() - started > deadline_seconds:
                    stats.stopped_at_deadline = True
                    logger.info("orphan sweep stopped at its deadline; the next run continues")
                    return stats
                stats.found += 1
                stats.keys.append(item["dynamoKey"])
                if not dry_run:
                    _complete(item, now, stats)
        except dynamo.DynamoUnavailable as error:
            stats.failed_backends.append(repo)
            logger.warning("orphan sweep failed for a backend repo=%s error=%s", repo, error)

    if stats.swept:
        counters.increment("orphans_swept", stats.swept)
    logger.info(
        "orphan sweep done backends=%d found=%d swept=%d completed_meanwhile=%d failed_backends=%d dry_run=%s",
        stats.backends,
        stats.found,
        stats.swept,
        stats.completed_meanwhile,
        len(stats.failed_backends),
        dry_run,
    )
    return stats


def _complete(item: dict, now: datetime, stats: SweepStats) -> None:
    result = dynamo.write_record(timed_out_record(item, now), sweep=True)
    if result.changed:
        stats.swept += 1
        logger.info(
            "orphaned job completed as timed_out repo=%s delivery_id=%s dynamoKey=%s updated_at=%s",
            item.get("downstream_repo"),
            item.get("delivery_id"),
            item["dynamoKey"],
            item.get("updated_at"),
        )
    else:
        stats.completed_meanwhile += 1


def run_locked() -> SweepStats | None:
    """Run one sweep unless another process holds the sweep lock; return None when skipped.

    Without Redis the sweep runs unlocked. That is safe because a swept write
    applies only while the record is still in_progress, so two concurrent
    sweeps complete each orphan once.
    """
    try:
        lock = counters.redis_client().lock(LOCK_NAME, timeout=LOCK_TTL_SECONDS, blocking=False)
        acquired = lock.acquire()
    except RedisError as error:
        logger.warning("orphan sweep lock unavailable (%s); sweeping without it", error)
        return sweep_orphans(deadline_seconds=RUN_DEADLINE_SECONDS)
    if not acquired:
        logger.debug("orphan sweep skipped: the lock is taken by another process")
        return None
    try:
        return sweep_orphans(deadline_seconds=RUN_DEADLINE_SECONDS)
    finally:
        try:
            lock.release()
        except (LockError, RedisError):
            pass


def _embedded_loop(stop: threading.Event) -> None:
    interval = settings.OOT_SWEEP_INTERVAL_SECONDS
    logger.info("embedded orphan sweeper started interval=%ss", interval)
    while not stop.wait(interval):
        try:
            close_old_connections()
            run_locked()
        except Exception:  # noqa: BLE001 - the thread must outlive any single failed run
            logger.exception("embedded orphan sweep failed")


def start_embedded(stop: threading.Event) -> threading.Thread:
    """Start a daemon thread that sweeps every OOT_SWEEP_INTERVAL_SECONDS until `stop` is set."""
    thread = threading.Thread(target=_embedded_loop, args=(stop,), name="orphan-sweeper", daemon=True)
    thread.start()
    return thread
