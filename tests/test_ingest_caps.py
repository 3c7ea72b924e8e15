"""Caps on failed-test details, and the worst a 2 MiB body can do to the stored item."""

import json
from decimal import Decimal

import pytest

from oot_ingest import failed_tests
from oot_ingest.failed_tests import MAX_LIST_BYTES, cap_failed_tests, cut_utf8
from tests.conftest import callback_body, post_callback, stored_item

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"
DYNAMODB_ITEM_LIMIT = 400 * 1024
FIELDS = ("name", "classname", "file", "message", "stacktrace", "duration")


def uncut_size(entries: list) -> int:
    """JSON size of the first 1,000 entries with their known fields uncut, as the caps count it."""
    known = [{name: entry[name] for name in FIELDS if name in entry} for entry in entries[:1000]]
    return len(json.dumps(known, ensure_ascii=False, separators=(",", ":")).encode())


def stored_entries(capped) -> list:
    return json.loads(capped.json)


@pytest.mark.parametrize("character", ["a", "é", "€", "😀"])
@pytest.mark.parametrize("limit", [1024, 4096, 1023, 5])
def test_cut_utf8_keeps_whole_characters(character, limit):
    text = character * 5000
    kept, removed = cut_utf8(text, limit)
    encoded = kept.encode("utf-8")
    assert len(encoded) <= limit
    assert len(encoded) > limit - len(character.encode("utf-8"))
    assert set(kept) == {character}
    assert removed == len(text.encode("utf-8")) - len(encoded)


def test_short_text_not_cut():
    assert cut_utf8("short", 1024) == ("short", 0)


def test_message_and_stacktrace_capped_by_bytes():
    entries = [{"name": "test_a", "message": "€" * 1000, "stacktrace": "😀" * 2000, "duration": 2}]
    capped = cap_failed_tests(entries)
    [entry] = stored_entries(capped)
    assert len(entry["message"].encode()) == 1023, "1 KiB holds 341 three-byte characters"
    assert set(entry["message"]) == {"€"}
    assert len(entry["stacktrace"].encode()) == 4096
    assert set(entry["stacktrace"]) == {"😀"}
    assert entry["duration"] == 2
    assert capped.entries_cut == 0
    assert capped.bytes_cut == uncut_size(entries) - len(capped.json.encode())
    assert capped.bytes_cut == (3000 - 1023) + (8000 - 4096)


def test_names_capped():
    entries = [{"name": "n" * 5000, "classname": "c" * 5000, "file": "f" * 5000}]
    [entry] = stored_entries(cap_failed_tests(entries))
    assert [len(entry[name]) for name in ("name", "classname", "file")] == [1024, 1024, 1024]


def test_at_most_thousand_entries():
    entries = [{"name": f"test_{index}"} for index in range(1500)]
    capped = cap_failed_tests(entries)
    kept = stored_entries(capped)
    assert len(kept) == 1000
    assert kept[-1] == {"name": "test_999"}
    assert capped.entries_cut == 500
    assert capped.bytes_cut == 0, "entries beyond the 1,000th count in entries_cut only"


def test_stack_traces_dropped_before_entries():
    entries = [{"name": f"test_{index}", "message": "m", "stacktrace": "s" * 4096} for index in range(100)]
    capped = cap_failed_tests(entries)
    kept = stored_entries(capped)
    assert len(capped.json.encode()) <= MAX_LIST_BYTES
    assert len(kept) == 100, "dropping some stack traces is enough here"
    assert capped.entries_cut == 0
    with_trace = [entry for entry in kept if "stacktrace" in entry]
    assert 0 < len(with_trace) < 100
    assert kept[: len(with_trace)] == with_trace, "stack traces are dropped from the last entry backwards"
    assert capped.bytes_cut == uncut_size(entries) - len(capped.json.encode())


def test_entries_dropped_when_traces_are_not_enough():
    entries = [{"name": f"test_{index}", "message": "m" * 2000, "stacktrace": "s" * 5000} for index in range(1000)]
    capped = cap_failed_tests(entries)
    kept = stored_entries(capped)
    size = len(capped.json.encode())
    assert size <= MAX_LIST_BYTES
    assert size > MAX_LIST_BYTES - 1100, "no more entries are dropped than needed"
    assert all("stacktrace" not in entry for entry in kept)
    assert [entry["name"] for entry in kept] == [f"test_{index}" for index in range(len(kept))]
    assert capped.entries_cut == 1000 - len(kept)
    assert capped.bytes_cut == uncut_size(entries) - size


def test_non_object_entries_and_values_kept_as_text():
    entries = ["test_plain", 42, {"name": {"nested": 1}, "message": ["a", 2], "duration": Decimal("0.10")}]
    kept = stored_entries(cap_failed_tests(entries))
    assert kept[0] == {"name": "test_plain"}
    assert kept[1] == {"name": "42"}
    assert kept[2]["name"] == '{"nested":1}'
    assert kept[2]["message"] == '["a",2]'
    assert '"duration":0.10' in cap_failed_tests(entries).json


