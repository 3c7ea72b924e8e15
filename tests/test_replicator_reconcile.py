"""The reconcile command: rebuild ClickHouse rows from a DynamoDB scan, idempotently."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from oot_ingest import dynamo
from replicator import clickhouse, rollup
from replicator.convert import to_row
from replicator.models import DeadLetter
from replicator.writer import insert_rows
from tests.conftest import callback_body, clickhouse_rows, post_callback, stored_item

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")


def reconcile(*arguments: str) -> str:
    output = StringIO()
    call_command("reconcile", *arguments, stdout=output)
    return output.getvalue()


def raw_count() -> int:
    return clickhouse.client().query(f"SELECT count() FROM {clickhouse.TABLE}").result_rows[0][0]


def final_count() -> int:
    return clickhouse.client().query(f"SELECT count() FROM {clickhouse.TABLE} FINAL").result_rows[0][0]


def send_jobs(client, completed: int, running: int = 0) -> list[str]:
    keys = []
    for job in range(completed + running):
        status = "completed" if job < completed else "in_progress"
        response = post_callback(client, callback_body(status, job_name=f"job-{job}", check_run_id=str(500 + job)))
        assert response.status_code == 200
        keys.append(response.json()["dynamoKey"])
    return keys


def test_reconcile_twice_changes_nothing(client):
    send_jobs(client, completed=5, running=2)

    first = reconcile()
    counts = (final_count(), raw_count())
    second = reconcile()

    assert "upserted 5" in first
    assert "page rollups folded" in first
    assert rollup.is_current(), "the reconcile must fold what it inserted"
    assert counts == (5, 5)
    assert "upserted 0, 5 already up to date" in second
    assert final_count() == 5
    assert raw_count() == 5
    assert {row["status"] for row in clickhouse_rows()} == {"completed"}


def test_reconcile_small_batches_twice(client):
    send_jobs(client, completed=5)

    reconcile("--batch-size", "2")
    reconcile("--batch-size", "3")

    assert final_count() == 5
    assert raw_count() == 5


def test_reconcile_replaces_older_version(client):
    keys = send_jobs(client, completed=1)
    older = stored_item(keys[0])
    older["revision"] -= 1
    older["conclusion"] = "failure"
    insert_rows([to_row(older)])

    output = reconcile()

    assert "upserted 1" in output
    rows = clickhouse_rows()
    assert [row["conclusion"] for row in rows] == ["success"]


def test_reconcile_keeps_newer_deletion(client):
    keys = send_jobs(client, completed=1)
    insert_rows([to_row(stored_item(keys[0]), deleted=True)])

    output = reconcile()

    assert "upserted 0, 1 already up to date" in output
    assert clickhouse_rows() == []


def test_reconcile_since_includes_same_second(client):
    keys = send_jobs(client, completed=1)
    updated_at = stored_item(keys[0])["updated_at"]
    same_second = updated_at[:19] + "Z"
    # As text, "...:55Z" sorts after "...:55.239618Z": a bound compared
    # without its microseconds would miss the record.
    assert same_second > updated_at

    output = reconcile("--since", same_second)

    assert "upserted 1" in output


def test_reconcile_since_skips_older_records(client):
    old_key = send_jobs(client, completed=1)[0]
    item = stored_item(old_key)
    item["updated_at"] = "2026-01-01T00:00:00.000000Z"
    dynamo.table().put_item(Item=item)

    output = reconcile("--since", "2026-06-01T00:00:00Z")

    assert "upserted 0" in output
    assert clickhouse_rows() == []


def test_reconcile_dry_run_writes_nothing(client):
    send_jobs(client, completed=3)

    output = reconcile("--dry-run")

    assert "would upsert 3" in output
    assert raw_count() == 0


def test_reconcile_stores_dead_letter(client):
    send_jobs(client, completed=1)
    broken = {"dynamoKey": "acme-ai/torch-npu/x/npu-ci/broken/1", "status": "completed", "pr_number": -3}
    dynamo.table().put_item(Item=broken)

    output = reconcile()
    reconcile()

    assert "1 dead letters" in output
    letter = DeadLetter.objects.get()
    assert letter.source == DeadLetter.SOURCE_RECONCILE
    assert letter.dynamo_key == broken["dynamoKey"]
    assert "pr_number" in letter.reason
    assert final_count() == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--since", "last tuesday"), "is not an ISO 8601 time"),
        (("--batch-size", "0"), "--batch-size must be 1 or more"),
    ],
)
def test_reconcile_rejects_invalid_options(arguments, message):
    with pytest.raises(CommandError, match=message):
        reconcile(*arguments)
