"""Job executions as the backend matrix and the PR section show them.

A cell is one job execution: a completed ClickHouse row or a running
DynamoDB record. For each (backend, workflow, job) a page shows the latest
attempt of the newest head SHA; older attempts hang off that cell.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

from oot_ingest.vocabulary import STATUS_IN_PROGRESS, chip_for
from oot_views import links

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A details panel lists this many failed tests and counts the rest.
FAILED_TESTS_SHOWN = 20
FAILED_TEST_MESSAGE_CHARS = 600


def as_utc(value: Any) -> datetime | None:
    """Turn a ClickHouse or ISO 8601 time into an aware UTC datetime, or None for the epoch and bad values."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value <= EPOCH:
        return None
    return value.astimezone(UTC)


def to_number(value: Any) -> float | None:
    """Return a float, or None for a missing value or the NaN that avg() gives over no rows."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        value = float(value)
    if not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def to_count(value: Any) -> int:
    """Return a non-negative int from a ClickHouse count or a DynamoDB decimal, and 0 for anything else."""
    number = to_number(value)
    return int(number) if number is not None and number >= 0 else 0


def cell_from_row(row: dict) -> dict:
    """Describe one job execution for a chip and its details panel."""
    status = row.get("status") or STATUS_IN_PROGRESS
    running = status == STATUS_IN_PROGRESS
    chip = chip_for(status, row.get("conclusion"))
    run_url = links.safe_link(row.get("workflow_run_url"))
    started = as_utc(row.get("started_at"))
    completed = as_utc(row.get("completed_at"))
    if running:
        duration = (datetime.now(UTC) - started).total_seconds() if started else None
    elif started and completed:
        duration = max(0.0, (completed - started).total_seconds())
    else:
        # Without started_at (a lost in_progress callback, or a nightly
        # self-report) the duration is unknown, never "since 1970".
        duration = None
    failed_tests, failed_tests_hidden = _failed_tests(row.get("failed_tests_json"))
    return {
        "dynamo_key": str(row.get("dynamoKey") or ""),
        "backend": str(row.get("downstream_repo") or ""),
        "workflow": str(row.get("workflow_name") or ""),
        "job": str(row.get("job_name") or ""),
        "attempt": to_count(row.get("run_attempt")) or 1,
        "status": status,
        "running": running,
        "conclusion": str(row.get("conclusion") or "") if not running else "",
        "label": chip.label,
        "colour": chip.colour,
        "head_sha": str(row.get("pytorch_head_sha") or ""),
        "started_at": started,
        "completed_at": completed,
        "duration_seconds": duration,
        "queue_seconds": to_number(row.get("queue_time")),
        "execution_seconds": to_number(row.get("execution_time")),
        "tests_total": to_count(row.get("total_tests")),
        "tests_passed": to_count(row.get("passed_tests")),
        "tests_failed": to_count(row.get("failed_tests")),
        "tests_skipped": to_count(row.get("skipped_tests")),
        "run_url": run_url,
        "log_url": links.job_log_url(run_url, row.get("check_run_id")),
        "artifact_url": links.safe_link(row.get("artifact_url")),
        "failed_tests": failed_tests,
        # Entries beyond the panel's list, plus entries the ingestion cut.
        "failed_tests_hidden": failed_tests_hidden + to_count(row.get("failed_tests_entries_cut")),
        "swept": bool(row.get("swept")),
        "older_attempts": [],
    }


def _failed_tests(text: Any) -> tuple[list[dict], int]:
    """Return the first failed tests of a record's failed_tests_json and how many more there are."""
    if not text:
        return [], 0
    try:
        entries = json.loads(text)
    except (TypeError, ValueError):
        return [], 0
    if not isinstance(entries, list):
        return [], 0
    tests = []
    for entry in entries[:FAILED_TESTS_SHOWN]:
        if not isinstance(entry, dict):
            continue
        tests.append(
            {
                "name": str(entry.get("name") or ""),
                "classname": str(entry.get("classname") or ""),
                "message": str(entry.get("message") or "")[:FAILED_TEST_MESSAGE_CHARS],
            }
        )
    return tests, max(0, len(entries) - FAILED_TESTS_SHOWN)


