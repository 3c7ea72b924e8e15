"""Django's Redis cache with one-round-trip counters.

Django's Redis backend spends two round trips on `incr`: EXISTS, then
INCRBY. This backend runs both in one Lua script. It also adds
`incr_or_add`, which counts one event in a fixed window in one round trip:
the rate limit uses it instead of django-ratelimit's `add` followed by `incr`.
"""

from functools import cached_property

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

# Increment only a key that exists: INCRBY on a missing key would create it
# without an expiry. The script returns nil for a missing key.
INCREMENT_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return nil
"""

# Create the counter as 0 with the expiry when it is missing (SET NX EX), then
# add 1. An existing counter keeps the expiry it was created with, so later
# counts never extend a window.
INCREMENT_OR_ADD = """
redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])
"""


class OneTripIncrClient(RedisCacheClient):
    def incr(self, key, delta):
        client = self.get_client(key, write=True)
        value = client.eval(INCREMENT_EXISTING, 1, key, delta)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value

    @cached_property
    def _increment_or_add_script(self):
        # register_script only computes the SHA-1. A call runs EVALSHA and
        # loads the script when the server does not have it yet.
        return self.get_client(write=True).register_script(INCREMENT_OR_ADD)

    def incr_or_add(self, key, timeout: int) -> int:
        client = self.get_client(key, write=True)
        return self._increment_or_add_script(keys=[key], args=[timeout], client=client)


class OneTripIncrRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = OneTripIncrClient

    def incr_or_add(self, key, timeout: int, version=None) -> int:
        """Add 1 to the counter at `key` and return the new count.

        A missing counter starts at 1 and expires in `timeout` seconds. This is
        `add(key, 0, timeout)` followed by `incr(key)`, but atomic and in one
        round trip. Raises ValueError for a timeout under 1 second and
        redis.RedisError when Redis fails.
        """
        if int(timeout) < 1:
            raise ValueError(f"timeout must be at least 1 second, got {timeout!r}")
        key = self.make_and_validate_key(key, version=version)
        return self._cache.incr_or_add(key, int(timeout))
