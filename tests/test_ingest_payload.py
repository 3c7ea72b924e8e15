"""What hostile and sloppy senders put in a body: numbers, JSON hazards, spoofed trusted fields."""

import json
import logging
from decimal import Decimal

import pytest

from oot_ingest import payload
from tests.conftest import callback_body, post_callback, stored_item

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"
WORKFLOW = "untrusted.callback_payload.workflow"


def workflow_of(body: dict) -> dict:
    return body["untrusted"]["callback_payload"]["workflow"]


def rejected(response, *fragments: str) -> str:
    assert response.status_code == 400, response.content
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message
    return message


# Numbers


def test_floats_stored_as_exact_decimals(client):
    body = callback_body("completed", queue_time=None)
    body["trusted"]["ci_metrics"]["execution_time"] = 1234.000000001
    workflow_of(body)["environment"] = {"driver": 24.10, "ratio": 0.1000000000000000055511151231257827}
    workflow_of(body)["failed_tests_detail"][0]["duration"] = 1.2300000000000000001
    text = json.dumps(body)
    # json.dumps of a float loses digits; write the literals the way a sender would.
    text = text.replace("24.1,", "24.10,").replace('"ratio": 0.1}', '"ratio": 0.1000000000000000055511151231257827}')
    text = text.replace('"duration": 1.23', '"duration": 1.2300000000000000001')

    assert post_callback(client, text).status_code == 200

    item = stored_item(KEY)
    assert item["execution_time"] == Decimal("1234.000000001")
    assert '"driver":24.10' in item["environment"]
    assert '"ratio":0.1000000000000000055511151231257827' in item["environment"]
    assert '"duration":1.2300000000000000001' in item["failed_tests_json"]


def test_late_fill_stores_exact_decimal(client):
    completed = callback_body("completed", queue_time=None)
    assert post_callback(client, completed).status_code == 200
    text = json.dumps(callback_body("in_progress", queue_time=7.5)).replace("7.5", "7.000000001")

    assert post_callback(client, text).status_code == 200

    assert stored_item(KEY)["queue_time"] == Decimal("7.000000001")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("10", 10), (10, 10), (0, 0), ("007", 7), (10.0, 10)],
)
def test_count_forms_accepted(client, sent, stored):
    body = callback_body("completed")
    workflow_of(body)["test_results"] = {"total": sent, "passed": sent, "failed": 0, "skipped": None}
    assert post_callback(client, body).status_code == 200
    item = stored_item(KEY)
    assert item["total_tests"] == stored
    assert item["passed_tests"] == stored
    assert "skipped_tests" not in item, "null means absent"


@pytest.mark.parametrize("sent", [-1, 3.5, "ten", True, " 10", "1e3", "-1", "", [], {}, "１０"])
def test_bad_count_rejected(client, sent):
    body = callback_body("completed")
    workflow_of(body)["test_results"]["failed"] = sent
    rejected(post_callback(client, body), f"{WORKFLOW}.test_results.failed")
    assert stored_item(KEY) is None


def test_bad_count_in_older_test_results(client):
    body = callback_body("completed")
    workflow = workflow_of(body)
    workflow["test-results"] = workflow.pop("test_results")
    workflow["test-results"]["passed"] = -5
    rejected(post_callback(client, body), f"{WORKFLOW}.test-results.passed", "non-negative integer")


def test_missing_total_is_sum(client):
    body = callback_body("completed")
    workflow_of(body)["test_results"] = {"passed": "7", "failed": 2, "skipped": 1}
    assert post_callback(client, body).status_code == 200
    assert stored_item(KEY)["total_tests"] == 10


@pytest.mark.parametrize(
    ("place", "field"),
    [
        (lambda body: workflow_of(body)["test_results"].update(total=10**38), f"{WORKFLOW}.test_results.total"),
        (
            lambda body: body["untrusted"]["callback_payload"]["payload"]["pull_request"].update(number=10**38),
            "untrusted.callback_payload.payload.pull_request.number",
        ),
        (lambda body: workflow_of(body).update(run_attempt=10**38), f"{WORKFLOW}.run_attempt"),
        (lambda body: workflow_of(body).update(run_attempt=2**32), f"{WORKFLOW}.run_attempt"),
        (lambda body: workflow_of(body).update(check_run_id=10**38), f"{WORKFLOW}.check_run_id"),
        (lambda body: workflow_of(body).update(run_id="9" * 39), f"{WORKFLOW}.run_id"),
        (lambda body: body["trusted"]["ci_metrics"].update(queue_time=10**38), "trusted.ci_metrics.queue_time"),
    ],
)
def test_integer_too_large_to_store(client, place, field):
    body = callback_body("completed")
    place(body)
    rejected(post_callback(client, body), field)


