"""/oot, /oot/<org>/<repo> and /pr/<number> on records written straight into ClickHouse and DynamoDB.

Completed records are inserted as ClickHouse rows (each call its own part),
running ones as DynamoDB items, so each test states exactly the data behind
the page it reads.
"""

import re
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings

from oot_ingest import counters, dynamo
from oot_ingest.models import AllowlistEntry
from replicator.convert import to_row
from replicator.writer import insert_rows

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

REPO = "acme-ai/torch-npu"
NOW = datetime.now(UTC).replace(microsecond=0)
SHA_OLD = "a" * 40
SHA_NEW = "b" * 40


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def record(
    job: str = "test",
    *,
    repo: str = REPO,
    conclusion: str = "success",
    pr: int = 4242,
    sha: str = SHA_OLD,
    attempt: int = 1,
    completed_ago: timedelta = timedelta(hours=1),
    duration: timedelta = timedelta(minutes=30),
    event: str = "pull_request",
    delivery: str = "delivery-1",
    upstream: str = "pytorch/pytorch",
    **fields,
) -> dict:
    """One completed record as the replicator reads it from the stream (numbers as Decimal)."""
    completed = NOW - completed_ago
    check_run_id = str(zlib.crc32(f"{repo}|{delivery}|{job}|{attempt}|{sha}".encode()))
    item = {
        "dynamoKey": f"{repo}/{delivery}/ci/{job}/{check_run_id}",
        "status": "completed",
        "revision": Decimal(2),
        "updated_at": iso(completed),
        "downstream_repo": repo,
        "downstream_repo_level": "L2",
        "upstream_repo": upstream,
        "pr_number": Decimal(pr),
        "pytorch_head_sha": sha,
        "event_type": event,
        "delivery_id": delivery,
        "workflow_name": "ci",
        "job_name": job,
        "check_run_id": check_run_id,
        "run_id": "24033272679",
        "run_attempt": Decimal(attempt),
        "workflow_run_url": f"https://github.com/{repo}/actions/runs/24033272679",
        "artifact_url": "https://artifacts.example.org/runs/24033272679/",
        "conclusion": conclusion,
        "started_at": iso(completed - duration),
        "completed_at": iso(completed),
        "queue_time": Decimal("12.5"),
        "execution_time": Decimal(int(duration.total_seconds())),
        "environment": '{"device": "Ascend910B", "driver": "24.1"}',
    }
    item.update(fields)
    return item


def insert(*items: dict) -> None:
    insert_rows([to_row(item) for item in items])


def put_running(
    job: str, *, repo: str = REPO, pr: int = 4242, sha: str = SHA_OLD, started_ago=timedelta(minutes=5), **fields
):
    """Write a running record straight into DynamoDB, with the attributes of its sparse running indexes."""
    started = NOW - started_ago
    item = {
        "dynamoKey": f"{repo}/delivery-running/ci/{job}/{zlib.crc32(job.encode())}",
        "status": "in_progress",
        "revision": Decimal(1),
        "updated_at": iso(started),
        "running_pr": f"pytorch/pytorch#{pr}",
        "running_backend": repo,
        "downstream_repo": repo,
        "upstream_repo": "pytorch/pytorch",
        "pr_number": Decimal(pr),
        "pytorch_head_sha": sha,
        "event_type": "pull_request",
        "delivery_id": "delivery-running",
        "workflow_name": "ci",
        "job_name": job,
        "check_run_id": str(zlib.crc32(job.encode())),
        "run_attempt": Decimal(1),
        "workflow_run_url": f"https://github.com/{repo}/actions/runs/1",
        "started_at": iso(started),
    }
    item.update(fields)
    dynamo.table().put_item(Item=item)


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, f"{url} answered {response.status_code}"
    return response.content.decode()


def summary_backend(client, repository: str, query: str = "days=7") -> dict:
    body = client.get(f"/api/oot/summary?{query}").json()
    for level in body["levels"]:
        for backend in level["backends"]:
            if backend["repository"] == repository:
                return backend
    raise AssertionError(f"{repository} is not in the summary")


