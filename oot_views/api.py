"""JSON shapes of the page data, as described by the OpenAPI document in oot_views/openapi.py.

Each function turns one page builder's dict into plain JSON values: times
become ISO 8601 strings in UTC, and fields that only the HTML needs (chart
geometry, internal sort keys) are left out.
"""

from datetime import datetime
from typing import Any

CELL_FIELDS = (
    "dynamo_key",
    "backend",
    "workflow",
    "job",
    "attempt",
    "status",
    "running",
    "conclusion",
    "label",
    "colour",
    "head_sha",
    "started_at",
    "completed_at",
    "duration_seconds",
    "queue_seconds",
    "execution_seconds",
    "tests_total",
    "tests_passed",
    "tests_failed",
    "tests_skipped",
    "run_url",
    "log_url",
    "artifact_url",
    "failed_tests",
    "failed_tests_hidden",
    "swept",
)
POINT_FIELDS = (
    "time",
    "total",
    "successes",
    "failures",
    "pass_rate",
    "pass_rate_colour",
    "avg_queue_seconds",
    "avg_execution_seconds",
)


def plain(value: Any) -> Any:
    """Convert datetimes to ISO 8601 strings, recursively through dicts, lists and tuples."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _window(data: dict) -> dict:
    return {"days": data["filters"].days, "event_type": data["filters"].event_type}


def cell_json(cell: dict) -> dict:
    shaped = {name: plain(cell.get(name)) for name in CELL_FIELDS}
    shaped["older_attempts"] = [cell_json(older) for older in cell.get("older_attempts", [])]
    return shaped


def summary_json(data: dict) -> dict:
    return plain(
        {
            **_window(data),
            "generated_at": data["generated_at"],
            "totals": data["totals"],
            "levels": data["levels"],
            "l1": data["l1"],
        }
    )


def backend_json(data: dict) -> dict:
    rows = [
        {
            "key": row["key"],
            "pr_number": row["pr_number"],
            "upstream_repo": row["upstream_repo"],
            "head_sha": row["head_sha"],
            "time": plain(row["time"]),
            "commit_url": row["commit_url"],
            "pr_url": row["pr_url"],
            "cells": [cell_json(cell) if cell else None for cell in row["cells"]],
        }
        for row in data["rows"]
    ]
    fields = (
        "repository",
        "known",
        "allowlisted",
        "level",
        "device",
        "oncalls",
        "page",
        "pages",
        "per_page",
        "pass_rate",
        "pass_rate_colour",
        "last_callback",
        "environment",
        "cards",
        "running",
        "columns",
    )
    return {**_window(data), **{name: plain(data[name]) for name in fields}, "rows": rows}


def pr_json(data: dict) -> dict:
    fields = (
        "number",
        "upstream_repo",
        "pr_url",
        "head_sha",
        "commit_url",
        "summary",
        "passed",
        "failed",
        "running",
        "other",
        "total",
        "backends",
    )
    return {**{name: data[name] for name in fields}, "jobs": [cell_json(job) for job in data["jobs"]]}


def metrics_json(data: dict) -> dict:
    service = data["service"]
    return plain(
        {
            **_window(data),
            "generated_at": data["generated_at"],
            "bucket": data["bucket"],
            "overall": {
                "totals": data["overall_totals"],
                "points": [
                    {name: point[name] for name in POINT_FIELDS} | {"records": point["records"]}
                    for point in data["overall"]
                ],
            },
            "backends": [
                {
                    "repository": backend["repository"],
                    "totals": backend["totals"],
                    "points": [{name: point[name] for name in POINT_FIELDS} for point in backend["points"]],
                }
                for backend in data["backends"]
            ],
            "service": {
                "callbacks_handled": service["callbacks_handled"],
                "callbacks_rejected": service["callbacks_rejected"],
                "error_rate": service["error_rate"],
                "outcomes": service["outcomes"],
                "callbacks": [
                    {name: point[name] for name in ("time", "handled", "rejected", "error_rate")}
                    for point in service["callbacks"]
                ],
                "records": service["records"],
                "ingestion_latency": service["ingestion_latency"],
                "replication_lag_seconds": service["replication_lag_seconds"],
                "replication_last_success": service["replication_last_success"],
                "dead_letters": service["dead_letters"],
            },
        }
    )