def test_huge_integer_anywhere_is_400(client):
    body = callback_body("in_progress")
    text = json.dumps(body).replace('"payload": {', '"payload": {"huge": ' + "9" * 5000 + ", ", 1)
    rejected(post_callback(client, text), "more than 100 digits")


# JSON hazards


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_rejected(client, constant):
    text = json.dumps(callback_body("in_progress", queue_time=1.5)).replace("1.5", constant)
    rejected(post_callback(client, text), constant)


def test_duplicate_keys_rejected(client):
    text = json.dumps(callback_body("in_progress")).replace(
        '"status": "in_progress"', '"status": "in_progress", "status": "completed"'
    )
    rejected(post_callback(client, text), "duplicate key", "status")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[]", "must be a JSON object, not an array"),
        (b"[{}]", "must be a JSON object, not an array"),
        (b"42", "not a number"),
        (b"null", "not null"),
        (b'"hello"', "not valid JSON"),
        (b'"[1, 2]"', "does not hold a JSON object"),
        (json.dumps(json.dumps(json.dumps({"a": 1}))).encode(), "does not hold a JSON object"),
        (b"", "body is empty"),
        (b"   ", "body is empty"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"a": "\xc3"}', "not valid UTF-8"),
        (b'{"a": "x\x00y"}', "not valid JSON"),
    ],
)
def test_not_an_object_rejected(client, body, fragment):
    rejected(post_callback(client, body), fragment)


def test_byte_order_mark_rejected(client):
    body = b"\xef\xbb\xbf" + json.dumps(callback_body("in_progress")).encode()
    rejected(post_callback(client, body), "byte order mark")


def test_double_encoded_body_accepted(client):
    twice = json.dumps(json.dumps(callback_body("in_progress")))
    response = post_callback(client, twice)
    assert response.status_code == 200, response.content
    assert response.json()["dynamoKey"] == KEY
    assert stored_item(KEY)["status"] == "in_progress"


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_rejected(client, depth, opening, closing):
    rejected(post_callback(client, opening * depth + "1" + closing * depth), "nested deeper")


def test_deep_nesting_inside_callback_rejected(client):
    body = callback_body("completed")
    deep: dict = {}
    for _ in range(100):
        deep = {"next": deep}
    workflow_of(body)["environment"] = deep
    rejected(post_callback(client, body), "nested deeper than 64")


def test_deep_nesting_in_webhook_body_accepted(client):
    """The upstream webhook body is not stored, so its shape is not the callback's problem."""
    body = callback_body("in_progress")
    deep: list = []
    for _ in range(300):
        deep = [deep]
    body["untrusted"]["callback_payload"]["payload"]["labels"] = deep
    assert post_callback(client, body).status_code == 200


@pytest.mark.parametrize(
    ("place", "field"),
    [
        (lambda body: workflow_of(body).update(job_name="test\u0000float32"), f"{WORKFLOW}.job_name"),
        (lambda body: workflow_of(body).update(environment={"device": "npu\u0000"}), f"{WORKFLOW}.environment.device"),
        (lambda body: body["trusted"].update(verified_repo="acme-ai/torch-npu\u0000"), "trusted.verified_repo"),
        (lambda body: workflow_of(body).update(job_name="test-\ud800"), f"{WORKFLOW}.job_name"),
        (
            lambda body: workflow_of(body).update(failed_tests_detail=[{"name": "a\udfff"}]),
            f"{WORKFLOW}.failed_tests_detail[0].name",
        ),
        (lambda body: workflow_of(body).update(environment={"\ud83d": "x"}), f"{WORKFLOW}.environment"),
    ],
)
def test_nul_and_lone_surrogate_rejected(client, place, field):
    body = callback_body("completed")
    place(body)
    # json.dumps escapes both as \u0000 and \ud800, exactly as a sender's JSON would carry them.
    message = rejected(post_callback(client, json.dumps(body)), field)
    assert "NUL" in message or "surrogate" in message