def table_rows(html: str, table_class: str) -> list[str]:
    """Return the body rows of every table with the class."""
    rows = []
    for table in html.split(f'class="data {table_class}')[1:]:
        body = table.split("</table>", 1)[0].split("<tbody>", 1)[1]
        rows.extend(re.findall(r"<tr[^>]*>.*?</tr>", body, re.S))
    return rows


# --- /oot ---------------------------------------------------------------


def test_summary_sorts_worst_first_with_chip_colours(client):
    insert(
        *[record(f"ok-{n}", delivery="d-acme") for n in range(19)],
        record("bad", conclusion="failure", delivery="d-acme"),
    )
    insert(*[record(f"ok-{n}", repo="fabrikam/tpu-bridge") for n in range(4)])
    insert(record("bad", repo="fabrikam/tpu-bridge", conclusion="failure"))
    insert(
        record("ok", repo="openreg/torch-openreg"), record("bad", repo="openreg/torch-openreg", conclusion="failure")
    )

    html = page(client, "/oot")
    l2_rows = html.split('id="level-L2"', 1)[1].split("</section>", 1)[0]
    order = re.findall(r'<td class="repo">\s*<a href="[^"]*">([^<]+)</a>', l2_rows)

    assert order == ["openreg/torch-openreg", "fabrikam/tpu-bridge", REPO, "pytorch/crcr-test"]
    assert summary_backend(client, REPO)["pass_rate"] == 95.0
    assert summary_backend(client, REPO)["pass_rate_colour"] == "green"
    assert summary_backend(client, "fabrikam/tpu-bridge")["pass_rate_colour"] == "yellow"
    assert summary_backend(client, "openreg/torch-openreg")["pass_rate_colour"] == "red"
    assert 'chip chip-green">95.0%' in l2_rows
    assert 'chip chip-yellow">80.0%' in l2_rows
    assert 'chip chip-red">50.0%' in l2_rows
    assert "no data" in l2_rows.split("pytorch/crcr-test", 1)[1]


def test_summary_has_one_table_per_level_and_l1_list(client):
    html = page(client, "/oot")

    positions = [html.index(f'id="level-{level}"') for level in ("L4", "L3", "L2", "L1")]
    assert positions == sorted(positions), "levels must read L4, L3, L2, then L1"
    l1 = html.split('id="level-L1"', 1)[1]
    assert "example-labs/torch-riscv" in l1
    assert "hooli/pytorch-vulkan-ci" in l1
    assert "example-labs/torch-riscv" not in html.split('id="level-L1"', 1)[0]


def test_summary_row_has_every_column(client):
    insert(
        record("a", conclusion="success", duration=timedelta(minutes=20)),
        record("b", conclusion="failure", duration=timedelta(minutes=40)),
        record("c", conclusion="cancelled"),
    )

    backend = summary_backend(client, REPO)

    assert (backend["successes"], backend["failures"], backend["other"], backend["total"]) == (1, 1, 1, 3)
    assert backend["pass_rate"] == 50.0, "cancelled is shown but not counted"
    assert backend["avg_duration_seconds"] == pytest.approx((20 * 60 + 40 * 60 + 30 * 60) / 3)
    assert backend["last_run"] == iso(NOW - timedelta(hours=1))
    html = page(client, "/oot")
    row = next(row for row in table_rows(html, "summary-table") if REPO in row)
    assert "+1 other" in row
    assert "30m 00s" in row


def test_summary_counts_latest_attempt_only(client):
    insert(record("flaky", conclusion="failure", attempt=1, completed_ago=timedelta(hours=2)))
    insert(record("flaky", conclusion="success", attempt=2, completed_ago=timedelta(hours=1)))

    backend = summary_backend(client, REPO)

    assert (backend["successes"], backend["failures"], backend["total"]) == (1, 0, 1)


