"""Run the saved queries in oot_views/queries/*.sql with server-side parameters.

Every query binds its inputs as `{name:Type}` parameters and runs with a
timeout; no SQL text is ever built from input. The pass-rate conclusions are
bound from the shared vocabulary so every page counts the same way.
"""

import logging
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from django.conf import settings

from oot_ingest.vocabulary import FAILURE_CONCLUSIONS, SUCCESS_CONCLUSIONS
from replicator import clickhouse

logger = logging.getLogger(__name__)

QUERY_DIR = Path(__file__).with_name("queries")


class QueryFailed(Exception):
    """A saved query failed or timed out; pages show an error state instead."""


@cache
def _sql(name: str) -> str:
    return (QUERY_DIR / f"{name}.sql").read_text(encoding="utf-8")


def run_query(name: str, **parameters: Any) -> list[dict[str, Any]]:
    """Run a saved query and return its rows as dicts; raise QueryFailed on any ClickHouse error."""
    bound = {
        "table": clickhouse.TABLE,
        "success_conclusions": list(SUCCESS_CONCLUSIONS),
        "failure_conclusions": list(FAILURE_CONCLUSIONS),
        **parameters,
    }
    timeout = settings.CLICKHOUSE_QUERY_TIMEOUT
    started = time.perf_counter()
    try:
        result = clickhouse.client().query(
            _sql(name),
            parameters=bound,
            settings={"max_execution_time": max(1, int(timeout)), "timeout_overflow_mode": "throw"},
        )
    except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.error("query failed name=%s parameters=%s error=%s", name, parameters, str(error)[:500])
        raise QueryFailed(f"the {name} query failed") from error
    elapsed = time.perf_counter() - started
    _record_query_time(elapsed)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


_timing = threading.local()


def _record_query_time(seconds: float) -> None:
    """Add to the time this thread spent in queries (read by the Server-Timing middleware)."""
    _timing.seconds = getattr(_timing, "seconds", 0.0) + seconds


def take_query_seconds() -> float:
    """Return and reset the time this thread spent in queries."""
    total = getattr(_timing, "seconds", 0.0)
    _timing.seconds = 0.0
    return total
