"""Service counters kept in Redis so that every process adds to the same totals.

A counter that cannot be written is dropped with a debug log line: counting
must never fail a callback.
"""

import logging

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
        redis_client().hincrby(COUNTERS_KEY, name, amount)
    except RedisError as error:
        logger.debug("counter %s not written: %s", name, error)


LAST_CALLBACK_KEY = "oot:last_callback"


def record_callback(outcome: str, repo: str, at: str) -> None:
    """Count one stored callback and remember the repository's latest callback time, in one round trip."""
    try:
        pipeline = redis_client().pipeline(transaction=False)
        pipeline.hincrby(COUNTERS_KEY, outcome, 1)
        pipeline.hset(LAST_CALLBACK_KEY, repo.lower(), at)
        pipeline.execute()
    except RedisError as error:
        logger.debug("callback counters not written: %s", error)


def last_callbacks() -> dict[str, str]:
    """Return repository (lower case) -> ISO time of its latest stored callback."""
    try:
        raw = redis_client().hgetall(LAST_CALLBACK_KEY)
    except RedisError:
        return {}
    return {key.decode(): value.decode() for key, value in raw.items()}


def read_all() -> dict[str, int]:
    """Return every counter; an empty dict when Redis is unreachable."""
    try:
        raw = redis_client().hgetall(COUNTERS_KEY)
    except RedisError:
        return {}
    return {key.decode(): int(value) for key, value in raw.items()}
