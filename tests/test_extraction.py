"""Record extraction for every payload variant the demo corpus contains."""

import gzip
import json
from decimal import Decimal

import pytest

from oot_ingest.payload import build_record, decode_body
from tests.conftest import DEMO_CORPUS, callback_body


def extract(body: dict) -> dict:
    return build_record(decode_body(json.dumps(body).encode())).record


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as lines:
        return [json.loads(line)["body"] for line in lines]


def first(corpus, predicate) -> dict:
    return next(body for body in corpus if predicate(body["untrusted"]["callback_payload"]))


def test_whole_corpus_extracts(settings, corpus):
    keys = set()
    for body in corpus:
        record = extract(body)
        assert record["downstream_repo"] == body["trusted"]["verified_repo"]
        keys.add(record["dynamoKey"])
    assert len(keys) > 3000


def test_pull_request_context(corpus):
    body = first(corpus, lambda cb: cb["event_type"] == "pull_request")
    record = extract(body)
    pull_request = body["untrusted"]["callback_payload"]["payload"]["pull_request"]
    assert record["pr_number"] == pull_request["number"]
    assert record["pytorch_head_sha"] == pull_request["head"]["sha"]
    assert record["upstream_repo"] == "pytorch/pytorch"
    assert record["event_type"] == "pull_request"


def test_push_with_ciflow_tag(corpus):
    body = first(corpus, lambda cb: cb["event_type"] == "push")
    payload = body["untrusted"]["callback_payload"]["payload"]
    record = extract(body)
    assert record["pr_number"] == int(payload["ref"].rsplit("/", 1)[1])
    assert record["pytorch_head_sha"] == payload["after"]


def test_push_without_ciflow_tag_has_pr_zero():
    body = callback_body("in_progress")
    callback = body["untrusted"]["callback_payload"]
    callback["event_type"] = "push"
    callback["payload"] = {"ref": "refs/heads/main", "after": "b" * 40, "repository": {"full_name": "pytorch/pytorch"}}
    record = extract(body)
    assert record["pr_number"] == 0
    assert record["pytorch_head_sha"] == "b" * 40


def test_nightly_head_sha(corpus):
    body = first(corpus, lambda cb: cb["event_type"] == "nightly")
    record = extract(body)
    assert record["pr_number"] == 0
    assert record["pytorch_head_sha"] == body["untrusted"]["callback_payload"]["payload"]["head_sha"]
    assert "started_at" not in record, "a nightly self-report has no started_at"


def test_test_results_counts(corpus):
    body = first(corpus, lambda cb: "test_results" in cb["workflow"] and cb["workflow"].get("failed_tests_detail"))
    workflow = body["untrusted"]["callback_payload"]["workflow"]
    record = extract(body)
    assert record["total_tests"] == workflow["test_results"]["total"]
    assert record["passed_tests"] == workflow["test_results"]["passed"]
    assert record["failed_tests"] == workflow["test_results"]["failed"]
    assert record["skipped_tests"] == workflow["test_results"]["skipped"]
    stored = json.loads(record["failed_tests_json"])
    assert [entry["name"] for entry in stored] == [entry["name"] for entry in workflow["failed_tests_detail"]]


def test_older_hyphenated_test_results(corpus):
    body = first(corpus, lambda cb: "test-results" in cb["workflow"])
    counts = body["untrusted"]["callback_payload"]["workflow"]["test-results"]
    record = extract(body)
    assert record["total_tests"] == counts["total"]
    assert record["passed_tests"] == counts["passed"]


def test_older_failures_list_with_duration_s():
    body = callback_body("completed", conclusion="failure")
    workflow = body["untrusted"]["callback_payload"]["workflow"]
    del workflow["test_results"], workflow["failed_tests_detail"]
    workflow["test-results"] = {
        "passed": 5,
        "failed": 1,
        "skipped": 2,
        "failures": [{"name": "test_add", "classname": "TestOps", "message": "boom", "duration_s": 0.5}],
    }
    record = extract(body)
    assert record["total_tests"] == 8, "a missing total is the sum"
    assert json.loads(record["failed_tests_json"]) == [
        {"name": "test_add", "classname": "TestOps", "message": "boom", "duration": 0.5}
    ]


@pytest.mark.parametrize("value", ["2", 2])
def test_run_attempt_string_or_number(value):
    assert extract(callback_body("in_progress", run_attempt=value))["run_attempt"] == 2


@pytest.mark.parametrize("value", ["90007062726", 90007062726])
def test_check_run_id_string_or_number(value):
    record = extract(callback_body("in_progress", check_run_id=value))
    assert record["check_run_id"] == "90007062726"
    assert record["dynamoKey"].endswith("/90007062726")


def test_run_attempt_defaults_to_one():
    body = callback_body("in_progress")
    del body["untrusted"]["callback_payload"]["workflow"]["run_attempt"]
    assert extract(body)["run_attempt"] == 1


def test_corpus_sends_both_id_shapes(corpus):
    shapes = {type(body["untrusted"]["callback_payload"]["workflow"]["check_run_id"]) for body in corpus}
    assert shapes == {str, int}


def test_queue_time_is_exact_decimal():
    record = extract(callback_body("in_progress", queue_time=12.345))
    assert record["queue_time"] == Decimal("12.345")


def test_null_execution_time_is_absent():
    assert "execution_time" not in extract(callback_body("in_progress"))


def test_completed_fields_only_on_completed():
    record = extract(callback_body("in_progress"))
    for field in ("conclusion", "completed_at", "total_tests", "failed_tests_json"):
        assert field not in record


def test_environment_stored_as_json_text():
    record = extract(callback_body("completed"))
    assert json.loads(record["environment"]) == {"device": "Ascend910B", "driver": "24.1"}


def test_key_format():
    record = extract(callback_body("in_progress"))
    assert record["dynamoKey"] == (
        "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"
    )
