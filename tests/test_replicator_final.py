"""Every saved query returns the newest version of each record, whatever arrived when.

Each version below is inserted as its own part, so only FINAL (and filters
applied after it) can pick the newest one: an older failure next to a newer
success, a newer failure inserted before an older success, deletions in both
orders, and a record whose newest version moved out of the time window while
an older one (a swept timed_out) is still inside it.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from oot_views.queries import QUERY_DIR, run_query
from replicator import clickhouse
from replicator.convert import to_row
from replicator.writer import insert_rows

pytestmark = pytest.mark.usefixtures("stores")

REPO = "acme-ai/torch-npu"
HEAD_SHA = "c" * 40
EVENT = "pull_request"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def version_of(job: str, revision: int, conclusion: str, completed_ago: timedelta, **fields) -> dict:
    """One version of the completed record of `job`; later revisions are newer versions."""
    completed_at = NOW - completed_ago
    item = {
        "dynamoKey": f"{REPO}/delivery-{job}/npu-ci/{job}/{abs(hash(job)) % 10**9}",
        "status": "completed",
        "revision": Decimal(revision),
        "updated_at": iso(NOW - timedelta(hours=10) + timedelta(minutes=revision)),
        "downstream_repo": REPO,
        "downstream_repo_level": "L2",
        "upstream_repo": "pytorch/pytorch",
        "pr_number": Decimal(4242),
        "pytorch_head_sha": HEAD_SHA,
        "event_type": EVENT,
        "delivery_id": f"delivery-{job}",
        "workflow_name": "npu-ci",
        "job_name": job,
        "check_run_id": str(abs(hash(job)) % 10**9),
        "run_attempt": Decimal(1),
        "workflow_run_url": "https://github.com/acme-ai/torch-npu/actions/runs/1",
        "conclusion": conclusion,
        "started_at": iso(completed_at - timedelta(minutes=30)),
        "completed_at": iso(completed_at),
        "environment": '{"device": "Ascend910B"}',
    }
    item.update(fields)
    return item


def insert_part(item: dict, deleted: bool = False) -> None:
    """Insert one version as a part of its own."""
    insert_rows([to_row(item, deleted=deleted)])


@pytest.fixture
def versions(stores):
    hour, day = timedelta(hours=1), timedelta(days=1)
    client = clickhouse.client()
    # A background merge would fold versions together before the queries run.
    client.command(f"SYSTEM STOP MERGES {clickhouse.TABLE}")
    # Older failure first, newer success after.
    insert_part(version_of("newer-success", 2, "failure", 2 * hour))
    insert_part(version_of("newer-success", 3, "success", hour))
    # Newer failure first, older success after (out of order).
    insert_part(version_of("newer-failure", 3, "failure", hour))
    insert_part(version_of("newer-failure", 2, "success", 2 * hour))
    # Deleted by a person: tombstone after the row, and before it.
    insert_part(version_of("deleted-after", 2, "success", hour))
    insert_part(version_of("deleted-after", 2, "success", hour), deleted=True)
    insert_part(version_of("deleted-before", 2, "failure", hour), deleted=True)
    insert_part(version_of("deleted-before", 2, "failure", hour))
    # A swept timed_out inside the last day, then the genuine completion three days ago.
    insert_part(version_of("left-window", 2, "timed_out", hour, swept=True))
    insert_part(version_of("left-window", 3, "success", 3 * day))

    parts = client.query(
        "SELECT count() FROM system.parts WHERE table = {table:String} AND active",
        parameters={"table": clickhouse.TABLE},
    )
    assert parts.result_rows[0][0] == 10, "each version must be a part of its own"
    yield
    client.command(f"SYSTEM START MERGES {clickhouse.TABLE}")


def by_job(rows: list[dict]) -> dict[str, str]:
    jobs = [row["job_name"] for row in rows]
    assert len(jobs) == len(set(jobs)), f"a job appears more than once: {sorted(jobs)}"
    return {row["job_name"]: row["conclusion"] for row in rows}


def test_every_saved_query_is_covered():
    names = sorted(path.stem for path in Path(QUERY_DIR).glob("*.sql"))

    assert names == [
        "oot_backend_dashboard",
        "oot_backend_names",
        "oot_backend_summary",
        "oot_last_callback",
        "oot_pr_results",
        "oot_success_rate",
        "oot_summary",
    ], "a new saved query needs its case in this file"


@pytest.mark.usefixtures("versions")
@pytest.mark.parametrize(("days", "expected"), [(1, (2, 1, 1)), (30, (3, 2, 1))])
def test_summary_counts_newest_versions(days, expected):
    rows = run_query("oot_summary", days=days, event_type=EVENT)

    assert len(rows) == 1
    assert (rows[0]["total"], rows[0]["successes"], rows[0]["failures"]) == expected


@pytest.mark.usefixtures("versions")
@pytest.mark.parametrize(("days", "expected"), [(1, (2, 1, 1)), (30, (3, 2, 1))])
def test_backend_summary_counts_newest_versions(days, expected):
    rows = run_query("oot_backend_summary", repos=[REPO], days=days, event_type=EVENT)

    assert (rows[0]["total"], rows[0]["successes"], rows[0]["failures"]) == expected
    assert rows[0]["timed_out"] == 0, "the swept timed_out was replaced by a success"


@pytest.mark.usefixtures("versions")
def test_backend_dashboard_shows_newest_versions():
    rows = run_query("oot_backend_dashboard", repos=[REPO], days=1, event_type=EVENT, per_page=50, offset=0)

    assert by_job(rows) == {"newer-success": "success", "newer-failure": "failure"}


@pytest.mark.usefixtures("versions")
def test_backend_dashboard_month_shows_moved_record():
    rows = run_query("oot_backend_dashboard", repos=[REPO], days=30, event_type=EVENT, per_page=50, offset=0)

    assert by_job(rows) == {"newer-success": "success", "newer-failure": "failure", "left-window": "success"}


@pytest.mark.usefixtures("versions")
def test_pr_results_show_newest_versions():
    rows = run_query("oot_pr_results", pr=4242, upstream_repo="pytorch/pytorch")

    assert by_job(rows) == {"newer-success": "success", "newer-failure": "failure", "left-window": "success"}
    assert not any(row["swept"] for row in rows)


@pytest.mark.usefixtures("versions")
def test_success_rate_counts_newest_versions():
    rows = run_query("oot_success_rate", days=1, event_type=EVENT)

    assert sum(row["total"] for row in rows) == 2
    assert sum(row["successes"] for row in rows) == 1
    assert sum(row["failures"] for row in rows) == 1


@pytest.mark.usefixtures("versions")
def test_last_callback_ignores_version_copies():
    rows = run_query("oot_last_callback", repos=[REPO.lower()])

    # The newest update is revision 3. Deleted records still count here: the
    # query reports when callbacks arrived, as Redis's last-callback map does.
    assert len(rows) == 1
    assert rows[0]["repository_key"] == REPO.lower()
    assert rows[0]["last_update"] == iso(NOW - timedelta(hours=10) + timedelta(minutes=3))


@pytest.mark.usefixtures("versions")
def test_backend_names_lists_each_spelling_once():
    rows = run_query("oot_backend_names", repo=REPO.lower())

    assert rows == [{"downstream_repo": REPO}]
