"""Failures: inserts are retried with backoff and the checkpoint waits; runners outlive outages.

The failures are real: the ClickHouse table is renamed away, or the settings
point ClickHouse or DynamoDB at a loopback port where nothing listens.
"""

import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connections

from replicator import clickhouse, embedded, writer
from replicator.models import ReplicatorStatus, ShardCheckpoint
from replicator.stream import replicate_once
from replicator.tasks import replicate_stream
from tests.conftest import callback_body, clickhouse_rows, post_callback, replicate
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("demo_allowlist")

AWAY = f"{clickhouse.TABLE}_away"


@pytest.fixture
def table_away(stores):
    """Rename the ClickHouse table so that inserts fail; yield a function that puts it back."""
    client = clickhouse.client()
    client.command(f"RENAME TABLE {clickhouse.TABLE} TO {AWAY}")
    state = {"away": True}

    def restore() -> None:
        if state["away"]:
            client.command(f"RENAME TABLE {AWAY} TO {clickhouse.TABLE}")
            state["away"] = False

    yield restore
    restore()


@pytest.fixture
def recorded_sleeps(monkeypatch):
    """Record the insert backoff delays instead of sleeping through them."""
    delays: list[float] = []
    monkeypatch.setattr(writer, "time", SimpleNamespace(sleep=delays.append))
    return delays


def send_completed_job(client) -> None:
    assert post_callback(client, callback_body("in_progress")).status_code == 200
    assert post_callback(client, callback_body("completed")).status_code == 200


@pytest.mark.usefixtures("stores")
def test_failed_insert_keeps_checkpoint_then_recovers(client, table_away, recorded_sleeps):
    send_completed_job(client)

    assert replicate_once(deadline_seconds=20) is None

    checkpoint = ShardCheckpoint.objects.get()
    assert checkpoint.sequence_number == "", "the checkpoint must not move past rows that are not stored"
    assert len(recorded_sleeps) == writer.INSERT_ATTEMPTS - 1
    for attempt, delay in enumerate(recorded_sleeps):
        base = writer.INSERT_BACKOFF_SECONDS * 2**attempt
        assert 0.5 * base <= delay <= 1.5 * base, f"attempt {attempt + 1} waited {delay:.2f} s"
    status = ReplicatorStatus.objects.get()
    assert status.consecutive_failures == 1
    assert status.last_success_at is None
    assert "UNKNOWN_TABLE" in status.last_error

    table_away()
    replicate()

    assert [row["status"] for row in clickhouse_rows()] == ["completed"]
    assert ShardCheckpoint.objects.get().sequence_number != ""
    status = ReplicatorStatus.objects.get()
    assert status.consecutive_failures == 0
    assert status.last_success_at is not None
    raw = clickhouse.client().query(f"SELECT count() FROM {clickhouse.TABLE}").result_rows[0][0]
    assert raw == 1


@pytest.mark.usefixtures("stores")
def test_insert_recovers_within_retries(client, table_away, monkeypatch):
    send_completed_job(client)
    # The table comes back while the writer waits before its second attempt.
    monkeypatch.setattr(writer, "time", SimpleNamespace(sleep=lambda _seconds: table_away()))

    stats = replicate_once(deadline_seconds=20)

    assert stats is not None
    assert stats.rows_inserted == 1
    assert len(clickhouse_rows()) == 1


def closed_port_url(scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def embedded_loop(transactional_db, stores, settings, monkeypatch):
    """Run the embedded replication loop in a thread, ticking every 50 ms, after its first good run."""
    settings.REPLICATOR_INTERVAL_SECONDS = 0.05
    monkeypatch.setattr(writer, "INSERT_BACKOFF_SECONDS", 0.01)
    stop = threading.Event()
    thread = threading.Thread(target=embedded._loop, args=(stop,), daemon=True)
    thread.start()
    assert wait_for(lambda: ReplicatorStatus.objects.filter(last_success_at__isnull=False).exists())
    yield thread
    stop.set()
    thread.join(timeout=30)
    connections.close_all()


def rows_now() -> int:
    return len(clickhouse_rows())


def failing_runs() -> int:
    status = ReplicatorStatus.objects.first()
    return status.consecutive_failures if status else 0


def test_embedded_loop_survives_clickhouse_outage(client, settings, embedded_loop):
    chdb_url = settings.CLICKHOUSE_URL
    settings.CLICKHOUSE_URL = closed_port_url()
    send_completed_job(client)
    assert wait_for(lambda: failing_runs() >= 2)
    assert embedded_loop.is_alive()

    settings.CLICKHOUSE_URL = chdb_url

    assert wait_for(lambda: rows_now() == 1), "replication did not resume after ClickHouse came back"
    assert embedded_loop.is_alive()


def test_embedded_loop_survives_dynamodb_outage(client, settings, embedded_loop):
    send_completed_job(client)
    assert wait_for(lambda: rows_now() == 1)
    endpoint = settings.DYNAMODB_ENDPOINT
    settings.DYNAMODB_ENDPOINT = closed_port_url()
    assert wait_for(lambda: failing_runs() >= 2)
    assert embedded_loop.is_alive()

    settings.DYNAMODB_ENDPOINT = endpoint
    post_callback(client, callback_body("completed", job_name="after-outage", check_run_id="777"))

    assert wait_for(lambda: rows_now() == 2), "replication did not resume after DynamoDB came back"
    # The run stores its status after the insert that made the row visible.
    assert wait_for(lambda: failing_runs() == 0)


@pytest.mark.usefixtures("stores")
def test_celery_task_replicates(client):
    send_completed_job(client)

    records = replicate_stream()

    assert records == 2
    assert len(clickhouse_rows()) == 1


def test_beat_schedules_the_task():
    from hud.celery import app

    app.finalize()

    entry = app.conf.beat_schedule["replicate-stream"]
    assert entry["task"] == replicate_stream.name
    assert replicate_stream.name in app.tasks
