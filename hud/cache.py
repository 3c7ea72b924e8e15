"""Django's Redis cache with `incr` in one round trip.

django-ratelimit counts a callback with `cache.add` and, once the window's
key exists, `cache.incr`. Django's Redis backend spends two round trips on
`incr` (EXISTS, then INCRBY); this one runs both in a single Lua script, so
a rate-limited callback costs two Redis round trips instead of three.
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

# Increment only a key that exists, so a counter never loses its expiry;
# nil means the key is missing.
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
