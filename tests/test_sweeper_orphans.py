"""The orphan sweep: old in_progress records become swept timed_out completions, and late results replace them."""

import io
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client

from oot_ingest import dynamo, policy, provenance, sweeper, tasks
from oot_ingest.counters import redis_client
from oot_ingest.models import AllowlistEntry
from oot_views.pages import Filters, summary
from tests.conftest import callback_body, clickhouse_rows, post_callback, replicate, stored_item

REPO = "acme-ai/torch-npu"
DELIVERY = "11111111-2222-3333-4444-555555555555"
KEY = f"{REPO}/{DELIVERY}/npu-ci/test-float32/98765432100"


def key_for(job_name: str, check_run_id: str | int) -> str:
    return f"{REPO}/{DELIVERY}/npu-ci/{job_name}/{check_run_id}"


def age_record(key: str, hours: float) -> None:
    """Move a record's last write `hours` into the past, as if no callback had come since."""
    moment = datetime.now(UTC) - timedelta(hours=hours)
    dynamo.client().update_item(
        TableName=settings.DYNAMODB_TABLE,
        Key={"dynamoKey": {"S": key}},
        UpdateExpression="SET updated_at = :old",
        ExpressionAttributeValues={":old": {"S": sweeper._iso(moment)}},
        ConditionExpression="attribute_exists(dynamoKey)",
    )


def start_job(client, **overrides) -> None:
    response = post_callback(client, callback_body("in_progress", **overrides))
    assert response.status_code == 200, response.content


@pytest.fixture
def world(stores, demo_allowlist):
    """Empty stores and the demo allowlist."""


def test_sweep_completes_orphan_as_timed_out(client, world):
    start_job(client)
    age_record(KEY, 7)

    stats = sweeper.sweep_orphans()

    assert stats.found == 1
    assert stats.swept == 1
    assert stats.keys == [KEY]
    item = stored_item(KEY)
    assert item["status"] == "completed"
    assert item["conclusion"] == "timed_out"
    assert item["swept"] is True
    assert item["started_at"] == "2026-12-04T10:15:30Z", "fields of the in_progress callback survive"
    assert item["job_name"] == "test-float32"
    assert "running_backend" not in item
    assert "running_pr" not in item
    assert item["revision"] == 2
    assert dynamo.running_jobs_for_backend(REPO) == []


def test_sweep_leaves_recent_jobs(client, world):
    start_job(client)
    age_record(KEY, 5)

    stats = sweeper.sweep_orphans()

    assert stats.found == 0
    assert stored_item(KEY)["status"] == "in_progress"


def test_orphan_hours_setting_is_used(client, world, settings):
    settings.OOT_ORPHAN_HOURS = 2.0
    start_job(client)
    age_record(KEY, 3)

    stats = sweeper.sweep_orphans()

    assert stats.swept == 1


def test_sweep_leaves_completed_jobs(client, world):
    post_callback(client, callback_body("completed", conclusion="failure"))
    age_record(KEY, 30)

    stats = sweeper.sweep_orphans()

    assert stats.found == 0
    item = stored_item(KEY)
    assert item["conclusion"] == "failure"
    assert "swept" not in item or item["swept"] is False


def test_dry_run_writes_nothing(client, world):
    start_job(client)
    age_record(KEY, 7)

    stats = sweeper.sweep_orphans(dry_run=True)

    assert stats.found == 1
    assert stats.swept == 0
    assert stats.keys == [KEY]
    assert stored_item(KEY)["status"] == "in_progress"


def test_sweep_twice_completes_once(client, world):
    start_job(client)
    age_record(KEY, 7)

    first = sweeper.sweep_orphans()
    second = sweeper.sweep_orphans()

    assert first.swept == 1
    assert second.found == 0
    assert stored_item(KEY)["revision"] == 2


def test_orphan_completed_between_query_and_write(client, world):
    start_job(client)
    age_record(KEY, 7)
    item = next(sweeper.orphaned_records(REPO, datetime.now(UTC) - timedelta(hours=6)))
    post_callback(client, callback_body("completed", conclusion="success"))

    result = dynamo.write_record(sweeper.timed_out_record(item, datetime.now(UTC)), sweep=True)

    assert result.changed is False
    assert stored_item(KEY)["conclusion"] == "success"


def test_late_genuine_completion_replaces_swept(client, world):
    start_job(client)
    age_record(KEY, 7)
    sweeper.sweep_orphans()
    replicate()
    swept_rows = clickhouse_rows()
    assert len(swept_rows) == 1
    assert swept_rows[0]["conclusion"] == "timed_out"
    assert swept_rows[0]["swept"] is True

    late = post_callback(client, callback_body("completed", conclusion="success"))

    assert late.status_code == 200
    assert late.json()["status"] == "completed"
    item = stored_item(KEY)
    assert item["conclusion"] == "success"
    assert item["swept"] is False
    assert item["completed_at"] == "2026-12-04T10:45:12Z"
    replicate()
    rows = clickhouse_rows()
    assert len(rows) == 1
    assert rows[0]["conclusion"] == "success"
    assert rows[0]["swept"] is False