def test_summary_time_range_follows_days(client):
    insert(
        record("recent", completed_ago=timedelta(hours=3)),
        record("older", conclusion="failure", completed_ago=timedelta(days=3)),
    )

    assert summary_backend(client, REPO, "days=1")["total"] == 1
    assert summary_backend(client, REPO, "days=7")["total"] == 2
    assert summary_backend(client, REPO, "days=30")["failures"] == 1
    html = page(client, "/oot?days=30")
    assert 'href="?days=1&amp;page=1"' in html, "the time range links keep the range in the URL"
    assert 'class="active" aria-current="true">30d<' in html
    assert '/oot/acme-ai/torch-npu?days=30&amp;page=1"' in html, "backend links carry the range"


def test_summary_event_filter(client):
    insert(record("nightly", event="nightly", pr=0, conclusion="failure"), record("pr"))

    assert summary_backend(client, REPO, "days=7")["total"] == 1
    assert summary_backend(client, REPO, "days=7&event=nightly")["failures"] == 1


def test_not_reporting_uses_default_and_per_backend_hours(client):
    AllowlistEntry.objects.filter(repository="fabrikam/tpu-bridge").update(not_reporting_hours=48)
    counters.record_callback("callbacks_accepted", REPO, iso(NOW - timedelta(hours=30)))
    counters.record_callback("callbacks_accepted", "fabrikam/tpu-bridge", iso(NOW - timedelta(hours=30)))
    counters.record_callback("callbacks_accepted", "openreg/torch-openreg", iso(NOW - timedelta(hours=2)))
    counters.flush()

    for days in (1, 30):
        assert summary_backend(client, REPO, f"days={days}")["not_reporting"] is True
        assert summary_backend(client, "fabrikam/tpu-bridge", f"days={days}")["not_reporting"] is False
        assert summary_backend(client, "openreg/torch-openreg", f"days={days}")["not_reporting"] is False
        assert summary_backend(client, "pytorch/crcr-test", f"days={days}")["not_reporting"] is True

    backend = summary_backend(client, REPO)
    assert backend["last_callback"] == iso(NOW - timedelta(hours=30))
    assert backend["not_reporting_hours"] == 24
    html = page(client, "/oot")
    acme = next(row for row in table_rows(html, "summary-table") if REPO in row)
    assert "not reporting · last callback " + (NOW - timedelta(hours=30)).strftime("%Y-%m-%d %H:%M UTC") in acme
    crcr = next(row for row in table_rows(html, "summary-table") if "pytorch/crcr-test" in row)
    assert "not reporting · no callback yet" in crcr


def test_not_reporting_falls_back_to_clickhouse(client):
    insert(record("old", completed_ago=timedelta(hours=40)))

    backend = summary_backend(client, REPO, "days=7")

    assert backend["last_callback"] == iso(NOW - timedelta(hours=40)), "Redis has no entry; ClickHouse updated_at"
    assert backend["not_reporting"] is True


@override_settings(OOT_NOT_REPORTING_HOURS=72)
def test_not_reporting_default_comes_from_settings(client):
    counters.record_callback("callbacks_accepted", REPO, iso(NOW - timedelta(hours=30)))
    counters.flush()

    assert summary_backend(client, REPO)["not_reporting"] is False


@pytest.mark.parametrize("query", ["days=14", "days=abc", "days=-1", "event=release"])
def test_summary_rejects_invalid_filters(client, query):
    html = client.get(f"/oot?{query}")
    body = client.get(f"/api/oot/summary?{query}")

    name = query.split("=")[0]
    assert html.status_code == 400
    assert f"{name} must be one of" in html.content.decode()
    assert body.status_code == 400
    assert body.json()["ok"] is False
    assert body.json()["error"].startswith(f"{name} must be one of")


def test_disabled_entries_are_not_listed(client):
    AllowlistEntry.objects.filter(repository="fabrikam/tpu-bridge").update(enabled=False)

    assert "fabrikam/tpu-bridge" not in page(client, "/oot")


