"""Service counters kept in Redis so that every process adds to the same totals.

A counter that cannot be written is dropped with a debug log line: counting
must never fail a callback.
"""

import atexit
import logging
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from django.conf import settings
from redis import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

COUNTERS_KEY = "oot:counters"
_redis: Redis | None = None


def redis_client() -> Redis:
    global _redis
    if _redis is None:
        _redis = Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    return _redis


def increment(name: str, amount: int = 1) -> None:
    try:
        pipeline = redis_client().pipeline(transaction=False)
        pipeline.hincrby(COUNTERS_KEY, name, amount)
        _count_hourly(pipeline, name, amount)
        pipeline.execute()
    except RedisError as error:
        logger.debug("counter %s not written: %s", name, error)


# Callback counters are also kept per UTC hour, for the metrics page's
# callback volume and API error rate over time. Each hour is one hash that
# expires after HOURLY_TTL, so the history costs at most ~840 small keys.
HOURLY_PREFIX = "oot:counters:hour:"
HOURLY_TTL = timedelta(days=35)


def hourly_key(moment: datetime) -> str:
    return HOURLY_PREFIX + moment.astimezone(UTC).strftime("%Y%m%d%H")


def _count_hourly(pipeline, name: str, amount: int) -> None:
    if not name.startswith("callbacks_"):
        return
    key = hourly_key(datetime.now(UTC))
    pipeline.hincrby(key, name, amount)
    pipeline.expire(key, int(HOURLY_TTL.total_seconds()))


def read_hourly(since: datetime) -> list[tuple[datetime, dict[str, int]]]:
    """Return the callback counters of every UTC hour from `since` to now; empty when Redis is unreachable."""
    flush()
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    moment = start
    while moment <= datetime.now(UTC):
        hours.append(moment)
        moment += timedelta(hours=1)
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for hour in hours:
            pipeline.hgetall(hourly_key(hour))
        raw = pipeline.execute()
    except RedisError as error:
        logger.debug("hourly counters not read: %s", error)
        return []
    return [
        (hour, {key.decode(): int(value) for key, value in values.items()})
        for hour, values in zip(hours, raw, strict=True)
    ]


LAST_CALLBACK_KEY = "oot:last_callback"


# Stored callbacks are counted in memory and written to Redis in one pipeline
# every FLUSH_INTERVAL_SECONDS by a background thread, so an accepted callback
# waits for no Redis round trip of its own. Reads in this process flush first;
# another process's counts appear within the interval.
# NOTE: counts not yet written when a process is killed are lost; a normal
# exit writes them.
FLUSH_INTERVAL_SECONDS = 0.25

_pending_lock = threading.Lock()
_pending_outcomes: Counter[str] = Counter()
_pending_latest: dict[str, str] = {}
_flusher_pid: int | None = None


def record_callback(outcome: str, repo: str, at: str) -> None:
    """Count one stored callback and remember the repository's latest callback time; written in the background."""
    with _pending_lock:
        _pending_outcomes[outcome] += 1
        _pending_latest[repo.lower()] = at
    if _flusher_pid != os.getpid():
        _start_flusher()


def _start_flusher() -> None:
    """Start this process's flushing thread; after a fork the child starts its own."""
    global _flusher_pid
    with _pending_lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, name="oot-counters-flush", daemon=True).start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_SECONDS)
        flush()


def flush() -> None:
    """Write the callback counts and times recorded in this process to Redis, in one round trip."""
    with _pending_lock:
        outcomes = dict(_pending_outcomes)
        latest = dict(_pending_latest)
        _pending_outcomes.clear()
        _pending_latest.clear()
    if not outcomes and not latest:
        return
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for outcome, amount in outcomes.items():
            pipeline.hincrby(COUNTERS_KEY, outcome, amount)
            _count_hourly(pipeline, outcome, amount)
        if latest:
            pipeline.hset(LAST_CALLBACK_KEY, mapping=latest)
        pipeline.execute()
    except RedisError as error:
        logger.debug("callback counters not written: %s", error)


atexit.register(flush)


def last_callbacks() -> dict[str, str]:
    """Return repository (lower case) -> ISO time of its latest stored callback."""
    flush()
    try:
        raw = redis_client().hgetall(LAST_CALLBACK_KEY)
    except RedisError:
        return {}
    return {key.decode(): value.decode() for key, value in raw.items()}


def read_all() -> dict[str, int]:
    """Return every counter; an empty dict when Redis is unreachable."""
    flush()
    try:
        raw = redis_client().hgetall(COUNTERS_KEY)
    except RedisError:
        return {}
    return {key.decode(): int(value) for key, value in raw.items()}
