"""The replicator as a timer thread inside the serving process (embedded chdb mode).

chdb lets one process own its data directory, so with `CLICKHOUSE_URL=chdb://`
the process that serves the pages also runs replication on the beat schedule.
"""

import logging
import threading

from django.conf import settings

from oot_ingest import sweeper
from replicator import clickhouse
from replicator.runner import run_locked

logger = logging.getLogger(__name__)

_started = threading.Event()


def _loop(stop: threading.Event) -> None:
    interval = settings.REPLICATOR_INTERVAL_SECONDS
    logger.info("embedded replicator started interval=%ss", interval)
    while not stop.is_set():
        try:
            run_locked()
        except Exception:  # noqa: BLE001 - the thread must outlive any single failed run
            logger.exception("embedded replication run failed")
        stop.wait(interval)


def start(stop: threading.Event | None = None) -> threading.Thread | None:
    """Ensure the ClickHouse schema and start the replication and orphan-sweep threads once per process."""
    if _started.is_set():
        return None
    _started.set()
    clickhouse.ensure_schema()
    stop = stop or threading.Event()
    thread = threading.Thread(target=_loop, args=(stop,), name="replicator", daemon=True)
    thread.start()
    # The orphan sweep runs beside replication, as Celery beat would run it.
    sweeper.start_embedded(stop)
    return thread