# --- /oot/<org>/<repo> --------------------------------------------------


def test_matrix_cell_is_latest_attempt_of_newest_sha(client):
    insert(record("build", sha=SHA_OLD, conclusion="failure", completed_ago=timedelta(hours=5)))
    insert(
        record("build", sha=SHA_NEW, attempt=1, conclusion="failure", completed_ago=timedelta(hours=2), delivery="d2")
    )
    insert(
        record("build", sha=SHA_NEW, attempt=2, conclusion="success", completed_ago=timedelta(hours=1), delivery="d2")
    )

    body = client.get(f"/api/oot/backends/{REPO}?days=7").json()

    assert len(body["rows"]) == 1, "one row per PR"
    row = body["rows"][0]
    assert row["head_sha"] == SHA_NEW
    assert row["commit_url"] == f"https://github.com/pytorch/pytorch/commit/{SHA_NEW}"
    assert row["pr_url"] == "https://github.com/pytorch/pytorch/pull/4242"
    cell = row["cells"][0]
    assert (cell["attempt"], cell["conclusion"], cell["colour"]) == (2, "success", "green")
    assert [older["attempt"] for older in cell["older_attempts"]] == [1]
    assert cell["older_attempts"][0]["conclusion"] == "failure"

    html = page(client, f"/oot/{REPO}?days=7")
    assert f'href="https://github.com/pytorch/pytorch/commit/{SHA_NEW}"' in html
    assert ">bbbbbbb</code>" in html
    assert ">aaaaaaa</code>" not in html
    assert 'href="https://github.com/pytorch/pytorch/pull/4242"' in html
    assert "Earlier attempts" in html


def test_matrix_has_a_column_per_job(client):
    insert(record("build"), record("test-1", conclusion="failure"), record("test-2", conclusion="timed_out"))

    body = client.get(f"/api/oot/backends/{REPO}?days=7").json()

    assert [column["job"] for column in body["columns"]] == ["build", "test-1", "test-2"]
    assert [cell["colour"] for cell in body["rows"][0]["cells"]] == ["green", "red", "yellow"]


def test_cell_details_panel(client):
    insert(
        record(
            "test",
            conclusion="failure",
            total_tests=Decimal(100),
            passed_tests=Decimal(97),
            failed_tests=Decimal(3),
            failed_tests_json='[{"name": "test_conv", "classname": "TestConv", "message": "not close"}]',
            failed_tests_entries_cut=Decimal(2),
        )
    )

    html = page(client, f"/oot/{REPO}?days=7")
    panel = html.split('<details class="cell">', 1)[1].split("</details>", 1)[0]

    assert "<dt>Attempt</dt><dd>1" in panel
    assert "<dt>Duration</dt><dd>30m 00s" in panel
    assert "<dt>Queue time</dt><dd>12s" in panel
    assert "97 passed / 100" in panel
    assert "TestConv.test_conv" in panel
    assert "not close" in panel
    assert "2 more failed tests" in panel
    assert 'href="https://github.com/acme-ai/torch-npu/actions/runs/24033272679"' in panel
    assert 'href="https://artifacts.example.org/runs/24033272679/"' in panel
    assert "/job/" in panel


def test_job_log_link_only_for_github_actions_runs(client):
    insert(record("github"), record("elsewhere", workflow_run_url="https://ci.example.org/runs/24033272679"))

    cells = client.get(f"/api/oot/backends/{REPO}?days=7").json()["rows"][0]["cells"]
    by_job = {cell["job"]: cell for cell in cells}

    github = by_job["github"]
    assert github["log_url"] == f"{github['run_url']}/job/{github['dynamo_key'].rsplit('/', 1)[1]}"
    assert by_job["elsewhere"]["run_url"] == "https://ci.example.org/runs/24033272679"
    assert by_job["elsewhere"]["log_url"] is None