def test_second_genuine_completion_does_not_replace_first(client, world):
    start_job(client)
    age_record(KEY, 7)
    sweeper.sweep_orphans()
    post_callback(client, callback_body("completed", conclusion="success"))

    again = post_callback(client, callback_body("completed", conclusion="failure"))

    assert again.status_code == 200
    assert stored_item(KEY)["conclusion"] == "success", "only a swept record may be completed again"


@pytest.mark.parametrize("job_name", ["linux:test (1, 4)", "build/cuda/12.4", "20250428", "a:b/c:d"])
def test_awkward_job_names_are_swept(client, world, job_name):
    start_job(client, job_name=job_name, check_run_id=555)
    key = key_for(job_name, 555)
    age_record(key, 7)

    stats = sweeper.sweep_orphans()

    assert stats.keys == [key]
    assert stored_item(key)["conclusion"] == "timed_out"
    assert stored_item(key)["job_name"] == job_name


def test_disabled_backend_is_still_swept(client, world):
    start_job(client)
    AllowlistEntry.objects.filter(repository=REPO).update(enabled=False)
    policy.clear_policy_cache()
    age_record(KEY, 7)

    stats = sweeper.sweep_orphans()

    assert stats.swept == 1


def test_swept_jobs_stay_out_of_average_duration(client, world):
    post_callback(client, callback_body("in_progress", job_name="test-float16", check_run_id=1))
    post_callback(client, callback_body("completed", job_name="test-float16", check_run_id=1, conclusion="success"))
    start_job(client, job_name="test-float32", check_run_id=2)
    age_record(key_for("test-float32", 2), 7)
    sweeper.sweep_orphans()
    replicate()

    data = summary(Filters(days=30, event_type="pull_request"))

    backends = {item["repository"]: item for level in data["levels"] for item in level["backends"]}
    npu = backends[REPO]
    assert npu["total"] == 2
    assert npu["successes"] == 1
    assert npu["failures"] == 1, "a swept job counts as timed_out in the pass rate"
    # 10:15:30 to 10:45:12 is 1,782 s; the swept job ran until the sweep.
    assert npu["avg_duration_seconds"] == pytest.approx(1782.0)


def test_enforced_backend_accepts_completion_after_sweep(client, world):
    AllowlistEntry.objects.filter(repository=REPO).update(provenance="enforce")
    policy.clear_policy_cache()
    token, _expires_at = provenance.mint_token(delivery_id=DELIVERY, repository=REPO, pr_number=4242, head_sha="a" * 40)
    started = callback_body("in_progress")
    started["untrusted"]["callback_payload"]["callback_token"] = token
    assert post_callback(client, started).status_code == 200
    age_record(KEY, 7)
    sweeper.sweep_orphans()

    finished = callback_body("completed", conclusion="success")
    finished["untrusted"]["callback_payload"]["callback_token"] = token
    response = post_callback(client, finished)

    assert response.status_code == 200
    assert stored_item(KEY)["conclusion"] == "success"


# --- how the sweep is run ----------------------------------------------------


def test_command_dry_run_lists_keys(client, world):
    start_job(client)
    age_record(KEY, 7)
    output = io.StringIO()

    call_command("sweep_orphans", "--dry-run", stdout=output)

    lines = output.getvalue().splitlines()
    assert lines[0] == KEY
    assert "1 orphaned records found, would complete 1 as timed_out" in lines[-1]
    assert stored_item(KEY)["status"] == "in_progress"


def test_command_sweeps(client, world):
    start_job(client)
    age_record(KEY, 3)
    output = io.StringIO()

    call_command("sweep_orphans", "--hours", "2", stdout=output)

    assert "completed 1 as timed_out" in output.getvalue()
    assert stored_item(KEY)["conclusion"] == "timed_out"


def test_command_rejects_zero_hours(world):
    with pytest.raises(CommandError, match="--hours must be greater than 0"):
        call_command("sweep_orphans", "--hours", "0")


def test_celery_task_sweeps(client, world):
    start_job(client)
    age_record(KEY, 7)

    swept = tasks.sweep_orphans()

    assert swept == 1
    assert stored_item(KEY)["conclusion"] == "timed_out"


def test_locked_run_skips_while_lock_is_held(client, world):
    start_job(client)
    age_record(KEY, 7)
    lock = redis_client().lock(sweeper.LOCK_NAME, timeout=30)
    assert lock.acquire(blocking=False)

    try:
        skipped = sweeper.run_locked()
    finally:
        lock.release()

    assert skipped is None
    assert stored_item(KEY)["status"] == "in_progress"
    assert sweeper.run_locked().swept == 1


def test_beat_schedules_sweep():
    from hud.celery import app

    app.finalize()
    entry = app.conf.beat_schedule["sweep-orphans"]

    assert entry["task"] == "oot_ingest.sweep_orphans"
    assert entry["task"] in app.tasks


@pytest.mark.django_db(transaction=True)
def test_embedded_thread_sweeps(stores, demo_allowlist, settings):
    start_job(Client())
    age_record(KEY, 7)
    settings.OOT_SWEEP_INTERVAL_SECONDS = 0.05
    stop = threading.Event()

    thread = sweeper.start_embedded(stop)
    try:
        deadline = time.monotonic() + 20
        while stored_item(KEY)["status"] != "completed" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert stored_item(KEY)["conclusion"] == "timed_out"
    assert not thread.is_alive()
