"""One replication run at a time: the Redis lock, its renewal, and what happens without Redis.

Runs against the test session's real Redis, from threads and from separate
processes. The work under the lock is a stand-in that waits on events, so
the tests control exactly when a run is in progress.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from redis import Redis

from oot_ingest import counters
from replicator import runner
from replicator.stream import RunStats
from tests.conftest import ROOT, callback_body, clickhouse_rows, post_callback

pytestmark = pytest.mark.usefixtures("stores")


class BlockingWork:
    """Work that holds the lock until released; records how it was called."""

    def __init__(self, stop_aware: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stop_aware = stop_aware
        self.stopped_by_lock_loss = False
        self.calls = 0

    def __call__(self, deadline_seconds: float, should_stop) -> RunStats:
        self.calls += 1
        self.entered.set()
        finish = time.monotonic() + 30
        while not self.release.is_set() and time.monotonic() < finish:
            if self.stop_aware and should_stop():
                self.stopped_by_lock_loss = True
                break
            time.sleep(0.02)
        return RunStats()


def start_runner(work) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(runner.run_locked(work)), daemon=True)
    thread.start()
    return thread, results


def lock_key_exists() -> bool:
    return bool(counters.redis_client().exists(runner.LOCK_NAME))


def test_second_runner_exits_while_first_works():
    first = BlockingWork()
    first_thread, first_results = start_runner(first)
    assert first.entered.wait(10)

    second = BlockingWork()
    second_thread, second_results = start_runner(second)
    second_thread.join(timeout=5)

    assert not second_thread.is_alive(), "the second runner must return at once"
    assert second_results == [None]
    assert second.calls == 0
    assert first_thread.is_alive()

    first.release.set()
    first_thread.join(timeout=10)
    assert isinstance(first_results[0], RunStats)
    assert not lock_key_exists(), "the lock is released after the run"


def test_lock_is_renewed_while_working(monkeypatch):
    monkeypatch.setattr(runner, "LOCK_TTL_SECONDS", 1)
    monkeypatch.setattr(runner, "RENEW_INTERVAL_SECONDS", 0.2)
    work = BlockingWork()
    thread, _results = start_runner(work)
    assert work.entered.wait(10)

    # Three TTLs long, the key must never disappear and no other run may start.
    samples = []
    for _ in range(30):
        samples.append(lock_key_exists())
        assert runner.run_locked(BlockingWork()) is None
        time.sleep(0.1)

    work.release.set()
    thread.join(timeout=10)
    assert all(samples)


def test_lost_lock_stops_the_run(monkeypatch):
    monkeypatch.setattr(runner, "RENEW_INTERVAL_SECONDS", 0.1)
    work = BlockingWork(stop_aware=True)
    thread, results = start_runner(work)
    assert work.entered.wait(10)

    # The lock expires or another owner takes it: the renewal fails.
    counters.redis_client().delete(runner.LOCK_NAME)
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert work.stopped_by_lock_loss
    assert isinstance(results[0], RunStats)


def test_without_redis_embedded_runs_unlocked(monkeypatch, settings):
    monkeypatch.setattr(counters, "_redis", Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    work = BlockingWork()
    work.release.set()

    assert isinstance(runner.run_locked(work), RunStats)
    assert work.calls == 1

    settings.CLICKHOUSE_URL = "http://127.0.0.1:1"
    assert runner.run_locked(work) is None, "with a ClickHouse server, runs need the lock"
    assert work.calls == 1


def test_locked_run_replicates(client, demo_allowlist):
    post_callback(client, callback_body("completed"))

    stats = runner.run_locked()

    assert stats is not None
    assert stats.rows_inserted == 1
    assert len(clickhouse_rows()) == 1


PROCESS_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = "hud.settings"
    django.setup()

    from replicator import runner
    from replicator.stream import RunStats

    skipped_marker = sys.argv[1]

    def work(deadline_seconds, should_stop):
        # Hold the lock until the other process has given up (at most 60 s).
        finish = time.monotonic() + 60
        while not os.path.exists(skipped_marker) and time.monotonic() < finish:
            time.sleep(0.05)
        return RunStats()

    if runner.run_locked(work):
        print("ran", flush=True)
    else:
        open(skipped_marker, "w").close()
        print("skipped", flush=True)
    """
)


def test_two_processes_run_once(tmp_path):
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_SCRIPT, str(tmp_path / "skipped")],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout.strip())

    assert sorted(outputs) == ["ran", "skipped"]