def test_missing_started_at_has_unknown_duration(client):
    insert(record("selfreport", started_at=None))

    cell = client.get(f"/api/oot/backends/{REPO}?days=7").json()["rows"][0]["cells"][0]

    assert cell["started_at"] is None
    assert cell["duration_seconds"] is None


def test_backend_cards(client):
    insert(
        record("a", pr=1, queue_time=Decimal(10), execution_time=Decimal(100)),
        record("b", pr=2, conclusion="failure", queue_time=Decimal(30), execution_time=Decimal(300)),
        record("c", pr=2, conclusion="timed_out", queue_time=None, execution_time=None),
        record("d", pr=3, conclusion="cancelled", queue_time=Decimal(20), execution_time=Decimal(200)),
    )

    body = client.get(f"/api/oot/backends/{REPO}?days=7").json()
    cards = body["cards"]

    assert cards["total_prs"] == 3
    assert cards["total_jobs"] == 4
    assert cards["failures"] == 2, "failure and timed_out"
    assert cards["timed_out"] == 1
    assert cards["avg_queue_seconds"] == 20.0
    assert cards["avg_execution_seconds"] == 200.0
    assert cards["timeout_rate"] == 25.0
    assert body["pass_rate"] == pytest.approx(33.3)
    assert body["environment"] == [{"key": "device", "value": "Ascend910B"}, {"key": "driver", "value": "24.1"}]
    html = page(client, f"/oot/{REPO}?days=7")
    assert "including 1 timed out" in html
    assert "25.0%" in html


def test_backend_paginates_fifty_rows(client):
    insert(
        *[
            record("build", pr=1000 + n, sha=f"{n:040x}", completed_ago=timedelta(minutes=10 + n), delivery=f"d{n}")
            for n in range(51)
        ]
    )

    first = client.get(f"/api/oot/backends/{REPO}?days=7").json()
    second = client.get(f"/api/oot/backends/{REPO}?days=7&page=2").json()

    assert (first["page"], first["pages"], len(first["rows"])) == (1, 2, 50)
    assert first["rows"][0]["pr_number"] == 1000, "newest first"
    assert (second["page"], len(second["rows"])) == (2, 1)
    assert second["rows"][0]["pr_number"] == 1050
    html = page(client, f"/oot/{REPO}?days=7&page=2")
    assert "Page 2 of 2" in html
    assert 'href="?days=7&amp;page=1" rel="prev"' in html
    past = page(client, f"/oot/{REPO}?days=7&page=3")
    assert "Page 3 is past the last page" in past
    assert "fill 2 pages" in past
    assert 'href="?days=7&amp;page=1">Go to page 1</a>' in past


@pytest.mark.parametrize("event", ["nightly", "periodic", "push"])
def test_backend_views_for_other_events(client, event):
    pr = 4242 if event == "push" else 0
    insert(record("nightly-build", event=event, pr=pr, sha=SHA_NEW), record("pr-build"))

    body = client.get(f"/api/oot/backends/{REPO}?days=7&event={event}").json()

    assert [column["job"] for column in body["columns"]] == ["nightly-build"]
    assert body["rows"][0]["head_sha"] == SHA_NEW
    assert body["rows"][0]["pr_number"] == pr
    html = page(client, f"/oot/{REPO}?days=7&event={event}")
    assert "nightly-build" in html
    assert "pr-build" not in html


def test_unknown_backend_is_an_empty_state(client):
    response = client.get("/oot/nobody/nothing-here")
    body = client.get("/api/oot/backends/nobody/nothing-here").json()

    assert response.status_code == 200
    assert "No results for nobody/nothing-here" in response.content.decode()
    assert body["known"] is False
    assert body["rows"] == []


def test_backend_without_results_in_range(client):
    insert(record("old", completed_ago=timedelta(days=3)))

    html = page(client, f"/oot/{REPO}?days=1")

    assert "No pull requests results in the last 24h" in html


