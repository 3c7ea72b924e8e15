"""The pages on the replayed demo corpus: in Debian's Chromium through Playwright, and through the JSON endpoints.

The module replays demo/relay-traffic.jsonl.gz through the callback API of
pytest-django's live server (the same process, so the same chdb), with every
timestamp shifted so the newest is now, and replicates it into ClickHouse
once. Tests marked `browser` drive /usr/bin/chromium with a fresh profile;
Playwright's own browser downloads are never used. Screenshots of each page
go to tests/screenshots/ (ignored by git).
"""

import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import override_settings

from oot_ingest import dynamo, policy
from oot_ingest.allowlist import import_allowlist
from oot_ingest.counters import redis_client
from oot_ingest.management.commands.replay_corpus import load_corpus, replay, shift_corpus
from oot_views.filters import DAY_CHOICES
from tests.conftest import (
    DEMO_ALLOWLIST,
    DEMO_CORPUS,
    RESULTS_URL,
    TOKEN,
    callback_body,
    reset_clickhouse,
    reset_dynamodb,
)
from tests.test_pages import insert, iso, record

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
BACKENDS = [
    "acme-ai/torch-npu",
    "contoso/xpu-backend",
    "fabrikam/tpu-bridge",
    "initech/rocm-ci",
    "openreg/torch-openreg",
    "pytorch/crcr-test",
]
HOSTILE_PR = 999_001
MARKUP = '"><img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>'
# Conclusions are at most 64 characters long.
SHORT_MARKUP = "<img src=x onerror=alert(7)>"


def _replicate_everything() -> None:
    from replicator.stream import replicate_once

    for _ in range(20):
        stats = replicate_once(deadline_seconds=120)
        assert stats is not None, "replication run failed; see the log"
        if stats.records_read == 0:
            return
    raise AssertionError("replication did not catch up in 20 runs")


@pytest.fixture(scope="module")
def corpus(django_db_blocker, live_server) -> dict:
    """Replay the demo corpus through the live server's API once for this module, and replicate it."""
    with django_db_blocker.unblock():
        reset_dynamodb()
        reset_clickhouse()
        redis_client().flushdb()
        import_allowlist(DEMO_ALLOWLIST.read_text(encoding="utf-8"))
        policy.clear_policy_cache()
        entries = shift_corpus(load_corpus(DEMO_CORPUS), datetime.now(UTC))
        ingest_log = logging.getLogger("oot_ingest")
        level = ingest_log.level
        ingest_log.setLevel(logging.WARNING)
        try:
            # The replay sends a month of callbacks in about a minute.
            with override_settings(OOT_DEFAULT_RATE_LIMIT=1_000_000):
                outcome = replay(entries, live_server.url + RESULTS_URL, TOKEN, connections=4)
        finally:
            ingest_log.setLevel(level)
        assert outcome["statuses"] == {200: len(entries)}, outcome["statuses"]
        _replicate_everything()

    pr_counts: dict[int, int] = {}
    for entry in entries:
        pull_request = entry["body"]["untrusted"]["callback_payload"]["payload"].get("pull_request")
        if pull_request:
            pr_counts[pull_request["number"]] = pr_counts.get(pull_request["number"], 0) + 1
    return {"entries": entries, "busiest_pr": max(pr_counts, key=pr_counts.get)}


@pytest.fixture(autouse=True)
def demo_allowlist_each_test(transactional_db):
    """Put the allowlist back: transactional tests empty Django's database after each test."""
    import_allowlist(DEMO_ALLOWLIST.read_text(encoding="utf-8"))
    policy.clear_policy_cache()


