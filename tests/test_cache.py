"""The Redis cache's one-round-trip incr keeps Django's contract."""

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
