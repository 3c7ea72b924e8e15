"""One replication run at a time, across processes, guarded by a Redis lock.

The lock's TTL is longer than a run's deadline and is renewed after every
batch, so a live run never loses it and a crashed one frees it within the TTL.
"""

import logging

from redis.exceptions import LockError, RedisError

from oot_ingest.counters import redis_client
from replicator import clickhouse
from replicator.stream import RunStats, replicate_once

logger = logging.getLogger(__name__)

LOCK_NAME = "oot:replicator:lock"
LOCK_TTL_SECONDS = 120
RUN_DEADLINE_SECONDS = 50


def run_locked() -> RunStats | None:
    """Run one pass if no other process is running one; return None when skipped or failed."""
    try:
        lock = redis_client().lock(LOCK_NAME, timeout=LOCK_TTL_SECONDS, blocking=False)
        acquired = lock.acquire()
    except RedisError as error:
        if clickhouse.is_embedded():
            # Only the process that owns the chdb directory can write to it,
            # so no second runner can exist: run without the lock.
            logger.warning("replicator lock unavailable (%s); running unlocked in embedded mode", error)
            return replicate_once(RUN_DEADLINE_SECONDS)
        logger.warning("replication skipped: Redis lock unavailable: %s", error)
        return None
    if not acquired:
        logger.debug("replication skipped: another run holds the lock")
        return None

    def renew() -> None:
        try:
            lock.extend(LOCK_TTL_SECONDS, replace_ttl=True)
        except (LockError, RedisError) as error:
            logger.warning("replicator lock renewal failed: %s", error)

    try:
        return replicate_once(RUN_DEADLINE_SECONDS, on_progress=renew)
    finally:
        try:
            lock.release()
        except (LockError, RedisError):
            pass
