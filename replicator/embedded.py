"""The replicator as a timer thread inside the serving process (embedded chdb mode).

chdb lets one process own its data directory, so with `CLICKHOUSE_URL=chdb://`
the process that serves the pages also runs replication every
REPLICATOR_INTERVAL_SECONDS. An outage of ClickHouse, DynamoDB, Redis or the
Django database fails that run only: the thread logs it and tries again at
the next tick, and creates the ClickHouse table once it can.
"""

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from oot_ingest import sweeper
from replicator import clickhouse, status
from replicator.runner import run_locked

logger = logging.getLogger(__name__)

_started = threading.Event()


def _tick(schema_ready: bool) -> bool:
    """Run one replication pass, creating the table first if needed, and return True once the table exists."""
    close_old_connections()
    if not schema_ready:
        clickhouse.ensure_schema()
    run_locked()
    return True


def _loop(stop: threading.Event) -> None:
    interval = settings.REPLICATOR_INTERVAL_SECONDS
    logger.info("embedded replicator started interval=%ss", interval)
    schema_ready = False
    while not stop.is_set():
        try:
            schema_ready = _tick(schema_ready)
        except Exception as error:  # noqa: BLE001 - the thread must outlive any single failed run
            _record_failure(f"{type(error).__name__}: {error}")
        stop.wait(interval)
    connection.close()
    logger.info("embedded replicator stopped")


def _record_failure(error: str) -> None:
    try:
        status.record_failure(None, error)
    except DatabaseError:
        status.failure_log.failed(None, error)


def start(stop: threading.Event | None = None) -> threading.Thread | None:
    """Start the replication and orphan-sweep threads once per process."""
    if _started.is_set():
        return None
    _started.set()
    stop = stop or threading.Event()
    thread = threading.Thread(target=_loop, args=(stop,), name="replicator", daemon=True)
    thread.start()
    # The orphan sweep runs beside replication, as Celery beat would run it.
    sweeper.start_embedded(stop)
    return thread
