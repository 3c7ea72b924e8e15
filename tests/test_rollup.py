"""The hourly rollups match the records table after every fold, whatever was written and in what order.

The oracle is computed in Python from the records as FINAL returns them:
group by (backend, event type, head SHA, workflow, job), keep the highest
(run_attempt, completed_at), place the group in the hour of its newest
completion.
"""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from oot_ingest.vocabulary import FAILURE_CONCLUSIONS, SUCCESS_CONCLUSIONS
from replicator import clickhouse, rollup
from replicator.convert import to_row
from replicator.writer import insert_rows
from tests.conftest import callback_body, clickhouse_rows, post_callback, replicate
from tests.test_pages import NOW, record

pytestmark = pytest.mark.usefixtures("stores")


def hourly_rows() -> dict[tuple, dict]:
    result = clickhouse.client().query(f"SELECT * FROM {rollup.HOURLY} FINAL")
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    return {(row["repository_key"], row["event_type"], row["hour"].replace(tzinfo=None)): row for row in rows}


def expected_hourly() -> dict[tuple, dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in clickhouse_rows():
        head = row["pytorch_head_sha"] or row["dynamoKey"]
        key = (row["downstream_repo"].lower(), row["event_type"], head, row["workflow_name"], row["job_name"])
        groups[key].append(row)
    hours: dict[tuple, dict] = {}
    for (repository_key, event_type, *_), rows in groups.items():
        latest = max(rows, key=lambda row: (row["run_attempt"], row["completed_at"]))
        newest = max(row["completed_at"] for row in rows)
        bucket = hours.setdefault(
            (repository_key, event_type, newest.replace(minute=0, second=0, microsecond=0, tzinfo=None)),
            {"total": 0, "successes": 0, "failures": 0, "timed_out": 0, "queue_count": 0, "last_run": newest},
        )
        bucket["total"] += 1
        bucket["successes"] += latest["conclusion"] in SUCCESS_CONCLUSIONS
        bucket["failures"] += latest["conclusion"] in FAILURE_CONCLUSIONS
        bucket["timed_out"] += latest["conclusion"] == "timed_out"
        bucket["queue_count"] += latest["queue_time"] is not None
        bucket["last_run"] = max(bucket["last_run"], newest)
    return hours


def assert_rollup_matches_records() -> None:
    actual = hourly_rows()
    expected = expected_hourly()

    assert sorted(actual) == sorted(expected), "the rollup's hours differ from the records'"
    for key, figures in expected.items():
        row = actual[key]
        assert {name: row[name] for name in figures} == figures, key


def insert(*items: dict, deleted: bool = False) -> None:
    insert_rows([to_row(item, deleted=deleted) for item in items])


def test_fold_places_each_group_at_its_latest_attempt():
    insert(record("flaky", conclusion="failure", attempt=1, completed_ago=timedelta(hours=30)))
    rollup.catch_up()
    insert(record("flaky", conclusion="success", attempt=2, completed_ago=timedelta(hours=2)))
    rollup.catch_up()

    rows = hourly_rows()

    # The first attempt's hour is gone: only the second attempt counts, in its own hour.
    assert len(rows) == 1
    ((_, row),) = rows.items()
    assert (row["total"], row["successes"], row["failures"]) == (1, 1, 0)
    assert_rollup_matches_records()


def test_deleted_record_leaves_the_rollup():
    remaining, removed = record("remaining"), record("removed", conclusion="failure")
    insert(remaining, removed)
    rollup.catch_up()
    insert(removed, deleted=True)
    rollup.catch_up()

    (row,) = hourly_rows().values()

    assert (row["total"], row["successes"], row["failures"]) == (1, 1, 0)


def test_newer_version_of_a_record_replaces_its_figures():
    swept = record("job", conclusion="timed_out", swept=True, completed_ago=timedelta(hours=1))
    genuine = record("job", conclusion="success", revision=3, completed_ago=timedelta(days=3))
    insert(swept)
    rollup.catch_up()
    insert(genuine)
    rollup.catch_up()

    ((key, row),) = hourly_rows().items()

    # record() dates its records from the module's NOW, so the hour is taken from there too.
    assert key[2] == (NOW - timedelta(days=3)).replace(minute=0, second=0, tzinfo=None)
    assert (row["total"], row["successes"], row["timed_out"]) == (1, 1, 0)


def test_spellings_of_a_backend_share_one_rollup():
    insert(record("a", repo="Acme-AI/Torch-NPU"), record("b", repo="acme-ai/torch-npu", conclusion="failure"))
    rollup.catch_up()

    ((key, row),) = hourly_rows().items()

    assert key[0] == "acme-ai/torch-npu"
    assert (row["total"], row["successes"], row["failures"]) == (2, 1, 1)


def test_random_writes_in_many_folds_match_the_records():
    rng = random.Random(7)
    written: list[dict] = []
    for fold in range(8):
        batch = []
        for _ in range(25):
            if written and rng.random() < 0.15:
                # Delete or rewrite a record written earlier.
                old = rng.choice(written)
                if rng.random() < 0.5:
                    insert(old, deleted=True)
                    continue
                batch.append({**old, "conclusion": rng.choice(["success", "failure"]), "revision": 5 + fold})
                continue
            # A record's backend and event type never change, so both are part of its key here.
            event = rng.choice(["pull_request", "nightly"])
            batch.append(
                record(
                    f"job-{rng.randrange(6)}",
                    repo=rng.choice(["acme-ai/torch-npu", "initech/rocm-ci", "Initech/ROCm-CI"]),
                    event=event,
                    sha=rng.choice(["a" * 40, "b" * 40, ""]),
                    attempt=rng.randrange(1, 4),
                    conclusion=rng.choice(["success", "failure", "timed_out", "cancelled", "startup_failure"]),
                    completed_ago=timedelta(minutes=rng.randrange(1, 60 * 24 * 10)),
                    delivery=f"delivery-{event}-{rng.randrange(40)}",
                    queue_time=None if rng.random() < 0.2 else 3,
                )
            )
        insert(*batch)
        written.extend(batch)
        rollup.catch_up()

        assert_rollup_matches_records()

    # A refold from nothing gives the same rollup as the folds did step by step.
    before = hourly_rows()
    rollup.truncate()
    rollup.catch_up()
    assert hourly_rows().keys() == before.keys()
    assert all(hourly_rows()[key]["total"] == row["total"] for key, row in before.items())


def test_failed_fold_is_redone_by_the_next():
    insert(record("first"))
    rollup.catch_up()
    insert(record("second", conclusion="failure"))
    client = clickhouse.client()
    client.command(f"RENAME TABLE {rollup.HOURLY} TO {rollup.HOURLY}_hidden")
    try:
        with pytest.raises(Exception, match="oot_job_hourly"):
            rollup.catch_up()
    finally:
        client.command(f"RENAME TABLE {rollup.HOURLY}_hidden TO {rollup.HOURLY}")

    assert not rollup.is_current(), "a failed fold must not move the mark"
    rollup.ensure_current()
    assert rollup.is_current()
    assert_rollup_matches_records()


def test_older_fold_loses_to_newer():
    insert(record("job", conclusion="failure"))
    rollup.catch_up()
    insert(record("job", conclusion="success", revision=3))
    # A fold that started earlier (a lower version) but wrote later changes nothing.
    stale_version = 1
    rollup._fold([("acme-ai/torch-npu", "pull_request")], [], [], stale_version)
    rollup.catch_up()
    rollup._fold([("acme-ai/torch-npu", "pull_request")], [], [], stale_version)

    (row,) = hourly_rows().values()

    assert (row["successes"], row["failures"]) == (1, 0)


def test_stale_mark_refolds_everything():
    insert(record("job"))
    rollup.catch_up()
    # A row no longer in the queue (older than its TTL) is found by a whole refold.
    insert(record("other", conclusion="failure"))
    client = clickhouse.client()
    client.command(f"TRUNCATE TABLE {rollup.QUEUE}")
    client.command(f"TRUNCATE TABLE {rollup.STATE}")
    client.command(
        f"INSERT INTO {rollup.STATE} (name, folded_until, _version) VALUES ('queue', %(until)s, 1)",
        parameters={"until": datetime.now(UTC) - rollup.QUEUE_KEEPS - timedelta(hours=1)},
    )

    stats = rollup.catch_up()

    assert stats.whole_scopes == stats.scopes == 1
    assert_rollup_matches_records()


@pytest.mark.usefixtures("demo_allowlist")
def test_replication_run_folds_the_rows_it_inserted(client):
    assert post_callback(client, callback_body("in_progress")).status_code == 200
    assert post_callback(client, callback_body("completed", conclusion="success")).status_code == 200

    replicate()

    assert rollup.is_current()
    (row,) = hourly_rows().values()
    assert (row["total"], row["successes"]) == (1, 1)


def test_provision_refolds_rollups(capsys):
    rollup.catch_up()
    insert(record("job"))
    clickhouse.client().command(f"TRUNCATE TABLE {rollup.QUEUE}")
    rollup.catch_up()
    assert hourly_rows() == {}, "a row the queue never held is not folded by a normal fold"

    call_command("provision", "--refold-rollups")

    assert "rollups refolded" in capsys.readouterr().out
    assert_rollup_matches_records()


def test_metrics_show_the_rollup_backlog(client):
    rollup.catch_up()
    insert(record("a"), record("b"))

    queued = client.get("/metrics").content.decode()
    rollup.catch_up()
    folded = client.get("/metrics").content.decode()

    assert "oot_rollup_queued_rows 2\n" in queued
    assert "oot_rollup_queued_rows 0\n" in folded
    assert "oot_rollup_folded_until_seconds " in folded


def test_provision_refolds_without_dynamodb(settings, capsys):
    rollup.catch_up()
    insert(record("job"))
    clickhouse.client().command(f"TRUNCATE TABLE {rollup.QUEUE}")
    # Nothing listens on port 9: the refold must not need DynamoDB.
    settings.DYNAMODB_ENDPOINT = "http://127.0.0.1:9"

    call_command("provision", "--refold-rollups")

    assert "rollups refolded" in capsys.readouterr().out
    assert_rollup_matches_records()


def test_cached_summary_follows_a_fold(settings):
    from oot_views.queries import run_query
    from replicator.runner import lock_for_fold

    settings.OOT_QUERY_CACHE_SECONDS = 60
    insert(record("job", conclusion="failure"))
    rollup.catch_up()
    insert(record("job", conclusion="success", revision=3))
    # While a replication run holds the lock, a page reads the rollup unfolded and caches it.
    with lock_for_fold() as held:
        assert held
        stale = run_query("oot_summary", days=1, event_type="pull_request")
    rollup.catch_up()

    fresh = run_query("oot_summary", days=1, event_type="pull_request")

    assert stale[0]["failures"] == 1
    assert fresh[0]["failures"] == 0
    assert fresh[0]["successes"] == 1


def test_idle_fold_keeps_the_mark():
    insert(record("job"))
    rollup.catch_up()
    client = clickhouse.client()
    marks = f"SELECT count() FROM {rollup.STATE}"
    before = client.query(marks).result_rows[0][0]

    stats = rollup.catch_up()

    assert stats.scopes == 0
    assert client.query(marks).result_rows[0][0] == before, "an idle fold must not write a new mark"
    assert rollup.is_current()