@pytest.mark.parametrize("duration", [-1, Decimal("1e10"), True, "3"])
def test_invalid_duration_dropped(duration):
    [entry] = stored_entries(cap_failed_tests([{"name": "t", "duration": duration}]))
    assert entry == {"name": "t"}


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_cut_counts_stored_with_record(client):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["failed_tests_detail"] = [
        {"name": f"test_{index}", "message": "x" * 1500} for index in range(1200)
    ]
    assert post_callback(client, body).status_code == 200
    item = stored_item(KEY)
    kept = json.loads(item["failed_tests_json"])
    assert len(item["failed_tests_json"].encode()) <= MAX_LIST_BYTES
    assert item["failed_tests_entries_cut"] == 1200 - len(kept)
    assert item["failed_tests_bytes_cut"] > 0


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_uncut_list_has_no_cut_fields(client):
    assert post_callback(client, callback_body("completed")).status_code == 200
    item = stored_item(KEY)
    assert "failed_tests_entries_cut" not in item
    assert "failed_tests_bytes_cut" not in item


def item_size(item: dict) -> int:
    """Approximate DynamoDB's item size: UTF-8 names plus values (numbers counted as text)."""
    return sum(len(name.encode()) + len(str(value).encode()) for name, value in item.items())


def worst_case_body(filler: str) -> dict:
    """A completed callback with every stored field at its limit, in four-byte characters where allowed."""
    wide = "😀"
    body = callback_body(
        "completed",
        delivery_id="d" * 256,
        check_run_id="9" * 30,
        job_name=wide * 150,
        conclusion=wide * 64,
        schema_version=wide * 32,
    )
    callback = body["untrusted"]["callback_payload"]
    callback["event_type"] = wide * 64
    callback["payload"] = {
        "pull_request": {"number": 2**63 - 1, "head": {"sha": "f" * 64}},
        "repository": {"full_name": "a" * 100 + "/" + "b" * 100},
        "padding": filler,
    }
    workflow = callback["workflow"]
    workflow.update(
        name=wide * 256,
        run_id="9" * 30,
        run_attempt=2**32 - 1,
        url="https://example.org/" + wide * 2020,
        artifact_url="https://example.org/" + wide * 2020,
        environment={"k": wide * 2040},
        test_results={"total": 2**63 - 1, "passed": 2**63 - 1, "failed": 2**63 - 1, "skipped": 2**63 - 1},
        failed_tests_detail=[
            {
                "name": wide * 400,
                "classname": wide * 400,
                "file": wide * 400,
                "message": wide * 400,
                "stacktrace": wide * 1200,
                "duration": 10**9,
            }
            for _ in range(70)
        ],
    )
    return body


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_worst_case_body_stays_under_item_limit(client):
    text = json.dumps(worst_case_body(""), ensure_ascii=False)
    filler = "p" * (2 * 1024 * 1024 - len(text.encode()))
    body = json.dumps(worst_case_body(filler), ensure_ascii=False).encode()
    assert len(body) == 2 * 1024 * 1024

    response = post_callback(client, body)

    assert response.status_code == 200, response.content
    item = stored_item(response.json()["dynamoKey"])
    assert len(item["failed_tests_json"].encode()) <= MAX_LIST_BYTES
    assert item["failed_tests_entries_cut"] > 0
    assert item_size(item) < 320 * 1024, "the item stays well under DynamoDB's 400 KB"


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_many_small_failed_tests_in_full_body(client):
    """A 2 MiB body of tiny entries: capped to 1,000 without walking all of them into the record."""
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["failed_tests_detail"] = [{}] * 400_000
    text = json.dumps(body, separators=(",", ":")).encode()
    assert len(text) < 2 * 1024 * 1024
    assert post_callback(client, text).status_code == 200
    item = stored_item(KEY)
    assert item["failed_tests_entries_cut"] == 399_000
    assert len(json.loads(item["failed_tests_json"])) == 1000


@pytest.mark.usefixtures("stores", "demo_allowlist")
@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("environment", {"k": "x" * 9000}, "larger than 8192 bytes"),
        ("name", "n" * 257, "longer than 256 characters"),
        ("job_name", "j" * 257, "longer than 256 characters"),
        ("conclusion", "c" * 65, "longer than 64 characters"),
    ],
)
def test_oversized_stored_field_is_400(client, field, value, fragment):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"][field] = value
    response = post_callback(client, body)
    assert response.status_code == 400
    assert f"workflow.{field}" in response.json()["error"]
    assert fragment in response.json()["error"]


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_key_longer_than_dynamodb_allows_is_400(client):
    body = callback_body("completed", job_name="😀" * 256)
    body["untrusted"]["callback_payload"]["workflow"]["name"] = "😀" * 256
    response = post_callback(client, body)
    assert response.status_code == 400
    assert "dynamoKey longer than 2048" in response.json()["error"]


def test_caps_are_the_documented_numbers():
    assert failed_tests.MAX_ENTRIES == 1000
    assert failed_tests.MAX_MESSAGE_BYTES == 1024
    assert failed_tests.MAX_STACKTRACE_BYTES == 4096
    assert failed_tests.MAX_LIST_BYTES == 256 * 1024
