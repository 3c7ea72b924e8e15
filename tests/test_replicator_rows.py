"""What lands in ClickHouse: completed records only, deletions, versions, types and dead letters.

Records travel the real path: the callback API writes DynamoDB Local, the
replicator reads its stream and inserts into chdb.
"""

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from django.conf import settings

from oot_ingest import dynamo
from oot_views.queries import run_query
from replicator import clickhouse, stream
from replicator.models import DeadLetter, ShardCheckpoint
from tests.conftest import ROOT, callback_body, clickhouse_rows, post_callback, replicate

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"


def raw_rows() -> list[dict]:
    result = clickhouse.client().query(f"SELECT dynamoKey, _version, _is_deleted FROM {clickhouse.TABLE}")
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def put_item(item: dict) -> None:
    """Write an item straight to DynamoDB, bypassing the API's validation."""
    dynamo.table().put_item(Item=item)


def test_in_progress_record_is_not_replicated(client):
    assert post_callback(client, callback_body("in_progress")).status_code == 200

    replicate()

    assert raw_rows() == []
    assert ShardCheckpoint.objects.get().sequence_number != "", "the checkpoint still moves past the record"


def test_manual_delete_removes_row(client):
    post_callback(client, callback_body("in_progress"))
    post_callback(client, callback_body("completed"))
    replicate()
    assert [row["dynamoKey"] for row in clickhouse_rows()] == [KEY]

    dynamo.client().delete_item(TableName=settings.DYNAMODB_TABLE, Key={"dynamoKey": {"S": KEY}})
    replicate()

    assert clickhouse_rows() == []
    tombstones = [row for row in raw_rows() if row["_is_deleted"]]
    assert len(tombstones) == 1
    assert tombstones[0]["dynamoKey"] == KEY


def test_delete_of_running_job_changes_nothing(client):
    post_callback(client, callback_body("in_progress"))
    dynamo.client().delete_item(TableName=settings.DYNAMODB_TABLE, Key={"dynamoKey": {"S": KEY}})

    replicate()

    assert raw_rows() == []


def test_late_in_progress_makes_newer_version(client):
    post_callback(client, callback_body("completed"))
    replicate()
    late = post_callback(client, callback_body("in_progress"))
    assert late.json()["status"] == "completed"
    replicate()

    rows = clickhouse_rows()
    assert len(rows) == 1
    assert rows[0]["revision"] == 2
    assert rows[0]["started_at"] == datetime(2026, 12, 4, 10, 15, 30)
    assert rows[0]["queue_time"] == 12.5


def test_numbers_become_floats_and_integers(client):
    post_callback(client, callback_body("in_progress", queue_time=12.345))
    post_callback(client, callback_body("completed", queue_time=None))
    replicate()

    row = clickhouse_rows()[0]
    assert row["queue_time"] == 12.345
    assert isinstance(row["queue_time"], float)
    assert row["execution_time"] is None
    assert row["total_tests"] == 100
    assert row["failed_tests"] == 2
    assert row["run_attempt"] == 1
    assert row["pr_number"] == 4242
    assert json.loads(row["environment"]) == {"device": "Ascend910B", "driver": "24.1"}


def test_missing_started_at_is_unknown(client):
    # A lost in_progress: only the completion arrives.
    post_callback(client, callback_body("completed"))
    replicate()

    row = clickhouse_rows()[0]
    assert row["started_at"] == datetime(1970, 1, 1)
    duration = clickhouse.client().query(f"SELECT duration_seconds FROM {clickhouse.TABLE} FINAL")
    assert duration.result_rows == [(0.0,)]

    results = run_query("oot_pr_results", pr=4242, upstream_repo="pytorch/pytorch")
    assert results[0]["placed_at"] == datetime(2026, 12, 4, 10, 45, 12), "placed by completed_at"
    assert results[0]["duration_seconds"] == 0


def test_missing_completed_at_uses_store_time(client):
    body = callback_body("completed")
    del body["untrusted"]["callback_payload"]["workflow"]["completed_at"]
    post_callback(client, body)
    replicate()

    stored = dynamo.table().get_item(Key={"dynamoKey": KEY})["Item"]
    row = clickhouse_rows()[0]
    expected = datetime.fromisoformat(stored["updated_at"].replace("Z", "+00:00")).replace(tzinfo=None)
    assert row["completed_at"] == expected


