"""The Redis cache's one-round-trip incr keeps Django's contract, and incr_or_add counts in a window."""

import pytest
from django.core.cache import caches

from oot_ingest.counters import redis_client


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
