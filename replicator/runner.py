"""One replication run at a time, across processes, guarded by a Redis lock.

Two beat processes, or the task queued twice, each call `run_locked`; the
one that does not get the lock returns at once. The lock's TTL exceeds the
run's deadline, and a thread renews it every RENEW_INTERVAL_SECONDS while
the run works, so a live run keeps it and a killed one frees it within the
TTL. A run whose lock could not be renewed (lost to expiry or to Redis)
stops before its next page.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis.exceptions import LockError, RedisError

from oot_ingest.counters import redis_client
from replicator import clickhouse
from replicator.stream import RunStats, replicate_once

logger = logging.getLogger(__name__)

LOCK_NAME = "oot:replicator:lock"
LOCK_TTL_SECONDS = 120
RENEW_INTERVAL_SECONDS = 15
# Below the Celery soft time limit (CELERY_TASK_SOFT_TIME_LIMIT, 50 s), so a
# task run ends on its own before Celery interrupts it.
RUN_DEADLINE_SECONDS = 40
# A run that has not returned after this long (a call hanging past every
# timeout) stops being renewed, so the lock frees itself.
MAX_HOLD_SECONDS = RUN_DEADLINE_SECONDS + 5 * 60


class _Renewal:
    """Background renewal of a held lock, which sets `lost` when the lock cannot be renewed."""

    def __init__(self, lock) -> None:
        self.lock = lock
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="replicator-lock-renewal", daemon=True)

    def __enter__(self) -> "_Renewal":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _renew(self) -> None:
        started = last_renewed = time.monotonic()
        while not self._done.wait(RENEW_INTERVAL_SECONDS):
            now = time.monotonic()
            if now - started > MAX_HOLD_SECONDS:
                logger.error("replication run still going after %.0f s; no longer renewing its lock", now - started)
                self.lost.set()
                return
            try:
                self.lock.extend(LOCK_TTL_SECONDS, replace_ttl=True)
                last_renewed = now
            except LockError as error:
                logger.error("replicator lock lost (%s); stopping the run before its next page", error)
                self.lost.set()
                return
            except RedisError as error:
                if now - last_renewed >= LOCK_TTL_SECONDS - RENEW_INTERVAL_SECONDS:
                    logger.error(
                        "replicator lock not renewed for %.0f s (%s); stopping the run", now - last_renewed, error
                    )
                    self.lost.set()
                    return
                logger.warning("replicator lock renewal failed: %s; retrying", error)


def run_locked(work: Callable[..., RunStats | None] = replicate_once) -> RunStats | None:
    """Run one pass unless another process is running one, and return None when skipped or failed.

    `work` is called with `deadline_seconds` and `should_stop`.
    """
    try:
        # thread_local=False: the renewal thread must see the token of the acquiring thread.
        lock = redis_client().lock(LOCK_NAME, timeout=LOCK_TTL_SECONDS, blocking=False, thread_local=False)
        acquired = lock.acquire()
    except RedisError as error:
        if clickhouse.is_embedded():
            # Only the process that owns the chdb directory can write to it,
            # so no second runner can exist: run without the lock.
            logger.warning("replicator lock unavailable (%s); running unlocked in embedded mode", error)
            return work(deadline_seconds=RUN_DEADLINE_SECONDS, should_stop=lambda: False)
        logger.warning("replication skipped: Redis lock unavailable: %s", error)
        return None
    if not acquired:
        logger.debug("replication skipped: the lock is taken by another run")
        return None

    try:
        with _Renewal(lock) as renewal:
            return work(deadline_seconds=RUN_DEADLINE_SECONDS, should_stop=renewal.lost.is_set)
    finally:
        try:
            lock.release()
        except (LockError, RedisError) as error:
            logger.warning("replicator lock not released (%s); it expires within %s s", error, LOCK_TTL_SECONDS)


@contextmanager
def lock_for_fold(timeout_seconds: float = 60) -> Iterator[bool]:
    """Hold the replicator's lock for a rollup fold outside a run; yield False when another holder has it.

    A fold must not read the rollup queue while a replication run inserts
    rows, because rows stamped before the fold started could become visible
    only after it read the queue (see replicator/rollup.py). In embedded mode
    with Redis unreachable no other run can exist, so the fold goes ahead.
    """
    try:
        lock = redis_client().lock(LOCK_NAME, timeout=timeout_seconds, blocking=False, thread_local=False)
        acquired = lock.acquire()
    except RedisError as error:
        if clickhouse.is_embedded():
            yield True
            return
        logger.warning("rollup fold skipped: Redis lock unavailable: %s", error)
        yield False
        return
    if not acquired:
        yield False
        return
    try:
        yield True
    finally:
        try:
            lock.release()
        except (LockError, RedisError) as error:
            logger.warning(
                "replicator lock not released after a fold (%s); it expires within %s s", error, timeout_seconds
            )
