"""The data behind each page, as plain dicts that the templates and the JSON endpoints share.

ClickHouse contains completed jobs only, so running jobs are read from
DynamoDB's sparse running indexes and merged in here. Pass rates follow one rule everywhere:
successes / (successes + failures), over the latest attempt per (head SHA,
workflow, job), with the time window applied to completed_at.
"""

import json
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from oot_ingest import counters, dynamo
from oot_ingest.models import AllowlistEntry
from oot_ingest.vocabulary import (
    FAILURE_CONCLUSIONS,
    REPORTING_LEVELS,
    SUCCESS_CONCLUSIONS,
    pass_rate_colour,
)
from oot_views import links
from oot_views.cells import as_utc, build_matrix, cell_from_row, latest_attempts, running_cells, to_count, to_number
from oot_views.filters import Filters
from oot_views.queries import add_timing, run_query

PER_PAGE = 50
SUMMARY_LEVELS = ("L4", "L3", "L2")
ENVIRONMENT_ITEMS_SHOWN = 12
ENVIRONMENT_VALUE_CHARS = 120


def pass_rate(successes: int, failures: int) -> float | None:
    """Return successes / (successes + failures) in percent, or None when neither happened."""
    counted = successes + failures
    if counted == 0:
        return None
    return round(100.0 * successes / counted, 1)


def last_callbacks(repositories: list[str]) -> dict[str, datetime]:
    """Return the time of each backend's latest callback, keyed by lower-case repository name.

    Redis stores the latest callback of every repository, which is at least
    as new as any record update in ClickHouse. ClickHouse's update times
    cover repositories missing from Redis (after a flush or a move).
    """
    latest: dict[str, datetime] = {}
    for repo, stamp in counters.last_callbacks().items():
        moment = as_utc(stamp)
        if moment:
            latest[repo.lower()] = moment
    missing = sorted({repo.lower() for repo in repositories} - set(latest))
    if missing:
        for row in run_query("oot_last_callback", repos=missing):
            moment = as_utc(row["last_update"])
            if moment:
                latest[row["repository_key"]] = moment
    return latest


# --- /oot ---------------------------------------------------------------


def summary(filters: Filters) -> dict:
    """Build the global summary: one table per reporting level, worst pass rate first, and the L1 list."""
    rows = {row["repository_key"]: row for row in run_query("oot_summary", **_window(filters))}
    entries = list(AllowlistEntry.objects.filter(enabled=True))
    last_seen = last_callbacks([entry.repository for entry in entries if entry.level in REPORTING_LEVELS])
    now = datetime.now(UTC)

    levels: dict[str, list[dict]] = {level: [] for level in SUMMARY_LEVELS}
    l1: list[dict] = []
    for entry in entries:
        if entry.level not in REPORTING_LEVELS:
            l1.append({"repository": entry.repository, "oncalls": entry.oncall_list})
            continue
        item = _summary_item(entry, rows.get(entry.repository.lower()), last_seen.get(entry.repository.lower()), now)
        levels[entry.level].append(item)

    for items in levels.values():
        items.sort(key=_worst_first)
    backends = [item for items in levels.values() for item in items]
    successes = sum(item["successes"] for item in backends)
    failures = sum(item["failures"] for item in backends)
    return {
        "filters": filters,
        "generated_at": now,
        "totals": {
            "backends": len(backends),
            "with_data": sum(1 for item in backends if item["has_data"]),
            "not_reporting": sum(1 for item in backends if item["not_reporting"]),
            "successes": successes,
            "failures": failures,
            "total": sum(item["total"] for item in backends),
            "pass_rate": pass_rate(successes, failures),
            "pass_rate_colour": pass_rate_colour(pass_rate(successes, failures)),
        },
        "levels": [{"level": level, "backends": items} for level, items in levels.items()],
        "l1": sorted(l1, key=lambda item: item["repository"].lower()),
    }


def _window(filters: Filters) -> dict:
    return {"days": filters.days, "event_type": filters.event_type}


def _summary_item(entry: AllowlistEntry, row: dict | None, last_callback: datetime | None, now: datetime) -> dict:
    threshold = entry.stale_after_hours
    silent_seconds = (now - last_callback).total_seconds() if last_callback else None
    successes = to_count(row["successes"]) if row else 0
    failures = to_count(row["failures"]) if row else 0
    total = to_count(row["total"]) if row else 0
    rate = pass_rate(successes, failures)
    return {
        "repository": entry.repository,
        "path": links.backend_path(entry.repository),
        "level": entry.level,
        "device": entry.device,
        "oncalls": entry.oncall_list,
        "has_data": total > 0,
        "successes": successes,
        "failures": failures,
        "other": max(0, total - successes - failures),
        "total": total,
        "pass_rate": rate,
        "pass_rate_colour": pass_rate_colour(rate),
        "avg_duration_seconds": to_number(row["avg_duration_seconds"]) if row else None,
        "last_run": as_utc(row["last_run"]) if row else None,
        "last_callback": last_callback,
        "not_reporting": silent_seconds is None or silent_seconds > threshold * 3600,
        "not_reporting_hours": threshold,
    }


def _worst_first(item: dict) -> tuple:
    """Order backends with a pass rate worst first, then those with only uncounted results, then no data."""
    rate = item["pass_rate"]
    return (not item["has_data"], rate is None, rate if rate is not None else 0.0, item["repository"].lower())


# --- /oot/<org>/<repo> --------------------------------------------------


