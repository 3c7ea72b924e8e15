"""Django's Redis cache with `incr` in one round trip.

django-ratelimit counts a callback with `cache.add` and, once the window's
key exists, `cache.incr`. Django's Redis backend spends two round trips on
`incr`: EXISTS, then INCRBY. This backend runs both in one Lua script, so a
rate-limited callback costs two Redis round trips instead of three.
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

# Increment only a key that exists: INCRBY on a missing key would create it
# without an expiry. The script returns nil for a missing key.
INCREMENT_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return nil
"""


class OneTripIncrClient(RedisCacheClient):
    def incr(self, key, delta):
        client = self.get_client(key, write=True)
        value = client.eval(INCREMENT_EXISTING, 1, key, delta)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value


class OneTripIncrRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = OneTripIncrClient
