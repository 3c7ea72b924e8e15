"""The Redis cache's one-round-trip incr keeps Django's contract, and incr_or_add counts in a window.

start_incr_or_add sends the same count and leaves its reply to be read later.
"""

import time

import pytest
from django.core.cache import caches
from redis.exceptions import RedisError

from oot_ingest.counters import redis_client
from tests.services import free_port


@pytest.fixture
def cache():
    redis_client().flushdb()
    return caches["default"]


def test_incr_adds_to_an_existing_key(cache):
    cache.add("window", 1, 60)
    assert cache.incr("window") == 2
    assert cache.incr("window", 5) == 7


def test_incr_keeps_the_expiry(cache):
    cache.add("window", 1, 60)
    cache.incr("window")
    assert 0 < redis_client().ttl(cache.make_and_validate_key("window")) <= 60


def test_incr_of_a_missing_key_raises(cache):
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    assert cache.get("missing") is None, "a failed incr must not create a key without expiry"


def test_incr_or_add_starts_missing_counter_at_one(cache):
    assert cache.incr_or_add("window", 65) == 1
    assert cache.get("window") == 1
    assert 60 < redis_client().ttl(cache.make_and_validate_key("window")) <= 65


def test_incr_or_add_keeps_the_first_expiry(cache):
    cache.incr_or_add("window", 65)
    redis_client().expire(cache.make_and_validate_key("window"), 10)

    assert cache.incr_or_add("window", 65) == 2
    assert 0 < redis_client().ttl(cache.make_and_validate_key("window")) <= 10


def test_incr_or_add_after_add(cache):
    cache.add("window", 1, 60)

    assert cache.incr_or_add("window", 65) == 2
    assert cache.incr("window") == 3


def test_incr_or_add_rejects_timeout_below_one_second(cache):
    with pytest.raises(ValueError, match="at least 1 second"):
        cache.incr_or_add("window", 0)
    assert cache.get("window") is None


# start_incr_or_add: the count is sent at once and its reply read later


def in_use(cache) -> int:
    """Connections of the cache's pool that are checked out."""
    pool = cache._cache.get_client(write=True).connection_pool
    return len(pool._in_use_connections)


def test_started_count_reads_like_incr_or_add(cache):
    first = cache.start_incr_or_add("window", 65)
    second = cache.start_incr_or_add("window", 65)

    assert first.result() == 1
    assert second.result() == 2
    assert 60 < redis_client().ttl(cache.make_and_validate_key("window")) <= 65
    assert in_use(cache) == 0


def test_started_count_is_counted_when_sent(cache):
    pending = cache.start_incr_or_add("window", 65)
    deadline = time.monotonic() + 5
    while cache.get("window") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert cache.get("window") == 1, "Redis counts before anyone reads the reply"
    assert pending.result() == 1


def test_discarded_count_frees_connection(cache):
    cache.start_incr_or_add("window", 65).discard()

    assert in_use(cache) == 0
    assert cache.incr_or_add("window", 65) == 2, "the connection given back holds no unread reply"


def test_started_count_after_redis_forgot_the_script(cache):
    assert cache.incr_or_add("window", 65) == 1
    redis_client().script_flush()

    assert cache.start_incr_or_add("window", 65).result() == 2
    assert cache.start_incr_or_add("window", 65).result() == 3


def test_started_count_after_redis_dropped_the_connection(cache):
    assert cache.incr_or_add("window", 65) == 1
    redis_client().client_kill_filter(_type="normal", skipme=True)

    assert cache.start_incr_or_add("window", 65).result() == 2
    assert in_use(cache) == 0


def test_started_count_rejects_timeout_below_one_second(cache):
    with pytest.raises(ValueError, match="at least 1 second"):
        cache.start_incr_or_add("window", 0)
    assert in_use(cache) == 0


def test_started_count_redis_down_raises(settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"},
    }
    with pytest.raises(RedisError):
        caches["default"].start_incr_or_add("window", 65)
