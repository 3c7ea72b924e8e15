"""ClickHouse access through clickhouse-connect, for a server or embedded chdb.

`CLICKHOUSE_URL` selects the target: `chdb:///<path>` opens the in-process
engine, `http(s)://...` a server. chdb lets one process own a data directory,
so in embedded mode only the serving process (or the test process) may call
`client()`; any other process gets `ClickHouseBusy` with a message saying so.

Clients belong to the process, not to a thread. Each call takes an idle one
from a pool and puts it back when it returns, so a thread may end at any time
without taking a client with it. The web server ends request threads that sit
idle. When such a thread took a chdb handle with it, the server stopped
responding until its worker process was restarted.
"""

import logging
import os
import threading
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, ProgrammingError
from django.conf import settings

logger = logging.getLogger(__name__)

TABLE = "oot_workflow_job"
SCHEMA_PATH = Path(__file__).with_name("schema.sql")


class ClickHouseBusy(RuntimeError):
    """The embedded chdb directory is owned by another process (usually the running service)."""


def is_embedded() -> bool:
    return settings.CLICKHOUSE_URL.startswith("chdb:")


def _chdb_path() -> str:
    return settings.CLICKHOUSE_URL.removeprefix("chdb://")


def _open(url: str):
    try:
        if is_embedded():
            Path(_chdb_path()).mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=url, database=settings.CLICKHOUSE_DATABASE)
        return clickhouse_connect.get_client(
            dsn=url,
            database=settings.CLICKHOUSE_DATABASE,
            connect_timeout=3,
            send_receive_timeout=max(10, int(settings.CLICKHOUSE_QUERY_TIMEOUT) + 5),
            autogenerate_session_id=False,
        )
    except ProgrammingError as error:
        if is_embedded() and ("lock" in str(error).lower() or "EmbeddedServer" in str(error)):
            raise ClickHouseBusy(
                f"the chdb directory {_chdb_path()} is in use by another process, usually the running "
                "service: stop it with `scripts/service stop` (which leaves DynamoDB Local and Redis running), "
                "then start it again with `scripts/service start`"
            ) from error
        raise


class _Pool:
    """Pool of idle clients for the configured URL. A call takes one, or opens one when none is idle."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = []
        self._url = None

    def take(self):
        """Return the configured URL and an idle client for it, after closing the idle clients of an older URL."""
        url = settings.CLICKHOUSE_URL
        with self._lock:
            if url != self._url:
                stale, self._idle, self._url = self._idle, [], url
            else:
                stale = []
                if self._idle:
                    return url, self._idle.pop()
        for old in stale:
            old.close()
        return url, _open(url)

    def give_back(self, url: str, opened) -> None:
        """Keep a client for the next call, or close it when the URL has changed since it was taken."""
        with self._lock:
            if url == self._url:
                self._idle.append(opened)
                return
        opened.close()

    def forget(self) -> None:
        """Drop every idle client without closing it: a forked child must not touch its parent's."""
        self._lock = threading.Lock()
        self._idle = []
        self._url = None

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


class PooledClient:
    """Stand-in for a clickhouse-connect client whose query, command and insert each run on a pooled client."""

    def _run(self, method: str, args, kwargs):
        url, opened = _pool.take()
        try:
            return getattr(opened, method)(*args, **kwargs)
        finally:
            _pool.give_back(url, opened)

    def query(self, *args, **kwargs):
        return self._run("query", args, kwargs)

    def command(self, *args, **kwargs):
        return self._run("command", args, kwargs)

    def insert(self, *args, **kwargs):
        return self._run("insert", args, kwargs)


def client() -> PooledClient:
    """Return the process's ClickHouse client, which opens connections on first use."""
    return _CLIENT


_CLIENT = PooledClient()


def table_engine() -> str:
    """Return the table engine: SharedReplacingMergeTree on ClickHouse Cloud, else ReplacingMergeTree."""
    # NOTE: Cloud is recognised by its host name suffix only; a Cloud service
    # behind a custom domain needs CLICKHOUSE_TABLE_ENGINE set explicitly.
    configured = getattr(settings, "CLICKHOUSE_TABLE_ENGINE", "")
    if configured:
        return configured
    if not is_embedded() and ".clickhouse.cloud" in settings.CLICKHOUSE_URL.lower():
        return "SharedReplacingMergeTree"
    return "ReplacingMergeTree"


def ensure_schema() -> None:
    """Create the records table and its rollups if they do not exist."""
    from replicator import rollup

    statement = SCHEMA_PATH.read_text(encoding="utf-8")
    statement = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
    statement = statement.replace("{database}", settings.CLICKHOUSE_DATABASE).replace("{engine}", table_engine())
    client().command(statement)
    rollup.ensure_schema()


def ping() -> bool:
    try:
        return client().query("SELECT 1", settings={"max_execution_time": 2}).result_rows == [(1,)]
    except (ClickHouseError, ClickHouseBusy, OSError) as error:
        logger.warning("ClickHouse ping failed: %s", error)
        return False