def _attempt_order(cell: dict) -> tuple:
    return (cell["attempt"], cell["completed_at"] or cell["started_at"] or EPOCH, cell["running"])


def latest_attempts(cells: list[dict]) -> list[dict]:
    """Keep the latest attempt per (backend, workflow, job) and move older attempts to its `older_attempts`."""
    latest: dict[tuple, dict] = {}
    for cell in sorted(cells, key=_attempt_order, reverse=True):
        key = (cell["backend"], cell["workflow"], cell["job"])
        if key in latest:
            latest[key]["older_attempts"].append(cell)
        else:
            latest[key] = cell
    return list(latest.values())


def running_cells(items: list[dict]) -> list[dict]:
    """Turn running DynamoDB records into cells placed in time by started_at (else their last update)."""
    cells = []
    for item in items:
        cell = cell_from_row(item)
        cell["placed_at"] = cell["started_at"] or as_utc(item.get("updated_at"))
        cell["pr_number"] = to_count(item.get("pr_number"))
        cell["upstream_repo"] = str(item.get("upstream_repo") or "")
        cell["row_key"] = str(cell["pr_number"]) if cell["pr_number"] > 0 else cell["head_sha"]
        cells.append(cell)
    return cells


def build_matrix(rows: list[dict], running: list[dict], add_running_rows: bool) -> dict:
    """Arrange cells as rows (a PR, or a head SHA without a PR) x columns (workflow, job).

    `rows` are one page of oot_backend_dashboard. A running job of a row on
    the page joins it, and if it runs on a newer head SHA than the row's
    completed jobs, that SHA replaces them. With `add_running_rows` (page
    1), PRs that only have running jobs become rows too.
    """
    lines: dict[str, dict] = {}
    for row in rows:
        key = str(row["row_key"])
        line = lines.get(key)
        if line is None:
            line = lines[key] = _line(key, to_count(row["pr_number"]), row["upstream_repo"], row["pytorch_head_sha"])
            line["time"] = as_utc(row["row_time"])
        line["cells"].append(cell_from_row(row))

    for cell in sorted(running, key=lambda cell: cell["placed_at"] or EPOCH):
        line = lines.get(cell["row_key"])
        if line is None:
            if not add_running_rows:
                continue
            line = lines[cell["row_key"]] = _line(
                cell["row_key"], cell["pr_number"], cell["upstream_repo"], cell["head_sha"]
            )
        placed = cell["placed_at"]
        if cell["head_sha"] != line["head_sha"]:
            if placed is None or (line["time"] and placed <= line["time"]):
                continue
            line["head_sha"], line["cells"] = cell["head_sha"], []
        if placed and (line["time"] is None or placed > line["time"]):
            line["time"] = placed
        line["cells"].append(cell)

    columns: set[tuple[str, str]] = set()
    ordered = sorted(lines.values(), key=lambda line: (line["time"] or EPOCH, line["key"]), reverse=True)
    for line in ordered:
        line["by_column"] = {(cell["workflow"], cell["job"]): cell for cell in latest_attempts(line.pop("cells"))}
        columns.update(line["by_column"])
    column_list = sorted(columns)
    for line in ordered:
        by_column = line.pop("by_column")
        line["cells"] = [by_column.get(column) for column in column_list]
        line["commit_url"] = links.commit_url(line["upstream_repo"], line["head_sha"])
        line["pr_url"] = links.pull_request_url(line["upstream_repo"], line["pr_number"])
        line["pr_path"] = (
            links.pr_path(line["pr_number"]) if line["upstream_repo"] == settings.OOT_UPSTREAM_REPO else None
        )
    return {"columns": [{"workflow": workflow, "job": job} for workflow, job in column_list], "rows": ordered}


def _line(key: str, pr_number: int, upstream_repo: str, head_sha: str) -> dict:
    return {
        "key": key,
        "pr_number": pr_number,
        "upstream_repo": upstream_repo or settings.OOT_UPSTREAM_REPO,
        "head_sha": head_sha,
        "time": None,
        "cells": [],
    }
