"""The service keeps serving after granian ends its idle request threads.

granian ends a request thread that has been idle for the blocking-thread idle
timeout, and later requests run on new threads. Whatever a request thread
keeps (database clients, for example) must be safe to release when it ends.
The server here owns its own chdb directory, DynamoDB table, Redis database
and SQLite database, with the embedded replicator on, as `scripts/service`
runs it. The timeout is set to its minimum of 5 s, so the test idles past it
quickly.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from oot_ingest import dynamo
from tests.conftest import DEMO_ALLOWLIST, TOKEN, callback_body
from tests.services import web_server

ROOT = Path(__file__).resolve().parent.parent
IDLE_TIMEOUT_SECONDS = 5
TABLE = "oot-idle-test-workflow-job"
PAGES = ["/oot", "/oot/acme-ai/torch-npu", "/pr/4242", "/api/oot/summary", "/api/oot/pr/4242"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """granian serving the project with stores of its own and the demo allowlist, idle timeout at 5 s."""
    directory = tmp_path_factory.mktemp("idle")
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "CLICKHOUSE_URL": f"chdb://{directory / 'chdb'}",
        "REPLICATOR_EMBEDDED": "true",
        "DYNAMODB_TABLE": TABLE,
        "REDIS_URL": os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1",
        "LOG_LEVEL": "WARNING",
    }

    def manage(*arguments: str) -> None:
        subprocess.run([sys.executable, "manage.py", *arguments], cwd=ROOT, env=environment, check=True)

    manage("migrate", "--verbosity", "0")
    manage("provision", "--skip-clickhouse")
    manage("allowlist", "import", str(DEMO_ALLOWLIST))
    log_path = directory / "server.log"
    extra = ("--blocking-threads-idle-timeout", str(IDLE_TIMEOUT_SECONDS))
    with web_server(environment, log_path, threads=4, extra=extra) as port:
        yield port, log_path
    dynamo.client().delete_table(TableName=TABLE)


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/oot/results",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-OOT-Relay-Token": TOKEN},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def burst(port: int, round_number: int) -> tuple[list[int], list[int]]:
    """Send callbacks and page requests from four clients at once, so that every request thread serves some."""
    bodies = [
        callback_body(
            "completed",
            conclusion="success",
            delivery_id=f"00000000-0000-4000-8000-{round_number:04d}{index:08d}",
            check_run_id=str(7_000_000 + round_number * 100 + index),
        )
        for index in range(8)
    ]
    with ThreadPoolExecutor(4) as pool:
        posted = list(pool.map(lambda body: post(port, body)[0], bodies))
        fetched = list(pool.map(lambda path: get(port, path), PAGES * 4))
    return posted, fetched


def test_service_serves_after_idle_threads_end(server):
    port, log_path = server
    for round_number in range(2):
        posted, fetched = burst(port, round_number)
        assert posted == [200] * 8
        assert fetched == [200] * len(PAGES) * 4
        time.sleep(IDLE_TIMEOUT_SECONDS + 3)

    # One request at a time after the idle period, on threads started after the idle ones ended.
    for path in PAGES:
        assert get(port, path) == 200, path
    status, answer = post(port, callback_body("in_progress", check_run_id="7999999"))
    assert (status, answer["status"]) == (200, "in_progress")
    stored = dynamo.client().get_item(TableName=TABLE, Key={"dynamoKey": {"S": answer["dynamoKey"]}})["Item"]
    assert stored["status"] == {"S": "in_progress"}
    log = log_path.read_text(errors="replace")
    assert "Unexpected exit" not in log
    assert "Traceback" not in log
