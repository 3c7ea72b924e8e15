"""A record's state only moves forward, whatever order and however often callbacks arrive."""

import json
import threading
from decimal import Decimal

import pytest

from oot_ingest import dynamo
from oot_ingest.payload import build_record, decode_body
from tests.conftest import callback_body, post_callback, stored_item

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"


def accepted(response, status: str) -> None:
    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True, "status": status, "dynamoKey": KEY}


def without_started_at(body: dict) -> dict:
    body["untrusted"]["callback_payload"]["workflow"].pop("started_at", None)
    return body


def test_first_in_progress_stores_revision_one(client):
    accepted(post_callback(client, callback_body("in_progress")), "in_progress")
    item = stored_item(KEY)
    assert item["status"] == "in_progress"
    assert item["revision"] == 1
    assert item["updated_at"].endswith("Z")
    assert item["running_pr"] == "pytorch/pytorch#4242"
    assert item["running_backend"] == "acme-ai/torch-npu"


def test_duplicate_in_progress_writes_nothing(client):
    accepted(post_callback(client, callback_body("in_progress")), "in_progress")
    before = stored_item(KEY)

    accepted(post_callback(client, callback_body("in_progress")), "in_progress")

    after = stored_item(KEY)
    assert after == before, "a duplicate must neither bump revision nor touch updated_at"


def test_in_progress_with_changed_field_is_written(client):
    accepted(post_callback(client, callback_body("in_progress")), "in_progress")
    accepted(post_callback(client, callback_body("in_progress", queue_time=30.5)), "in_progress")
    item = stored_item(KEY)
    assert item["queue_time"] == Decimal("30.5")
    assert item["revision"] == 2


def test_duplicate_completed_writes_nothing(client):
    accepted(post_callback(client, callback_body("in_progress")), "in_progress")
    accepted(post_callback(client, callback_body("completed")), "completed")
    before = stored_item(KEY)

    accepted(post_callback(client, callback_body("completed")), "completed")

    assert stored_item(KEY) == before


def test_completed_is_final(client):
    accepted(post_callback(client, callback_body("completed", conclusion="success")), "completed")
    before = stored_item(KEY)

    accepted(post_callback(client, callback_body("completed", conclusion="failure")), "completed")

    assert stored_item(KEY) == before
    assert before["conclusion"] == "success"


def test_late_in_progress_changes_nothing(client):
    accepted(post_callback(client, callback_body("in_progress")), "in_progress")
    accepted(post_callback(client, callback_body("completed")), "completed")
    before = stored_item(KEY)
    assert before["revision"] == 2

    accepted(post_callback(client, callback_body("in_progress")), "completed")

    after = stored_item(KEY)
    assert after == before
    assert "running_pr" not in after, "a late in_progress must not mark the job running again"


def test_completed_before_in_progress_is_complete(client):
    accepted(post_callback(client, callback_body("completed", conclusion="failure")), "completed")
    item = stored_item(KEY)
    assert item["status"] == "completed"
    assert item["conclusion"] == "failure"
    assert item["total_tests"] == 100
    assert item["completed_at"] == "2026-12-04T10:45:12Z"
    assert item["queue_time"] == Decimal("12.5")
    assert item["revision"] == 1
    assert "started_at" not in item
    assert "running_pr" not in item


def test_late_in_progress_fills_started_at_only(client):
    accepted(post_callback(client, callback_body("completed", conclusion="failure")), "completed")

    late = callback_body("in_progress", queue_time=3.25)
    late["untrusted"]["callback_payload"]["workflow"]["url"] = "https://github.com/acme-ai/torch-npu/actions/runs/1"
    accepted(post_callback(client, late), "completed")

    item = stored_item(KEY)
    assert item["status"] == "completed"
    assert item["conclusion"] == "failure"
    assert item["started_at"] == "2026-12-04T10:15:30Z", "started_at was absent, so the late in_progress fills it"
    assert item["queue_time"] == Decimal("12.5"), "queue_time was present, so it stays"
    assert item["workflow_run_url"] == "https://github.com/acme-ai/torch-npu/actions/runs/24033272679"
    assert item["revision"] == 2
    assert "running_pr" not in item
    assert "running_backend" not in item