def test_surrogate_pair_accepted(client):
    body = callback_body("in_progress", job_name="test-\U0001f600")
    assert post_callback(client, json.dumps(body)).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ],
)
def test_wrong_content_type_rejected(client, content_type):
    rejected(post_callback(client, callback_body("in_progress"), content_type=content_type), "must be")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_accepted(client, content_type):
    assert post_callback(client, callback_body("in_progress"), content_type=content_type).status_code == 200


# Schema versions


def test_unknown_schema_version_accepted_and_logged_once(client, caplog):
    payload._logged_schema_versions.clear()
    caplog.set_level(logging.WARNING, logger="oot_ingest.payload")

    for _ in range(3):
        assert post_callback(client, callback_body("in_progress", schema_version="2")).status_code == 200
    assert post_callback(client, callback_body("completed", schema_version="2")).status_code == 200
    assert post_callback(client, callback_body("completed", schema_version="3", check_run_id="7")).status_code == 200
    # Another process (a cleared local memory) still does not log the pair again.
    payload._logged_schema_versions.clear()
    assert post_callback(client, callback_body("in_progress", schema_version="2", check_run_id="8")).status_code == 200

    logged = [record.getMessage() for record in caplog.records if "schema_version" in record.getMessage()]
    assert len(logged) == 2
    assert "schema_version='2'" in logged[0]
    assert "schema_version='3'" in logged[1]
    assert stored_item(KEY)["schema_version"] == "2"


@pytest.mark.parametrize("version", ["1", "1.0"])
def test_known_schema_version_not_logged(client, caplog, version):
    caplog.set_level(logging.WARNING, logger="oot_ingest.payload")
    assert post_callback(client, callback_body("in_progress", schema_version=version)).status_code == 200
    assert not [record for record in caplog.records if "schema_version" in record.getMessage()]


@pytest.mark.parametrize(("version", "fragment"), [({"v": 1}, "must be a string"), ("9" * 40, "longer than 32")])
def test_bad_schema_version_rejected(client, version, fragment):
    body = callback_body("in_progress", schema_version=version)
    rejected(post_callback(client, body), f"{WORKFLOW}.schema_version", fragment)


# Trust


def spoofed_body() -> dict:
    """A body whose untrusted part carries every field that only trusted may set."""
    body = callback_body("completed", queue_time=12.5)
    body["trusted"]["ci_metrics"]["execution_time"] = 100
    spoof = {
        "verified_repo": "initech/rocm-ci",
        "downstream_repo": "initech/rocm-ci",
        "downstream_repo_level": "L4",
        "queue_time": 0.001,
        "execution_time": 0.002,
        "ci_metrics": {"queue_time": 0.001, "execution_time": 0.002},
        "trusted": {"verified_repo": "initech/rocm-ci", "downstream_repo_level": "L4"},
        "dynamoKey": "initech/rocm-ci/x/y/z/1",
        "revision": 999,
        "swept": True,
    }
    workflow_of(body).update(spoof)
    body["untrusted"]["callback_payload"].update(spoof)
    body["untrusted"].update(spoof)
    return body


def test_untrusted_cannot_spoof_trusted_fields(client):
    response = post_callback(client, spoofed_body())
    assert response.status_code == 200
    assert response.json()["dynamoKey"] == KEY

    item = stored_item(KEY)
    assert item["downstream_repo"] == "acme-ai/torch-npu"
    assert item["downstream_repo_level"] == "L2"
    assert item["queue_time"] == Decimal("12.5")
    assert item["execution_time"] == 100
    assert item["revision"] == 1
    assert item["swept"] is False
    assert stored_item("initech/rocm-ci/x/y/z/1") is None


def test_untrusted_timing_ignored_without_trusted(client):
    body = spoofed_body()
    body["trusted"].pop("ci_metrics")
    assert post_callback(client, body).status_code == 200
    item = stored_item(KEY)
    assert "queue_time" not in item
    assert "execution_time" not in item


def test_untrusted_repository_cannot_pass_allowlist(client):
    body = spoofed_body()
    body["trusted"]["verified_repo"] = "example-labs/torch-riscv"
    response = post_callback(client, body)
    assert response.status_code == 403, "admission follows trusted.verified_repo, an L1 repository"
