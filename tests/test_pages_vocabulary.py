"""One status vocabulary for every page: chip colours and labels, and the pass-rate rule."""

import re
from datetime import timedelta
from pathlib import Path

import pytest

from oot_ingest.vocabulary import (
    FAILURE_CONCLUSIONS,
    SUCCESS_CONCLUSIONS,
    chip_for,
    pass_rate_colour,
)
from oot_views.filters import EVENT_LABELS
from oot_views.pages import pass_rate
from oot_views.queries import QUERY_DIR
from tests.test_pages import insert, record

# Every conclusion GitHub sends for a job, plus what a sender may leave out.
EXPECTED_CHIPS = {
    "success": ("success", "green"),
    "failure": ("failure", "red"),
    "startup_failure": ("startup failure", "red"),
    "timed_out": ("timed out", "yellow"),
    "cancelled": ("cancelled", "yellow"),
    "neutral": ("neutral", "grey"),
    "skipped": ("skipped", "grey"),
    "stale": ("stale", "grey"),
    "action_required": ("action required", "grey"),
    "unknown": ("unknown", "grey"),
    None: ("unknown", "grey"),
    "": ("unknown", "grey"),
    "something_new": ("unknown", "grey"),
}


@pytest.mark.parametrize(("conclusion", "expected"), EXPECTED_CHIPS.items())
def test_every_conclusion_has_label_and_colour(conclusion, expected):
    chip = chip_for("completed", conclusion)

    assert (chip.label, chip.colour) == expected


def test_running_is_blue_whatever_the_conclusion():
    assert (chip_for("in_progress", None).label, chip_for("in_progress", None).colour) == ("running", "blue")
    assert chip_for("in_progress", "failure").colour == "blue"


def test_pass_rate_rule():
    assert SUCCESS_CONCLUSIONS == ("success",)
    assert set(FAILURE_CONCLUSIONS) == {"failure", "timed_out", "startup_failure"}
    assert pass_rate(19, 1) == 95.0
    assert pass_rate(0, 0) is None
    assert pass_rate(1, 2) == 33.3


@pytest.mark.parametrize(
    ("rate", "colour"),
    [
        (100.0, "green"),
        (95.0, "green"),
        (94.9, "yellow"),
        (80.0, "yellow"),
        (79.9, "red"),
        (0.0, "red"),
        (None, "grey"),
    ],
)
def test_pass_rate_chip_thresholds(rate, colour):
    assert pass_rate_colour(rate) == colour


def test_saved_queries_take_conclusions_from_the_vocabulary():
    """Queries that count failures from the records bind the conclusions; the others read the rollup."""
    for path in QUERY_DIR.glob("*.sql"):
        text = path.read_text(encoding="utf-8")
        hard_coded = re.findall(r"'(success|failure|startup_failure)'", text)
        assert hard_coded == [], f"{path.name} names conclusions itself: {hard_coded}"
        if "AS failures" in text and "{rollup:Identifier}" not in text:
            assert "{success_conclusions:Array(String)}" in text, path.name
            assert "{failure_conclusions:Array(String)}" in text, path.name


def test_rollup_fold_takes_conclusions_from_the_vocabulary():
    from replicator import rollup

    text = Path(rollup.__file__).read_text(encoding="utf-8")

    assert re.findall(r"'(success|failure|startup_failure)'", text) == []
    assert "{success_conclusions:Array(String)}" in text
    assert "{failure_conclusions:Array(String)}" in text


def test_every_event_type_has_a_label():
    from oot_ingest.vocabulary import EVENT_TYPES

    assert set(EVENT_LABELS) == set(EVENT_TYPES)


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_pages_render_each_conclusion_with_its_chip(client):
    conclusions = [name for name in EXPECTED_CHIPS if name not in (None, "")]
    insert(*[record(f"job-{name}", conclusion=name, completed_ago=timedelta(minutes=30)) for name in conclusions])

    pr = client.get("/pr/4242").content.decode()
    matrix = client.get("/oot/acme-ai/torch-npu?days=1").content.decode()

    for name in conclusions:
        label, colour = EXPECTED_CHIPS[name]
        chip = f'<span class="chip chip-{colour}">{label}</span>'
        row = pr.split(f">job-{name}<", 1)[1].split("</tr>", 1)[0]
        assert chip in row, f"{name} on the PR page"
        cell = matrix.split(f"<strong>job-{name}</strong>", 1)[1].split("</dl>", 1)[0]
        assert chip in cell, f"{name} in the matrix"
    body = client.get("/api/oot/pr/4242").json()
    # success counts as passed, and failure, startup_failure and timed_out as failed. The rest count as neither.
    assert (body["passed"], body["failed"], body["other"]) == (1, 3, len(conclusions) - 4)
