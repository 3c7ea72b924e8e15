"""The data behind each page, as plain dicts that templates and JSON endpoints share.

ClickHouse holds completed jobs; running jobs are read from DynamoDB's sparse
running indexes and merged in here.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

from oot_ingest import counters, dynamo
from oot_ingest.models import AllowlistEntry
from oot_ingest.urls import is_http_url
from oot_ingest.vocabulary import (
    FAILURE_CONCLUSIONS,
    REPORTING_LEVELS,
    STATUS_IN_PROGRESS,
    SUCCESS_CONCLUSIONS,
    chip_for,
    pass_rate_colour,
)
from oot_views.queries import run_query

PER_PAGE = 50
DAY_CHOICES = (1, 7, 30)
EVENT_CHOICES = {
    "pull_request": "Pull requests",
    "push": "Push (ciflow/trunk)",
    "nightly": "Nightly",
    "periodic": "Periodic",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GITHUB_RUN_PATTERN = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/actions/runs/\d+/?$")


@dataclass(frozen=True)
class Filters:
    days: int
    event_type: str


def parse_filters(query: dict) -> Filters:
    """Read ?days= and ?event= from a query string, falling back to 7 days of pull requests."""
    try:
        days = int(query.get("days", 7))
    except (TypeError, ValueError):
        days = 7
    if days not in DAY_CHOICES:
        days = 7
    event_type = query.get("event", "pull_request")
    if event_type not in EVENT_CHOICES:
        event_type = "pull_request"
    return Filters(days=days, event_type=event_type)


def as_utc(value: Any) -> datetime | None:
    """Turn a ClickHouse or ISO time into an aware UTC datetime; the epoch means unknown."""
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


def pass_rate(successes: int, failures: int) -> float | None:
    counted = successes + failures
    if counted == 0:
        return None
    return round(100.0 * successes / counted, 1)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and value != value:  # NaN from avg over no rows
        return None
    return float(value)


def job_log_url(run_url: str, check_run_id: str) -> str | None:
    """Return the job's log URL for a GitHub Actions run; None for any other run URL."""
    if run_url and check_run_id and GITHUB_RUN_PATTERN.match(run_url):
        return f"{run_url.rstrip('/')}/job/{check_run_id}"
    return None


def safe_link(url: Any) -> str | None:
    return url if is_http_url(url) else None


# --- /oot ---------------------------------------------------------------


def summary(filters: Filters) -> dict:
    """Build the global summary: one table per level, worst pass rate first."""
    rows = {
        row["downstream_repo"].lower(): row
        for row in run_query("oot_summary", days=filters.days, event_type=filters.event_type)
    }
    last_seen = _last_callbacks()
    now = datetime.now(UTC)

    levels: dict[str, list[dict]] = {level: [] for level in ("L4", "L3", "L2")}
    l1: list[dict] = []
    for entry in AllowlistEntry.objects.filter(enabled=True):
        if entry.level not in REPORTING_LEVELS:
            l1.append({"repository": entry.repository, "oncalls": entry.oncall_list})
            continue
        row = rows.get(entry.repository.lower())
        last_callback = last_seen.get(entry.repository.lower())
        silent_hours = (now - last_callback).total_seconds() / 3600 if last_callback else None
        item = {
            "repository": entry.repository,
            "level": entry.level,
            "device": entry.device,
            "oncalls": entry.oncall_list,
            "has_data": row is not None,
            "last_callback": last_callback,
            "not_reporting": last_callback is None or silent_hours > entry.stale_after_hours,
            "not_reporting_hours": entry.stale_after_hours,
        }
        if row is not None:
            rate = pass_rate(row["successes"], row["failures"])
            item.update(
                successes=row["successes"],
                failures=row["failures"],
                total=row["total"],
                pass_rate=rate,
                pass_rate_colour=pass_rate_colour(rate),
                avg_duration_seconds=_number(row["avg_duration_seconds"]),
                last_run=as_utc(row["last_run"]),
            )
        levels[entry.level].append(item)

    for items in levels.values():
        items.sort(key=_worst_first)
    return {
        "filters": filters,
        "levels": [{"level": level, "backends": items} for level, items in levels.items()],
        "l1": sorted(l1, key=lambda item: item["repository"].lower()),
    }