@pytest.fixture(scope="module")
def browser_context():
    """A Chromium from Debian's package with a profile of its own, deleted afterwards."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/bootstrap --browser does)")
    # Playwright's sync API keeps an event loop in this thread, so Django would
    # otherwise reject the database calls the tests make between page loads.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    profile = tempfile.mkdtemp(prefix="oot-chromium-")
    playwright = sync_playwright().start()
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1440, "height": 900},
    )
    try:
        yield context
    finally:
        context.close()
        playwright.stop()
        shutil.rmtree(profile, ignore_errors=True)
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def browser_page(browser_context):
    """A fresh tab that records console errors, CSP violations and dialogs, and fails the test on any of them."""
    page = browser_context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    def refuse_dialog(dialog):
        problems.append(f"dialog opened: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", refuse_dialog)
    page.problems = problems
    yield page
    page.close()
    assert problems == [], f"the page reported: {problems}"


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def card_value(page, label: str) -> str:
    return page.locator(".card", has=page.locator(".card-label", has_text=label)).locator(".card-value").inner_text()


# --- the pages agree on the corpus ---------------------------------------


@pytest.mark.usefixtures("corpus")
@pytest.mark.parametrize("days", list(DAY_CHOICES))
def test_summary_backend_and_metrics_agree(client, days):
    summary = client.get(f"/api/oot/summary?days={days}").json()
    metrics = client.get(f"/api/oot/metrics?days={days}").json()
    by_repo = {item["repository"]: item for level in summary["levels"] for item in level["backends"]}
    metric_totals = {item["repository"]: item["totals"] for item in metrics["backends"]}

    assert set(by_repo) == set(BACKENDS)
    for repository in BACKENDS:
        listed = by_repo[repository]
        backend = client.get(f"/api/oot/backends/{repository}?days={days}").json()
        counts = (listed["successes"], listed["failures"], listed["total"])
        assert (backend["cards"]["successes"], backend["cards"]["failures"], backend["cards"]["total_jobs"]) == counts
        assert backend["pass_rate"] == listed["pass_rate"], repository
        if listed["total"]:
            totals = metric_totals[repository]
            assert (totals["successes"], totals["failures"], totals["total"]) == counts, repository
            assert totals["pass_rate"] == listed["pass_rate"], repository
        else:
            assert repository not in metric_totals
    assert summary["totals"]["total"] == metrics["overall"]["totals"]["total"]


@pytest.mark.usefixtures("corpus")
def test_html_pages_show_the_json_numbers(client):
    summary = client.get("/api/oot/summary?days=30").json()
    html = client.get("/oot?days=30").content.decode()

    for item in (item for level in summary["levels"] for item in level["backends"]):
        row = html.split(f">{item['repository']}</a>", 1)[1].split("</tr>", 1)[0]
        assert f">{item['pass_rate']:.1f}%<" in row, item["repository"]
        assert f'<td class="num">{item["total"]}</td>' in row, item["repository"]


@pytest.mark.usefixtures("corpus")
def test_corpus_pr_matches_its_records(client, corpus):
    number = corpus["busiest_pr"]
    body = client.get(f"/api/oot/pr/{number}").json()

    assert body["total"] > 0
    assert body["summary"].startswith(f"{body['passed']}/{body['total']} passed")
    assert all(job["head_sha"] == body["head_sha"] for job in body["jobs"])
    keys = [(job["backend"], job["workflow"], job["job"]) for job in body["jobs"]]
    assert len(keys) == len(set(keys)), "one row per backend and job"


# --- in Chromium ----------------------------------------------------------


@pytest.mark.browser
@pytest.mark.usefixtures("corpus")
def test_every_page_loads(browser_page, live_server, corpus):
    pages = {
        "summary": "/oot?days=30",
        "backend": "/oot/acme-ai/torch-npu?days=30",
        "backend-nightly": "/oot/contoso/xpu-backend?days=30&event=nightly",
        "pr": f"/pr/{corpus['busiest_pr']}",
        "metrics": "/oot/metrics?days=30",
        "metrics-24h": "/oot/metrics?days=1",
    }
    for name, path in pages.items():
        response = browser_page.goto(live_server.url + path)
        assert response.status == 200, path
        assert browser_page.locator("h1").count() == 1, path
        assert browser_page.locator(".notice-error").count() == 0, path
        screenshot(browser_page, name)

    browser_page.goto(live_server.url + "/oot/metrics?days=30")
    assert browser_page.locator("figure.chart svg").count() >= 10
    assert browser_page.locator("figure.chart svg rect.bar").count() > 0


@pytest.mark.browser
@pytest.mark.usefixtures("corpus")
def test_click_through_to_cell_details(browser_page, live_server):
    browser_page.goto(live_server.url + "/oot?days=30")
    browser_page.locator("#level-L2").locator("xpath=../..").get_by_role("link", name="acme-ai/torch-npu").click()

    browser_page.wait_for_url(re.compile(r"/oot/acme-ai/torch-npu\?days=30"))
    assert "acme-ai/torch-npu" in browser_page.locator("h1").inner_text()
    rows = browser_page.locator("table.matrix tbody tr")
    assert rows.count() == 50, "a full first page of PRs"
    cell = browser_page.locator("details.cell").first
    panel = cell.locator(".popover")
    assert not panel.is_visible()

    cell.locator("summary").click()

    assert panel.is_visible()
    assert "Attempt" in panel.inner_text()
    run_href = panel.get_by_role("link", name="Workflow run").get_attribute("href")
    log_href = panel.get_by_role("link", name="Job log").get_attribute("href")
    assert run_href.startswith("https://github.com/acme-ai/torch-npu/actions/runs/")
    assert re.fullmatch(re.escape(run_href.rstrip("/")) + r"/job/\d+", log_href)
    screenshot(browser_page, "backend-details")

    browser_page.get_by_role("link", name="Older →").click()
    browser_page.wait_for_url(re.compile(r"page=2"))
    assert "Page 2 of" in browser_page.locator(".pager").inner_text()


@pytest.mark.browser
@pytest.mark.usefixtures("corpus")
def test_time_range_changes_the_data(browser_page, live_server):
    browser_page.goto(live_server.url + "/oot?days=1")
    day_jobs = int(card_value(browser_page, "Jobs"))

    browser_page.locator(".segmented[aria-label='Time range']").get_by_role("link", name="30d").click()

    browser_page.wait_for_url(re.compile(r"days=30"))
    month_jobs = int(card_value(browser_page, "Jobs"))
    assert month_jobs > day_jobs > 0
    assert browser_page.locator(".segmented a.active").first.inner_text() == "30d"


@pytest.mark.browser
@pytest.mark.usefixtures("corpus")
def test_pr_section_collapses(browser_page, live_server, corpus):
    browser_page.goto(live_server.url + f"/pr/{corpus['busiest_pr']}")
    section = browser_page.locator("details.oot-section")
    table = section.locator("table.pr-jobs")
    assert re.fullmatch(r"\d+/\d+ passed(, \d+ running)?", section.locator(".summary-text").inner_text())
    assert table.is_visible()

    section.locator("summary h2").click()

    assert not table.is_visible()


@pytest.fixture
def hostile_records(client, corpus, live_server):
    """Markup in every text field of a real callback, and javascript:/data: URLs written straight into the stores."""
    body = callback_body(
        "completed",
        repo="openreg/torch-openreg",
        delivery_id=f"delivery-{MARKUP}",
        job_name=f"job {MARKUP}",
        pr_number=HOSTILE_PR,
        conclusion=SHORT_MARKUP,
        name=f"workflow {MARKUP}",
        environment={MARKUP: MARKUP, "device": MARKUP},
        failed_tests_detail=[{"name": MARKUP, "classname": MARKUP, "message": MARKUP, "stacktrace": MARKUP}],
        completed_at=iso(datetime.now(UTC) - timedelta(minutes=20)),
        started_at=iso(datetime.now(UTC) - timedelta(minutes=50)),
    )
    response = client.post(
        RESULTS_URL, data=json.dumps(body), content_type="application/json", headers={"X-OOT-Relay-Token": TOKEN}
    )
    assert response.status_code == 200, response.content

    # Records another writer or older code could have left behind.
    insert(
        record(
            "javascript-urls",
            repo="openreg/torch-openreg",
            pr=HOSTILE_PR,
            sha="c" * 40,
            completed_ago=timedelta(minutes=10),
            workflow_run_url="javascript:window.__xss=3;alert(3)",
            artifact_url="data:text/html,<script>alert(4)</script>",
            upstream_repo="pytorch/pytorch",
        )
    )
    started = datetime.now(UTC) - timedelta(minutes=5)
    dynamo.table().put_item(
        Item={
            "dynamoKey": "openreg/torch-openreg/hostile/ci/running/1",
            "status": "in_progress",
            "revision": Decimal(1),
            "updated_at": iso(started),
            "running_pr": f"pytorch/pytorch#{HOSTILE_PR}",
            "running_backend": "openreg/torch-openreg",
            "downstream_repo": "openreg/torch-openreg",
            "upstream_repo": "pytorch/pytorch",
            "pr_number": Decimal(HOSTILE_PR),
            "pytorch_head_sha": "c" * 40,
            "event_type": "pull_request",
            "delivery_id": "hostile",
            "workflow_name": f"running {MARKUP}",
            "job_name": f"running {MARKUP}",
            "check_run_id": str(zlib.crc32(b"hostile")),
            "run_attempt": Decimal(1),
            "workflow_run_url": "javascript:window.__xss=5;alert(5)",
            "artifact_url": "data:text/html;base64,PHNjcmlwdD5hbGVydCg2KTwvc2NyaXB0Pg==",
            "started_at": iso(started),
        }
    )
    _replicate_everything()


@pytest.mark.browser
@pytest.mark.usefixtures("hostile_records")
def test_hostile_records_render_inert(browser_page, live_server):
    paths = [
        f"/pr/{HOSTILE_PR}",
        "/oot/openreg/torch-openreg?days=1",
        "/oot?days=1",
        "/oot/metrics?days=1",
        f"/api/oot/pr/{HOSTILE_PR}",
    ]
    for path in paths:
        browser_page.goto(live_server.url + path)
        # Open and close every details panel, so that anything inside it gets rendered and clicked past.
        for summary in browser_page.locator("details.cell > summary").all()[:60]:
            summary.click()
            summary.click()
        for link in browser_page.locator("a[href]").all():
            href = link.get_attribute("href")
            assert not href.lower().startswith(("javascript:", "data:", "vbscript:")), f"{path}: {href}"
        assert browser_page.evaluate("window.__xss") is None, path
        assert browser_page.locator("script:not([src])").count() == 0, path
        assert browser_page.url == live_server.url + path, "nothing navigated away"

    browser_page.goto(live_server.url + f"/pr/{HOSTILE_PR}")
    text = browser_page.locator("table.pr-jobs").inner_text()
    assert "<script>window.__xss=2;alert(2)</script>" in text, "markup shows as text"
    screenshot(browser_page, "hostile-pr")