def test_backend_name_matches_any_case(client):
    insert(record("build", repo="ACME-AI/Torch-NPU"))

    body = client.get(f"/api/oot/backends/{REPO}?days=7").json()

    assert body["repository"] == REPO
    assert len(body["rows"]) == 1
    assert summary_backend(client, REPO)["total"] == 1


def test_running_job_joins_the_matrix(client):
    insert(record("build", sha=SHA_OLD, completed_ago=timedelta(hours=2)))
    put_running("test", sha=SHA_OLD)

    body = client.get(f"/api/oot/backends/{REPO}?days=7").json()
    cells = {cell["job"]: cell for cell in body["rows"][0]["cells"]}

    assert cells["test"]["running"] is True
    assert cells["test"]["colour"] == "blue"
    assert body["running"] == 1
    assert "spinner" in page(client, f"/oot/{REPO}?days=7")


def test_running_job_on_newer_sha_replaces_the_row(client):
    insert(record("build", sha=SHA_OLD, completed_ago=timedelta(hours=2)))
    put_running("build", sha=SHA_NEW, started_ago=timedelta(minutes=5))

    row = client.get(f"/api/oot/backends/{REPO}?days=7").json()["rows"][0]

    assert row["head_sha"] == SHA_NEW
    assert [cell["running"] for cell in row["cells"]] == [True]


def test_backend_rejects_invalid_page(client):
    response = client.get(f"/oot/{REPO}?page=0")

    assert response.status_code == 400
    assert "page must be a whole number" in response.content.decode()
    assert client.get(f"/api/oot/backends/{REPO}?page=x").status_code == 400


# --- /pr/<number> -------------------------------------------------------


def test_pr_jobs_carry_record_details(client):
    failures = '[{"name": "test_add", "classname": "TestOps", "message": "mismatch"}]'
    insert(
        record(
            "test",
            conclusion="failure",
            queue_time=Decimal("42.5"),
            execution_time=Decimal(600),
            total_tests=Decimal(10),
            passed_tests=Decimal(8),
            failed_tests=Decimal(1),
            skipped_tests=Decimal(1),
            failed_tests_json=failures,
            failed_tests_entries_cut=Decimal(3),
        )
    )

    (job,) = client.get("/api/oot/pr/4242").json()["jobs"]

    assert job["queue_seconds"] == 42.5
    assert job["execution_seconds"] == 600.0
    assert job["tests_total"] == 10
    assert job["tests_failed"] == 1
    assert job["tests_skipped"] == 1
    assert [test["name"] for test in job["failed_tests"]] == ["test_add"]
    assert job["failed_tests_hidden"] == 3


def test_pr_section_summary_and_rows(client):
    insert(record("build"), record("test", conclusion="failure"), record("lint", repo="initech/rocm-ci"))
    put_running("docs")

    html = page(client, "/pr/4242")
    body = client.get("/api/oot/pr/4242").json()

    assert '<details class="oot-section panel" open>' in html
    assert "Out-of-Tree Backends" in html
    assert "2/4 passed, 1 running" in html
    assert body["summary"] == "2/4 passed, 1 running"
    assert (body["passed"], body["failed"], body["running"], body["total"]) == (2, 1, 1, 4)
    assert [(job["backend"], job["job"]) for job in body["jobs"]] == [
        (REPO, "build"),
        (REPO, "docs"),
        (REPO, "test"),
        ("initech/rocm-ci", "lint"),
    ]
    rows = table_rows(html, "pr-jobs")
    docs = next(row for row in rows if "docs" in row)
    assert "spinner" in docs
    assert "chip-blue" in docs
    build = next(row for row in rows if ">build<" in row)
    assert 'href="https://github.com/acme-ai/torch-npu/actions/runs/24033272679"' in build
    assert ">Artifacts</a>" in build
    assert "30m 00s" in build