def _worst_first(item: dict) -> tuple:
    rate = item.get("pass_rate")
    return (not item["has_data"], rate is None, rate if rate is not None else 0, item["repository"].lower())


def _last_callbacks() -> dict[str, datetime]:
    """Latest callback per backend: Redis remembers every callback; ClickHouse covers older completions."""
    latest: dict[str, datetime] = {}
    for row in run_query("oot_last_callback"):
        moment = as_utc(row["last_update"])
        if moment:
            latest[row["downstream_repo"].lower()] = moment
    for repo, stamp in counters.last_callbacks().items():
        moment = as_utc(stamp)
        if moment and (repo not in latest or moment > latest[repo]):
            latest[repo] = moment
    return latest


# --- cells shared by the backend and PR pages ---------------------------


def cell_from_row(row: dict) -> dict:
    """Describe one job execution for a chip and its details panel."""
    status = row.get("status") or STATUS_IN_PROGRESS
    chip = chip_for(status, row.get("conclusion"))
    run_url = safe_link(row.get("workflow_run_url"))
    started = as_utc(row.get("started_at"))
    completed = as_utc(row.get("completed_at"))
    # Without started_at the duration is unknown, never "since 1970".
    duration = _number(row.get("duration_seconds")) if started else None
    if status == STATUS_IN_PROGRESS and started:
        duration = (datetime.now(UTC) - started).total_seconds()
    return {
        "dynamo_key": row.get("dynamoKey", ""),
        "backend": row.get("downstream_repo", ""),
        "workflow": row.get("workflow_name", ""),
        "job": row.get("job_name", ""),
        "attempt": int(row.get("run_attempt") or 1),
        "status": status,
        "running": status == STATUS_IN_PROGRESS,
        "conclusion": row.get("conclusion") or "",
        "chip_label": chip.label,
        "chip_colour": chip.colour,
        "head_sha": row.get("pytorch_head_sha", ""),
        "started_at": started,
        "completed_at": completed,
        "duration_seconds": duration,
        "queue_seconds": _number(row.get("queue_time")),
        "tests_total": int(row.get("total_tests") or 0),
        "tests_passed": int(row.get("passed_tests") or 0),
        "tests_failed": int(row.get("failed_tests") or 0),
        "run_url": run_url,
        "log_url": job_log_url(run_url or "", str(row.get("check_run_id") or "")),
        "artifact_url": safe_link(row.get("artifact_url")),
        "failed_tests": _failed_tests(row.get("failed_tests_json")),
        "failed_tests_cut": int(row.get("failed_tests_entries_cut") or 0),
        "swept": bool(row.get("swept")),
        "older_attempts": [],
    }


def _failed_tests(text: Any) -> list[dict]:
    if not text:
        return []
    try:
        entries = json.loads(text)
    except (TypeError, ValueError):
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def _latest_attempts(cells: list[dict]) -> list[dict]:
    """Keep the latest attempt per (backend, workflow, job); older attempts hang off it."""
    latest: dict[tuple, dict] = {}
    for cell in sorted(
        cells, key=lambda cell: (cell["attempt"], cell["completed_at"] or cell["started_at"] or EPOCH), reverse=True
    ):
        key = (cell["backend"], cell["workflow"], cell["job"])
        if key in latest:
            latest[key]["older_attempts"].append(cell)
        else:
            latest[key] = cell
    return list(latest.values())


def _running_cells(items: list[dict]) -> list[dict]:
    cells = []
    for item in items:
        cell = cell_from_row(item)
        cell["placed_at"] = cell["started_at"] or as_utc(item.get("updated_at"))
        cell["row_key"] = (
            str(item.get("pr_number")) if int(item.get("pr_number") or 0) > 0 else item.get("pytorch_head_sha", "")
        )
        cells.append(cell)
    return cells


