"""Django's Redis cache with one-round-trip counters.

Django's Redis backend spends two round trips on `incr`: EXISTS, then
INCRBY. This backend runs both in one Lua script. It also adds
`incr_or_add`, which counts one event in a fixed window in one round trip:
the rate limit uses it instead of django-ratelimit's `add` followed by `incr`.
"""

from functools import cached_property

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

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

    def start_incr_or_add(self, key, timeout: int) -> "PendingCount":
        return PendingCount(self.get_client(key, write=True), self._increment_or_add_script, key, timeout)


class PendingCount:
    """An `incr_or_add` sent to Redis whose reply is read later, by `result`.

    The caller can do other work while Redis runs the script. It must call `result`
    or `discard` exactly once: until then the pending count keeps one
    connection of the pool checked out.
    """

    def __init__(self, client, script, key, timeout: int):
        self._client = client
        self._script = script
        self._key = key
        self._timeout = timeout
        self._pool = client.connection_pool
        self._connection = self._pool.get_connection()
        try:
            self._connection.send_command("EVALSHA", script.sha, 1, key, timeout)
        except (RedisConnectionError, RedisTimeoutError):
            # A connection that broke while idle: result() sends the count again on a new one.
            self._release(broken=True)
        except BaseException:
            self._release(broken=True)
            raise

    def _release(self, *, broken: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if broken:
            connection.disconnect()
        self._pool.release(connection)

    def result(self) -> int:
        """Read the new count; raises redis.RedisError when Redis fails."""
        if self._connection is None:
            return self._script(keys=[self._key], args=[self._timeout], client=self._client)
        try:
            count = self._connection.read_response()
        except NoScriptError:
            # Redis restarted since the script was loaded; the script call loads it again.
            self._release(broken=False)
            return self._script(keys=[self._key], args=[self._timeout], client=self._client)
        except (RedisConnectionError, RedisTimeoutError):
            # NOTE: if Redis ran the script and only the reply was lost, this
            # counts the event twice, as redis-py's own retry would.
            self._release(broken=True)
            return self._script(keys=[self._key], args=[self._timeout], client=self._client)
        except BaseException:
            self._release(broken=True)
            raise
        self._release(broken=False)
        return count

    def discard(self) -> None:
        """Read and drop the reply when nothing needs the count.

        A Redis failure is not raised: the connection is closed instead.
        """
        if self._connection is None:
            return
        try:
            self._connection.read_response()
        except NoScriptError:
            self._release(broken=False)
        except Exception:  # noqa: BLE001 - the reply is not needed, and a broken connection is closed
            self._release(broken=True)
        else:
            self._release(broken=False)


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

    def start_incr_or_add(self, key, timeout: int, version=None) -> PendingCount:
        """Send `incr_or_add` to Redis and return at once; the PendingCount's `result` is the new count."""
        if int(timeout) < 1:
            raise ValueError(f"timeout must be at least 1 second, got {timeout!r}")
        key = self.make_and_validate_key(key, version=version)
        return self._cache.start_incr_or_add(key, int(timeout))