def bad_item(key_suffix: str, **fields) -> dict:
    item = {
        "dynamoKey": f"acme-ai/torch-npu/bad/npu-ci/{key_suffix}/1",
        "status": "completed",
        "revision": 1,
        "downstream_repo": "acme-ai/torch-npu",
        "delivery_id": "bad",
        "completed_at": "2026-12-04T10:45:12Z",
    }
    item.update(fields)
    return item


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"completed_at": "yesterday"}, "completed_at is not an ISO 8601 time"),
        ({"completed_at": "2300-01-01T00:00:00Z"}, "completed_at is outside the range of DateTime64(9)"),
        ({"pr_number": -4}, "pr_number is not an integer"),
        ({"total_tests": 2**64}, "total_tests is not an integer"),
        ({"run_attempt": 2**32}, "run_attempt is not an integer"),
        ({"conclusion": {"S", "set"}}, "conclusion is not a string"),
        ({"swept": "yes"}, "swept is not a boolean"),
    ],
)
def test_unconvertible_record_becomes_dead_letter(client, fields, reason):
    put_item(bad_item("job", **fields))
    post_callback(client, callback_body("completed"))

    replicate()

    letter = DeadLetter.objects.get()
    assert reason in letter.reason
    assert letter.dynamo_key == "acme-ai/torch-npu/bad/npu-ci/job/1"
    assert letter.event_name == "INSERT"
    assert letter.sequence_number.isdigit()
    assert "dynamoKey" in json.loads(letter.image)
    assert [row["dynamoKey"] for row in clickhouse_rows()] == [KEY], "the rest of the batch still lands"


def test_dead_letter_stored_once_when_batch_repeats(client):
    put_item(bad_item("job", pr_number=-1))
    replicate()
    checkpoint = ShardCheckpoint.objects.get()
    ShardCheckpoint.objects.filter(pk=checkpoint.pk).update(sequence_number="")
    stream.iterator_cache.clear()

    replicate()

    assert DeadLetter.objects.count() == 1


TIME_ZONE_SCRIPT = textwrap.dedent(
    """
    import json, os, time
    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = "hud.settings"
    django.setup()
    # Django sets the process time zone to settings.TIME_ZONE; set Berlin
    # again before chdb starts, so both Python and the engine run in it.
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()

    from decimal import Decimal
    from replicator import clickhouse
    from replicator.convert import to_row
    from replicator.writer import insert_rows

    clickhouse.ensure_schema()
    item = {
        "dynamoKey": "acme-ai/torch-npu/d/npu-ci/job/1",
        "status": "completed",
        "revision": Decimal(2),
        "queue_time": Decimal("12.5"),
        "started_at": "2026-07-04T10:15:30Z",
        "completed_at": "2026-07-04T12:45:12.123456+02:00",
    }
    insert_rows([to_row(item)])
    answer = clickhouse.client().query(
        "SELECT toString(started_at), toString(completed_at), toUnixTimestamp64Nano(started_at), "
        "started_at, queue_time, timezone() FROM oot_workflow_job"
    )
    started_text, completed_text, started_nanos, started_value, queue_time, engine_zone = answer.result_rows[0]
    print(json.dumps({
        "tzname": time.tzname[0],
        "engine_zone": engine_zone,
        "started_text": started_text,
        "completed_text": completed_text,
        "started_nanos": started_nanos,
        "started_value": started_value.isoformat(),
        "queue_time": queue_time,
    }))
    """
)


def test_times_stay_utc_in_berlin(tmp_path):
    environment = {
        **os.environ,
        "TZ": "Europe/Berlin",
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    finished = subprocess.run(
        [sys.executable, "-c", TIME_ZONE_SCRIPT],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    answer = json.loads(finished.stdout.strip().splitlines()[-1])
    assert answer["tzname"] == "CET", "the subprocess must run in Berlin time"
    assert answer["engine_zone"] == "Europe/Berlin"
    assert answer["started_text"] == "2026-07-04 10:15:30.000000000"
    assert answer["completed_text"] == "2026-07-04 10:45:12.123456000"
    assert answer["started_nanos"] == int(datetime(2026, 7, 4, 10, 15, 30, tzinfo=UTC).timestamp()) * 10**9
    assert answer["started_value"] == "2026-07-04T10:15:30"
    assert answer["queue_time"] == 12.5