# --- /oot/<org>/<repo> --------------------------------------------------


def backend(repo: str, filters: Filters, page: int) -> dict:
    """Build one backend's header, cards and PR x job matrix page."""
    entry = AllowlistEntry.objects.filter(repository__iexact=repo).first()
    repo = entry.repository if entry else repo
    stats_rows = run_query("oot_backend_summary", repo=repo, days=filters.days, event_type=filters.event_type)
    stats = stats_rows[0] if stats_rows else {}
    total = int(stats.get("total") or 0)
    rate = pass_rate(int(stats.get("successes") or 0), int(stats.get("failures") or 0))

    page = max(1, page)
    rows = run_query(
        "oot_backend_dashboard",
        repo=repo,
        days=filters.days,
        event_type=filters.event_type,
        per_page=PER_PAGE,
        offset=(page - 1) * PER_PAGE,
    )
    matrix = _matrix(rows, _running_for_backend(repo, filters) if page == 1 else [])
    total_rows = int(stats.get("total_rows") or 0)

    return {
        "repo": repo,
        "entry": entry,
        "known": entry is not None or total > 0,
        "filters": filters,
        "page": page,
        "pages": max(1, -(-total_rows // PER_PAGE)),
        "pass_rate": rate,
        "pass_rate_colour": pass_rate_colour(rate),
        "environment": _environment_summary(stats.get("current_environment")),
        "cards": {
            "total_prs": int(stats.get("total_prs") or 0),
            "total_jobs": total,
            "failures": int(stats.get("failures") or 0),
            "timed_out": int(stats.get("timed_out") or 0),
            "avg_queue_seconds": _number(stats.get("avg_queue_seconds")),
            "avg_execution_seconds": _number(stats.get("avg_execution_seconds")),
            "timeout_rate": round(100.0 * int(stats.get("timed_out") or 0) / total, 1) if total else None,
        },
        **matrix,
    }


def _running_for_backend(repo: str, filters: Filters) -> list[dict]:
    items = [item for item in dynamo.running_jobs_for_backend(repo) if item.get("event_type") == filters.event_type]
    return _running_cells(items)


def _environment_summary(text: Any) -> list[tuple[str, str]]:
    if not text:
        return []
    try:
        environment = json.loads(text)
    except (TypeError, ValueError):
        return []
    if not isinstance(environment, dict):
        return []
    return [(str(key), str(value)) for key, value in sorted(environment.items())][:12]


def _matrix(rows: list[dict], running: list[dict]) -> dict:
    """Arrange cells as PR rows x job columns; a running job on a newer head SHA replaces the row's SHA."""
    by_row: dict[str, dict] = {}
    for row in rows:
        key = row["row_key"]
        line = by_row.setdefault(
            key,
            {
                "key": key,
                "pr_number": int(row["pr_number"] or 0),
                "upstream_repo": row["upstream_repo"],
                "head_sha": row["pytorch_head_sha"],
                "time": as_utc(row["row_time"]),
                "cells": [],
            },
        )
        line["cells"].append(cell_from_row(row))

    for cell in running:
        line = by_row.get(cell["row_key"])
        if line is None:
            continue
        placed = cell["placed_at"]
        if cell["head_sha"] != line["head_sha"]:
            if placed is None or (line["time"] and placed <= line["time"]):
                continue
            line["head_sha"], line["time"], line["cells"] = cell["head_sha"], placed, []
        line["cells"].append(cell)

    columns: set[str] = set()
    lines = sorted(by_row.values(), key=lambda line: line["time"] or EPOCH, reverse=True)
    for line in lines:
        latest = _latest_attempts(line["cells"])
        line["by_job"] = {cell["job"]: cell for cell in latest}
        columns.update(line["by_job"])
        line["upstream_url"] = f"https://github.com/{line['upstream_repo'] or settings.OOT_UPSTREAM_REPO}"
    ordered_columns = sorted(columns)
    for line in lines:
        line["row_cells"] = [line["by_job"].get(job) for job in ordered_columns]
    return {"columns": ordered_columns, "rows": lines}


# --- /pr/<number> -------------------------------------------------------


def pr_results(number: int, upstream_repo: str | None = None) -> dict:
    """Build the "Out-of-Tree Backends" section of one upstream PR: newest head SHA, latest attempts."""
    upstream_repo = upstream_repo or settings.OOT_UPSTREAM_REPO
    completed = [
        cell_from_row(row) | {"placed_at": as_utc(row["placed_at"])}
        for row in run_query("oot_pr_results", pr=number, upstream_repo=upstream_repo)
    ]
    running = _running_cells(dynamo.running_jobs_for_pr(upstream_repo, number))
    cells = completed + running

    newest_sha = ""
    newest_time = EPOCH
    for cell in cells:
        placed = cell["placed_at"] or EPOCH
        if cell["head_sha"] and placed >= newest_time:
            newest_sha, newest_time = cell["head_sha"], placed
    if newest_sha:
        cells = [cell for cell in cells if cell["head_sha"] == newest_sha]

    latest = sorted(_latest_attempts(cells), key=lambda cell: (cell["backend"].lower(), cell["workflow"], cell["job"]))
    passed = sum(1 for cell in latest if cell["conclusion"] in SUCCESS_CONCLUSIONS and not cell["running"])
    failed = sum(1 for cell in latest if cell["conclusion"] in FAILURE_CONCLUSIONS and not cell["running"])
    running_count = sum(1 for cell in latest if cell["running"])
    summary_text = f"{passed}/{len(latest)} passed"
    if running_count:
        summary_text += f", {running_count} running"
    if failed:
        summary_text += f", {failed} failed"
    return {
        "number": number,
        "upstream_repo": upstream_repo,
        "head_sha": newest_sha,
        "jobs": latest,
        "passed": passed,
        "failed": failed,
        "running": running_count,
        "total": len(latest),
        "summary": summary_text,
    }


# --- /oot/metrics -------------------------------------------------------


def metrics(filters: Filters) -> dict:
    """Build the metrics page: daily pass rate and volume per backend, and the service's own health."""
    from replicator.models import DeadLetter, ReplicatorStatus

    series: dict[str, list[dict]] = {}
    for row in run_query("oot_success_rate", days=filters.days, event_type=filters.event_type):
        rate = pass_rate(row["successes"], row["failures"])
        series.setdefault(row["downstream_repo"], []).append(
            {
                "day": row["day"].isoformat(),
                "total": row["total"],
                "successes": row["successes"],
                "failures": row["failures"],
                "pass_rate": rate,
                "pass_rate_colour": pass_rate_colour(rate),
                "avg_queue_seconds": _number(row["avg_queue_seconds"]),
                "avg_execution_seconds": _number(row["avg_execution_seconds"]),
            }
        )
    values = counters.read_all()
    rejected = values.get("callbacks_rejected", 0)
    handled = rejected + sum(
        values.get(name, 0) for name in ("callbacks_accepted", "callbacks_duplicate", "callbacks_ignored_late")
    )
    status = ReplicatorStatus.objects.order_by("-last_run_at").first()
    return {
        "filters": filters,
        "backends": [{"repository": repo, "days": days} for repo, days in sorted(series.items())],
        "service": {
            "callbacks": {
                name.removeprefix("callbacks_"): value
                for name, value in sorted(values.items())
                if name.startswith("callbacks_")
            },
            "error_rate": round(100.0 * rejected / handled, 2) if handled else None,
            "replication_lag_seconds": status.last_lag_seconds if status else None,
            "replication_last_success": status.last_success_at if status else None,
            "replication_records_total": status.total_records if status else 0,
            "dead_letters": DeadLetter.objects.count(),
        },
    }