def test_pr_keeps_newest_head_sha_and_latest_attempt(client):
    insert(record("build", sha=SHA_OLD, conclusion="failure", completed_ago=timedelta(hours=6)))
    insert(record("old-only", sha=SHA_OLD, completed_ago=timedelta(hours=6)))
    insert(
        record("build", sha=SHA_NEW, attempt=1, conclusion="failure", completed_ago=timedelta(hours=2), delivery="d2")
    )
    insert(
        record("build", sha=SHA_NEW, attempt=2, conclusion="success", completed_ago=timedelta(hours=1), delivery="d2")
    )

    body = client.get("/api/oot/pr/4242").json()

    assert body["head_sha"] == SHA_NEW
    assert [(job["job"], job["attempt"], job["conclusion"]) for job in body["jobs"]] == [("build", 2, "success")]
    assert body["summary"] == "1/1 passed"


def test_pr_ignores_other_upstream_repositories(client):
    insert(record("build", upstream="someone/pytorch-fork", conclusion="failure"))

    body = client.get("/api/oot/pr/4242").json()

    assert body["jobs"] == []
    assert "Out-of-Tree Backends" not in page(client, "/pr/4242")


@override_settings(OOT_UPSTREAM_REPO="someone/pytorch-fork")
def test_pr_follows_configured_upstream(client):
    insert(record("build", upstream="someone/pytorch-fork"))

    assert client.get("/api/oot/pr/4242").json()["summary"] == "1/1 passed"


def test_pr_lookup_redirects(client):
    response = client.get("/pr?number=%234242")

    assert response.status_code == 302
    assert response["Location"] == "/pr/4242"
    assert client.get("/pr?number=abc").status_code == 400
    assert client.get("/api/oot/pr/99999999999999").status_code == 400


@pytest.mark.parametrize("raw", ["abc", "-1", "12x"])
def test_pr_path_that_is_not_a_number(client, raw):
    html = client.get(f"/pr/{raw}")
    body = client.get(f"/api/oot/pr/{raw}")

    assert html.status_code == 400
    assert f"PR number must be a whole number, got &#x27;{raw}&#x27;" in html.content.decode()
    assert body.status_code == 400
    assert body.json() == {"ok": False, "error": f"PR number must be a whole number, got '{raw}'"}


# --- safety -------------------------------------------------------------


PAGES = ["/oot", f"/oot/{REPO}", "/pr/4242", "/oot/metrics"]


def test_pages_send_a_content_security_policy(client):
    insert(record("build"))

    for url in PAGES:
        response = client.get(url)
        policy = response["Content-Security-Policy"]
        html = response.content.decode()
        assert "script-src 'self'" in policy, url
        assert "style-src 'self'" in policy, url
        assert "object-src 'none'" in policy, url
        assert " style=" not in html, f"{url} has an inline style, which the policy blocks"
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, f"{url} has an inline script"
        assert response["Server-Timing"].startswith("app;dur="), url


def test_unsafe_stored_urls_render_no_link(client):
    insert(
        record(
            "build",
            workflow_run_url="javascript:alert(document.domain)",
            artifact_url="data:text/html,<script>alert(1)</script>",
            upstream_repo="javascript:alert(1)//",
        )
    )
    put_running("test", workflow_run_url="javascript:alert(2)", artifact_url="data:text/html;base64,PHNjcmlwdD4=")

    for url in [f"/oot/{REPO}?days=7", "/pr/4242", f"/api/oot/backends/{REPO}?days=7", "/api/oot/pr/4242"]:
        text = client.get(url).content.decode()
        assert 'href="javascript:' not in text, url
        assert 'href="data:' not in text, url
        assert "<script>alert" not in text, url
    cell = client.get(f"/api/oot/backends/{REPO}?days=7").json()["rows"][0]["cells"][0]
    assert (cell["run_url"], cell["log_url"], cell["artifact_url"]) == (None, None, None)


