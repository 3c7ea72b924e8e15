"""One job's callbacks travel from the API through DynamoDB and the stream to every page."""

import pytest

from tests.conftest import callback_body, clickhouse_rows, post_callback, replicate, stored_item

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"


def test_in_progress_then_completed_reaches_every_page(client):
    started = post_callback(client, callback_body("in_progress"))
    assert started.status_code == 200
    assert started.json() == {"ok": True, "status": "in_progress", "dynamoKey": KEY}
    assert stored_item(KEY)["status"] == "in_progress"

    replicate()
    assert clickhouse_rows() == [], "an in_progress record must not reach ClickHouse"

    running = client.get("/pr/4242")
    assert running.status_code == 200
    assert "Out-of-Tree Backends" in running.content.decode()
    assert "0/1 passed, 1 running" in running.content.decode()

    finished = post_callback(client, callback_body("completed", conclusion="success"))
    assert finished.status_code == 200
    assert finished.json()["status"] == "completed"
    item = stored_item(KEY)
    assert item["status"] == "completed"
    assert item["started_at"] == "2026-12-04T10:15:30Z", "started_at from in_progress must survive"
    assert item["revision"] == 2

    replicate()
    rows = clickhouse_rows()
    assert len(rows) == 1
    assert rows[0]["conclusion"] == "success"
    assert rows[0]["pr_number"] == 4242

    summary = client.get("/oot?days=30").content.decode()
    assert "acme-ai/torch-npu" in summary
    assert "100.0%" in summary

    backend = client.get("/oot/acme-ai/torch-npu?days=30").content.decode()
    assert "#4242" in backend
    assert "test-float32" in backend
    assert "chip-green" in backend
    assert "https://github.com/acme-ai/torch-npu/actions/runs/24033272679/job/98765432100" in backend

    pr = client.get("/pr/4242").content.decode()
    assert "1/1 passed" in pr
    assert "running" not in pr.split("Out-of-Tree Backends", 1)[1].split("</summary>", 1)[0]


def test_pr_without_results_has_no_section(client):
    page = client.get("/pr/999999")
    assert page.status_code == 200
    assert "Out-of-Tree Backends" not in page.content.decode()
    assert "No out-of-tree backend has reported" in page.content.decode()