def test_late_in_progress_fills_absent_queue_time(client):
    accepted(post_callback(client, without_started_at(callback_body("completed", queue_time=None))), "completed")
    assert "queue_time" not in stored_item(KEY)

    accepted(post_callback(client, callback_body("in_progress", queue_time=3.25)), "completed")

    item = stored_item(KEY)
    assert item["queue_time"] == Decimal("3.25")
    assert item["started_at"] == "2026-12-04T10:15:30Z"
    assert item["status"] == "completed"


def test_second_late_in_progress_writes_nothing(client):
    accepted(post_callback(client, callback_body("completed")), "completed")
    accepted(post_callback(client, callback_body("in_progress")), "completed")
    before = stored_item(KEY)

    accepted(post_callback(client, callback_body("in_progress")), "completed")

    assert stored_item(KEY) == before


def test_every_write_bumps_revision_and_updated_at(client):
    stamps = []
    for body in (
        callback_body("in_progress"),
        callback_body("in_progress", queue_time=20),
        callback_body("completed", queue_time=20),
    ):
        assert post_callback(client, body).status_code == 200
        item = stored_item(KEY)
        stamps.append((item["revision"], item["updated_at"]))
    assert [revision for revision, _ in stamps] == [1, 2, 3]
    assert len({updated for _, updated in stamps}) == 3
    assert [updated for _, updated in stamps] == sorted(updated for _, updated in stamps)


def test_fields_of_first_callback_survive(client):
    """Fields the first callback carried survive a second that lacks them."""
    accepted(post_callback(client, callback_body("in_progress")), "in_progress")
    completed = callback_body("completed")
    del completed["untrusted"]["callback_payload"]["workflow"]["url"]
    accepted(post_callback(client, completed), "completed")
    item = stored_item(KEY)
    assert item["workflow_run_url"] == "https://github.com/acme-ai/torch-npu/actions/runs/24033272679"
    assert item["started_at"] == "2026-12-04T10:15:30Z"


def record(status: str, **overrides) -> dict:
    return build_record(decode_body(json.dumps(callback_body(status, **overrides)).encode())).record


def test_sweep_applies_only_to_in_progress():
    dynamo.write_record(record("in_progress"))
    swept = record("completed", conclusion="timed_out")
    assert dynamo.write_record(swept, sweep=True).changed
    assert stored_item(KEY)["swept"] is True

    assert not dynamo.write_record(swept, sweep=True).changed, "a swept record is not swept twice"


def test_genuine_completed_replaces_sweep():
    dynamo.write_record(record("in_progress"))
    dynamo.write_record(record("completed", conclusion="timed_out"), sweep=True)

    result = dynamo.write_record(record("completed", conclusion="success"))

    assert result.changed
    item = stored_item(KEY)
    assert item["conclusion"] == "success"
    assert item["swept"] is False
    assert not dynamo.write_record(record("completed", conclusion="failure")).changed


def test_write_outcomes():
    assert dynamo.write_record(record("in_progress")).outcome == "accepted"
    assert dynamo.write_record(record("in_progress")).outcome == "duplicate"
    assert dynamo.write_record(record("completed")).outcome == "accepted"
    assert dynamo.write_record(record("completed")).outcome == "duplicate"
    assert dynamo.write_record(record("in_progress")).outcome == "ignored_late"


def send_together(records: list[dict]) -> list[Exception]:
    """Write the records from one thread each, released at the same moment; return the errors."""
    barrier = threading.Barrier(len(records))
    errors: list[Exception] = []

    def send(one: dict) -> None:
        try:
            barrier.wait()
            dynamo.write_record(one)
        except Exception as error:  # noqa: BLE001 - returned to the test
            errors.append(error)

    threads = [threading.Thread(target=send, args=(one,)) for one in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_racing_callbacks_end_completed():
    """In_progress and completed sent at once, many times over: the record always ends completed."""
    for attempt in range(15):
        check_run_id = str(5000 + attempt)
        records = [record("in_progress", check_run_id=check_run_id), record("completed", check_run_id=check_run_id)]

        assert send_together(records) == []

        item = stored_item(records[0]["dynamoKey"])
        assert item["status"] == "completed"
        assert "running_pr" not in item
        assert item["started_at"] == "2026-12-04T10:15:30Z"
        assert item["revision"] == 2