def backend(repository: str, filters: Filters, page: int) -> dict:
    """Build one backend's header, cards and PR x job matrix (PER_PAGE rows a page)."""
    entry = AllowlistEntry.objects.filter(repository__iexact=repository).first()
    name = entry.repository if entry else repository
    # Records keep the repository's spelling from the relay, which may differ
    # in case from the allowlist's. Every spelling belongs to this backend.
    spellings = [row["downstream_repo"] for row in run_query("oot_backend_names", repo=name.lower())]
    repos = sorted(set(spellings) | {name})

    stats_rows = run_query("oot_backend_summary", repos=repos, **_window(filters))
    stats = stats_rows[0] if stats_rows else {}
    rows = run_query(
        "oot_backend_dashboard", repos=repos, per_page=PER_PAGE, offset=(page - 1) * PER_PAGE, **_window(filters)
    )
    running = _running_for_backend(repos, filters.event_type)
    matrix = build_matrix(rows, running_cells(running) if page == 1 else [], add_running_rows=page == 1)

    total = to_count(stats.get("total"))
    successes = to_count(stats.get("successes"))
    failures = to_count(stats.get("failures"))
    timed_out = to_count(stats.get("timed_out"))
    rate = pass_rate(successes, failures)
    last_callback = last_callbacks([name]).get(name.lower())
    row_count = to_count(stats.get("total_rows"))
    return {
        "repository": name,
        "repo_url": links.github_repo_url(name),
        "known": entry is not None or bool(spellings) or bool(running),
        "allowlisted": entry is not None,
        "level": entry.level if entry else None,
        "device": entry.device if entry else "",
        "oncalls": entry.oncall_list if entry else [],
        "filters": filters,
        "page": page,
        "pages": max(1, -(-row_count // PER_PAGE)),
        "per_page": PER_PAGE,
        "pass_rate": rate,
        "pass_rate_colour": pass_rate_colour(rate),
        "last_callback": last_callback,
        "environment": _environment_summary(stats.get("current_environment")),
        "cards": {
            "total_prs": to_count(stats.get("total_prs")),
            "total_rows": row_count,
            "total_jobs": total,
            "successes": successes,
            "failures": failures,
            "timed_out": timed_out,
            "avg_queue_seconds": to_number(stats.get("avg_queue_seconds")),
            "avg_execution_seconds": to_number(stats.get("avg_execution_seconds")),
            "timeout_rate": round(100.0 * timed_out / total, 1) if total else None,
        },
        "running": len(running),
        "workflow_groups": _workflow_groups(matrix["columns"]),
        **matrix,
    }


def _running_for_backend(repos: list[str], event_type: str) -> list[dict]:
    started = time.perf_counter()
    try:
        return [
            item
            for repo in repos
            for item in dynamo.running_jobs_for_backend(repo)
            if item.get("event_type") == event_type
        ]
    finally:
        add_timing("dynamodb_seconds", time.perf_counter() - started)


def _workflow_groups(columns: list[dict]) -> list[dict]:
    """Return runs of adjacent columns with the same workflow, for the matrix's header row."""
    groups: list[dict] = []
    for column in columns:
        if groups and groups[-1]["workflow"] == column["workflow"]:
            groups[-1]["span"] += 1
        else:
            groups.append({"workflow": column["workflow"], "span": 1})
    return groups


def _environment_summary(text: Any) -> list[dict]:
    """Return the latest environment object as key/value pairs, for the header."""
    if not text:
        return []
    try:
        environment = json.loads(text)
    except (TypeError, ValueError):
        return []
    if not isinstance(environment, dict):
        return []
    pairs = []
    for key, value in sorted(environment.items())[:ENVIRONMENT_ITEMS_SHOWN]:
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        pairs.append({"key": str(key)[:ENVIRONMENT_VALUE_CHARS], "value": shown[:ENVIRONMENT_VALUE_CHARS]})
    return pairs


# --- /pr/<number> -------------------------------------------------------


def pr_results(number: int) -> dict:
    """Build the "Out-of-Tree Backends" section of one upstream PR: its newest head SHA, latest attempts."""
    upstream_repo = settings.OOT_UPSTREAM_REPO
    completed = [
        cell_from_row(row) | {"placed_at": as_utc(row["placed_at"])}
        for row in run_query("oot_pr_results", pr=number, upstream_repo=upstream_repo)
    ]
    started = time.perf_counter()
    try:
        running = running_cells(dynamo.running_jobs_for_pr(upstream_repo, number))
    finally:
        add_timing("dynamodb_seconds", time.perf_counter() - started)
    cells = completed + running

    newest_sha = ""
    newest_time = None
    for cell in cells:
        placed = cell["placed_at"]
        if cell["head_sha"] and placed and (newest_time is None or placed > newest_time):
            newest_sha, newest_time = cell["head_sha"], placed
    if newest_sha:
        cells = [cell for cell in cells if cell["head_sha"] == newest_sha]

    jobs = sorted(latest_attempts(cells), key=lambda cell: (cell["backend"].lower(), cell["workflow"], cell["job"]))
    for job in jobs:
        job["backend_path"] = links.backend_path(job["backend"])
    passed = sum(1 for job in jobs if not job["running"] and job["conclusion"] in SUCCESS_CONCLUSIONS)
    failed = sum(1 for job in jobs if not job["running"] and job["conclusion"] in FAILURE_CONCLUSIONS)
    running_count = sum(1 for job in jobs if job["running"])
    summary_text = f"{passed}/{len(jobs)} passed"
    if running_count:
        summary_text += f", {running_count} running"
    return {
        "number": number,
        "upstream_repo": upstream_repo,
        "pr_url": links.pull_request_url(upstream_repo, number),
        "head_sha": newest_sha,
        "commit_url": links.commit_url(upstream_repo, newest_sha),
        "summary": summary_text,
        "passed": passed,
        "failed": failed,
        "running": running_count,
        "other": len(jobs) - passed - failed - running_count,
        "total": len(jobs),
        "backends": len({job["backend"].lower() for job in jobs}),
        "jobs": jobs,
    }
