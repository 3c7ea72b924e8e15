"""Run the saved queries in oot_views/queries/*.sql with server-side parameters, behind a result cache.

Every query binds its inputs as `{name:Type}` parameters, so no SQL text is
ever built from input, and runs with a timeout: CLICKHOUSE_QUERY_TIMEOUT
seconds, passed as ClickHouse's max_execution_time. The pass-rate
conclusions are bound from the shared vocabulary so every page counts the
same way.

Results are cached in Django's default cache (Redis) together with the
data version, from the highest block numbers among the active parts of the
records table and of the hourly rollup. Every insert raises it and merges
keep it, so a cached result is served only while
the table holds exactly the rows it was computed from, and for at most
OOT_QUERY_CACHE_SECONDS, which bounds how far the start of a time window may
lag behind. While one request recomputes a result, concurrent requests get
the previous one if it is at most OOT_QUERY_CACHE_STALE_SECONDS old.
"""

import hashlib
import json
import logging
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from django.conf import settings
from django.core.cache import caches
from redis.exceptions import RedisError

from oot_ingest.vocabulary import FAILURE_CONCLUSIONS, SUCCESS_CONCLUSIONS
from replicator import clickhouse, rollup

logger = logging.getLogger(__name__)

QUERY_DIR = Path(__file__).with_name("queries")
CACHE_PREFIX = "oot:query:"
# A cache that fails does not fail the page, because the query then runs uncached.
CACHE_ERRORS = (RedisError, OSError)


# Saved queries that read the hourly rollup rather than the records table.
ROLLUP_QUERIES = frozenset({"oot_summary", "oot_success_rate", "oot_backend_summary"})
_fold_lock = threading.Lock()


class QueryFailed(Exception):
    """A saved query failed or timed out, which pages show as an error state."""


@cache
def _sql(name: str) -> str:
    return (QUERY_DIR / f"{name}.sql").read_text(encoding="utf-8")


def _query_settings() -> dict[str, Any]:
    return {"max_execution_time": settings.CLICKHOUSE_QUERY_TIMEOUT, "timeout_overflow_mode": "throw"}


def execute(name: str, **parameters: Any) -> list[dict[str, Any]]:
    """Run a saved query uncached and return its rows as dicts, or raise QueryFailed on any ClickHouse error."""
    if name in ROLLUP_QUERIES:
        _bring_rollups_up_to_date()
    return _run(name, **parameters)


def _run(name: str, **parameters: Any) -> list[dict[str, Any]]:
    bound = {
        "table": clickhouse.TABLE,
        "rollup": rollup.HOURLY,
        "latency_bounds": list(rollup.LATENCY_BOUNDS),
        "success_conclusions": list(SUCCESS_CONCLUSIONS),
        "failure_conclusions": list(FAILURE_CONCLUSIONS),
        **parameters,
    }
    started = time.perf_counter()
    try:
        result = clickhouse.client().query(_sql(name), parameters=bound, settings=_query_settings())
    except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.error("query failed name=%s parameters=%s error=%s", name, parameters, str(error)[:500])
        raise QueryFailed(f"the {name} query failed") from error
    finally:
        _timing.add("query_seconds", time.perf_counter() - started)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _bring_rollups_up_to_date() -> None:
    """Fold rows queued since the replicator's last fold, so the rollup matches the records table.

    A fold that fails (a read-only ClickHouse user, say) is logged and the
    rollup is read as it is: the replicator folds again after its next run.
    The fold takes the replicator's lock, so that it never reads the queue
    while a run inserts rows.
    """
    from replicator.runner import lock_for_fold

    started = time.perf_counter()
    try:
        if rollup.is_current():
            return
        with _fold_lock, lock_for_fold() as held:
            # Without the lock a replication run is under way, and it folds when its rows are in.
            if held:
                rollup.ensure_current()
    except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.warning("rollup not brought up to date before a query: %s", str(error)[:300])
    finally:
        _timing.add("query_seconds", time.perf_counter() - started)


def data_version() -> int | None:
    """Return the data version, or None when it cannot be read (then nothing is cached).

    The version is the sum of the highest block numbers of the records table
    and the hourly rollup, so it changes when either does: a fold changes the
    rollup without inserting records.
    """
    started = time.perf_counter()
    try:
        result = clickhouse.client().query(
            "SELECT sum(highest) FROM (SELECT max(max_block_number) AS highest FROM system.parts"
            " WHERE database = {database:String} AND table IN {tables:Array(String)} AND active GROUP BY table)",
            parameters={"database": settings.CLICKHOUSE_DATABASE, "tables": [clickhouse.TABLE, rollup.HOURLY]},
            settings=_query_settings(),
        )
    except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.warning("data version not read, queries run uncached: %s", str(error)[:300])
        return None
    finally:
        _timing.add("query_seconds", time.perf_counter() - started)
    return int(result.result_rows[0][0] or 0)


def run_query(name: str, **parameters: Any) -> list[dict[str, Any]]:
    """Return a saved query's rows, from the cache when the table has not changed since they were computed."""
    max_age = settings.OOT_QUERY_CACHE_SECONDS
    # Fold first, so that the data version below already includes the fold.
    if name in ROLLUP_QUERIES:
        _bring_rollups_up_to_date()
    version = data_version() if max_age > 0 else None
    if version is None:
        return _run(name, **parameters)

    key = _cache_key(name, parameters)
    entry = _cache_call("get", key)
    now = time.time()
    if entry and entry["version"] == version and now - entry["computed_at"] < max_age:
        _timing.add("cache_hits", 1)
        return entry["rows"]

    lock = key + ":refresh"
    # The lock expires on its own if its holder dies in the middle.
    locked = bool(_cache_call("add", lock, 1, timeout=int(settings.CLICKHOUSE_QUERY_TIMEOUT) + 5))
    if not locked and entry and now - entry["computed_at"] < settings.OOT_QUERY_CACHE_STALE_SECONDS:
        _timing.add("cache_hits", 1)
        return entry["rows"]
    try:
        rows = _run(name, **parameters)
    finally:
        if locked:
            _cache_call("delete", lock)
    _timing.add("cache_misses", 1)
    _cache_call("set", key, {"version": version, "computed_at": now, "rows": rows}, timeout=int(max_age) + 1)
    return rows


def _cache_key(name: str, parameters: dict) -> str:
    identity = json.dumps(
        [settings.CLICKHOUSE_URL, settings.CLICKHOUSE_DATABASE, name, parameters], sort_keys=True, default=str
    )
    return CACHE_PREFIX + name + ":" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def _cache_call(method: str, *arguments, **options):
    try:
        return getattr(caches["default"], method)(*arguments, **options)
    except CACHE_ERRORS as error:
        logger.debug("query cache %s failed: %s", method, error)
        return None


class _RequestTiming(threading.local):
    """Time spent in ClickHouse and cache outcomes of the current thread, read by the Server-Timing middleware."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, name: str, amount: float) -> None:
        self.values[name] = self.values.get(name, 0) + amount

    def take(self) -> dict[str, float]:
        values, self.values = self.values, {}
        return values


_timing = _RequestTiming()


def add_timing(name: str, amount: float) -> None:
    """Add to one of this thread's timing figures, such as dynamodb_seconds."""
    _timing.add(name, amount)


def take_timing() -> dict[str, float]:
    """Return and reset this thread's timing figures: query_seconds, dynamodb_seconds, cache_hits, cache_misses."""
    return _timing.take()
