"""ClickHouse access through clickhouse-connect, for a server or embedded chdb.

`CLICKHOUSE_URL` selects the target: `chdb:///<path>` opens the in-process
engine, `http(s)://...` a server. chdb lets one process own a data directory,
so in embedded mode only the serving process (or the test process) may call
`client()`; any other process gets `ClickHouseBusy` with a message saying so.
"""

import logging
import threading
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, ProgrammingError
from django.conf import settings

logger = logging.getLogger(__name__)

TABLE = "oot_workflow_job"
SCHEMA_PATH = Path(__file__).with_name("schema.sql")

_local = threading.local()


class ClickHouseBusy(RuntimeError):
    """The embedded chdb directory is owned by another process (usually the running service)."""


def is_embedded() -> bool:
    return settings.CLICKHOUSE_URL.startswith("chdb:")


def _chdb_path() -> str:
    return settings.CLICKHOUSE_URL.removeprefix("chdb://")


def client():
    """Return this thread's ClickHouse client, opening it on first use."""
    cached = getattr(_local, "client", None)
    if cached is not None and getattr(_local, "url", None) == settings.CLICKHOUSE_URL:
        return cached
    url = settings.CLICKHOUSE_URL
    try:
        if is_embedded():
            Path(_chdb_path()).mkdir(parents=True, exist_ok=True)
            opened = clickhouse_connect.get_client(dsn=url, database=settings.CLICKHOUSE_DATABASE)
        else:
            opened = clickhouse_connect.get_client(
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
    _local.client = opened
    _local.url = url
    return opened


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