def test_markup_in_records_is_escaped(client):
    markup = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    insert(
        record(
            markup,
            conclusion=markup,
            workflow_name=markup,
            environment='{"<b>key</b>": "<script>alert(3)</script>"}',
            failed_tests_json=(
                '[{"name": "<script>alert(4)</script>", "classname": "<i>",'
                ' "message": "</pre><script>alert(5)</script>"}]'
            ),
        )
    )

    for url in [f"/oot/{REPO}?days=7", "/pr/4242", "/oot/metrics"]:
        html = page(client, url)
        assert "<script>alert" not in html, url
        assert "<img src=x" not in html, url
    html = page(client, f"/oot/{REPO}?days=7")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;b&gt;key&lt;/b&gt;" in html


# --- failures -----------------------------------------------------------


@pytest.fixture
def table_gone(stores):
    """Rename the records table and its hourly rollup away for one test, as if dropped; put them back afterwards."""
    from replicator import clickhouse, rollup

    client = clickhouse.client()
    for table in (clickhouse.TABLE, rollup.HOURLY):
        client.command(f"RENAME TABLE {table} TO {table}_hidden")
    try:
        yield
    finally:
        for table in (clickhouse.TABLE, rollup.HOURLY):
            client.command(f"RENAME TABLE {table}_hidden TO {table}")


@pytest.mark.usefixtures("table_gone")
@pytest.mark.parametrize("url", PAGES)
def test_clickhouse_failure_shows_error_state(client, url):
    response = client.get(url)
    html = response.content.decode()

    assert response.status_code == 503
    assert 'role="alert"' in html
    assert "Results are temporarily unavailable" in html
    assert "Traceback" not in html
    assert "<h1>" in html, "the page keeps its header"


@pytest.mark.usefixtures("table_gone")
@pytest.mark.parametrize(
    "url", ["/api/oot/summary", f"/api/oot/backends/{REPO}", "/api/oot/pr/4242", "/api/oot/metrics"]
)
def test_clickhouse_failure_gives_json_503(client, url):
    response = client.get(url)

    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert "temporarily unavailable" in response.json()["error"]


def test_slow_query_times_out_into_error_state(client, settings, caplog):
    from replicator import clickhouse

    # Enough rows that the summary's FINAL and GROUP BY run well past 1 ms.
    clickhouse.client().command(
        f"INSERT INTO {clickhouse.TABLE} (dynamoKey, status, downstream_repo, delivery_id, job_name, pytorch_head_sha,"
        " event_type, conclusion, completed_at, _version)"
        " SELECT concat('k', toString(number)), 'completed', concat('repo/', toString(number % 50)),"
        " toString(number), concat('job', toString(number % 9)), hex(number), 'pull_request', 'success',"
        " now64(9) - toIntervalSecond(number % 86400), 1 FROM numbers(600000)"
    )
    settings.CLICKHOUSE_QUERY_TIMEOUT = 0.001
    settings.OOT_QUERY_CACHE_SECONDS = 0

    response = client.get("/oot?days=1")

    assert response.status_code == 503
    assert "Results are temporarily unavailable" in response.content.decode()
    assert "TIMEOUT_EXCEEDED" in caplog.text, "the query must have been stopped by max_execution_time"


def test_dynamodb_failure_shows_error_state(client, settings):
    insert(record("build"))
    settings.DYNAMODB_ENDPOINT = "http://127.0.0.1:9"

    response = client.get("/pr/4242")

    assert response.status_code == 503
    assert "Results are temporarily unavailable" in response.content.decode()


# --- the result cache ---------------------------------------------------


def test_new_rows_show_on_the_next_request(client):
    insert(record("first"))
    assert summary_backend(client, REPO)["total"] == 1

    insert(record("second", conclusion="failure"))

    backend = summary_backend(client, REPO)
    assert (backend["total"], backend["failures"]) == (2, 1)


def test_repeated_request_is_served_from_the_cache(client):
    insert(record("first"))
    first = client.get("/api/oot/summary?days=7")["Server-Timing"]

    second = client.get("/api/oot/summary?days=7")["Server-Timing"]

    assert re.search(r'cache;desc="0 hits, [1-9]\d* misses"', first), first
    assert re.search(r'cache;desc="[1-9]\d* hits, 0 misses"', second), second
