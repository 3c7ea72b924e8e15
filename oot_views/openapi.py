"""The OpenAPI 3.1 document of the pages' JSON endpoints, served at /api/oot/openapi.json.

It is written by hand to match oot_views/api.py, and tests/test_pages_api.py
checks every endpoint's responses against it.
"""


def _nullable(kind: str | list, **extra) -> dict:
    kinds = kind if isinstance(kind, list) else [kind]
    return {"type": [*kinds, "null"], **extra}


def _object(properties: dict, required: list[str] | None = None, **extra) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


STRING = {"type": "string"}
INTEGER = {"type": "integer", "minimum": 0}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
URL = _nullable("string", format="uri", description="An http(s) URL, or null when the stored value was not one")
COLOUR = {"type": "string", "enum": ["green", "yellow", "red", "blue", "grey"]}
PERCENT = _nullable("number", minimum=0, maximum=100)
SECONDS = _nullable("number", minimum=0)

DAYS_PARAMETER = {
    "name": "days",
    "in": "query",
    "description": "Time window in days, applied to completed_at (24h, 7d or 30d)",
    "schema": {"type": "integer", "enum": [1, 7, 30], "default": 7},
}
EVENT_PARAMETER = {
    "name": "event",
    "in": "query",
    "description": "Event type of the upstream trigger",
    "schema": {"type": "string", "enum": ["pull_request", "push", "nightly", "periodic"], "default": "pull_request"},
}
PAGE_PARAMETER = {
    "name": "page",
    "in": "query",
    "description": "Page of the PR x job matrix, 50 rows a page",
    "schema": {"type": "integer", "minimum": 1, "default": 1},
}

SCHEMAS = {
    "Error": _object({"ok": {"type": "boolean", "const": False}, "error": STRING}),
    "SummaryBackend": _object(
        {
            "repository": STRING,
            "path": _nullable("string"),
            "level": {"type": "string", "enum": ["L2", "L3", "L4"]},
            "device": STRING,
            "oncalls": {"type": "array", "items": STRING},
            "has_data": BOOLEAN,
            "successes": INTEGER,
            "failures": INTEGER,
            "other": {**INTEGER, "description": "Results that do not count toward the pass rate (cancelled, ...)"},
            "total": INTEGER,
            "pass_rate": {**PERCENT, "description": "successes / (successes + failures), in percent"},
            "pass_rate_colour": COLOUR,
            "avg_duration_seconds": SECONDS,
            "last_run": _nullable("string", format="date-time"),
            "last_callback": _nullable("string", format="date-time"),
            "not_reporting": BOOLEAN,
            "not_reporting_hours": INTEGER,
        }
    ),
    "Summary": _object(
        {
            "ok": {"type": "boolean", "const": True},
            "days": INTEGER,
            "event_type": STRING,
            "generated_at": TIME,
            "totals": _object(
                {
                    "backends": INTEGER,
                    "with_data": INTEGER,
                    "not_reporting": INTEGER,
                    "successes": INTEGER,
                    "failures": INTEGER,
                    "total": INTEGER,
                    "pass_rate": PERCENT,
                    "pass_rate_colour": COLOUR,
                }
            ),
            "levels": {
                "type": "array",
                "items": _object({"level": STRING, "backends": {"type": "array", "items": _ref("SummaryBackend")}}),
            },
            "l1": {
                "type": "array",
                "items": _object({"repository": STRING, "oncalls": {"type": "array", "items": STRING}}),
            },
        }
    ),
    "FailedTest": _object({"name": STRING, "classname": STRING, "message": STRING}),
    "Cell": _object(
        {
            "dynamo_key": STRING,
            "backend": STRING,
            "workflow": STRING,
            "job": STRING,
            "attempt": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": ["in_progress", "completed"]},
            "running": BOOLEAN,
            "conclusion": {**STRING, "description": "Empty while running or when the sender gave none"},
            "label": STRING,
            "colour": COLOUR,
            "head_sha": STRING,
            "started_at": _nullable("string", format="date-time"),
            "completed_at": _nullable("string", format="date-time"),
            "duration_seconds": {**SECONDS, "description": "null when started_at or completed_at is unknown"},
            "queue_seconds": SECONDS,
            "execution_seconds": SECONDS,
            "tests_total": INTEGER,
            "tests_passed": INTEGER,
            "tests_failed": INTEGER,
            "tests_skipped": INTEGER,
            "run_url": URL,
            "log_url": {**URL, "description": "<run_url>/job/<check_run_id>, only for GitHub Actions runs"},
            "artifact_url": URL,
            "failed_tests": {"type": "array", "items": _ref("FailedTest")},
            "failed_tests_hidden": {**INTEGER, "description": "Failed tests beyond those listed"},
            "swept": {**BOOLEAN, "description": "Marked timed out by the service: no completion arrived"},
            "older_attempts": {"type": "array", "items": _ref("Cell")},
        }
    ),
    "Backend": _object(
        {
            "ok": {"type": "boolean", "const": True},
            "days": INTEGER,
            "event_type": STRING,
            "repository": STRING,
            "known": {**BOOLEAN, "description": "false: not on the allowlist and no results (an empty page)"},
            "allowlisted": BOOLEAN,
            "level": _nullable("string"),
            "device": STRING,
            "oncalls": {"type": "array", "items": STRING},
            "page": {"type": "integer", "minimum": 1},
            "pages": {"type": "integer", "minimum": 1},
            "per_page": INTEGER,
            "pass_rate": PERCENT,
            "pass_rate_colour": COLOUR,
            "last_callback": _nullable("string", format="date-time"),
            "environment": {"type": "array", "items": _object({"key": STRING, "value": STRING})},
            "cards": _object(
                {
                    "total_prs": INTEGER,
                    "total_jobs": INTEGER,
                    "successes": INTEGER,
                    "failures": {**INTEGER, "description": "failure, timed_out and startup_failure"},
                    "timed_out": INTEGER,
                    "avg_queue_seconds": SECONDS,
                    "avg_execution_seconds": SECONDS,
                    "timeout_rate": PERCENT,
                }
            ),
            "running": INTEGER,
            "columns": {"type": "array", "items": _object({"workflow": STRING, "job": STRING})},
            "rows": {
                "type": "array",
                "items": _object(
                    {
                        "key": STRING,
                        "pr_number": INTEGER,
                        "upstream_repo": STRING,
                        "head_sha": STRING,
                        "time": _nullable("string", format="date-time"),
                        "commit_url": URL,
                        "pr_url": URL,
                        "cells": {
                            "type": "array",
                            "description": "One entry per column; null where the row has no such job",
                            "items": {"oneOf": [_ref("Cell"), {"type": "null"}]},
                        },
                    }
                ),
            },
        }
    ),
    "PullRequest": _object(
        {
            "ok": {"type": "boolean", "const": True},
            "number": INTEGER,
            "upstream_repo": STRING,
            "pr_url": URL,
            "head_sha": {**STRING, "description": "The PR's newest head SHA with results; empty without results"},
            "commit_url": URL,
            "summary": {**STRING, "description": "N/M passed, K running"},
            "passed": INTEGER,
            "failed": INTEGER,
            "running": INTEGER,
            "other": INTEGER,
            "total": INTEGER,
            "backends": INTEGER,
            "jobs": {"type": "array", "items": _ref("Cell")},
        }
    ),
    "Point": _object(
        {
            "time": TIME,
            "total": INTEGER,
            "successes": INTEGER,
            "failures": INTEGER,
            "pass_rate": PERCENT,
            "pass_rate_colour": COLOUR,
            "avg_queue_seconds": SECONDS,
            "avg_execution_seconds": SECONDS,
        }
    ),
    "Totals": _object(
        {
            "total": INTEGER,
            "successes": INTEGER,
            "failures": INTEGER,
            "pass_rate": PERCENT,
            "pass_rate_colour": COLOUR,
            "avg_queue_seconds": SECONDS,
            "avg_execution_seconds": SECONDS,
        }
    ),
    "Metrics": _object(
        {
            "ok": {"type": "boolean", "const": True},
            "days": INTEGER,
            "event_type": STRING,
            "generated_at": TIME,
            "bucket": {"type": "string", "enum": ["hour", "day"]},
            "overall": _object({"totals": _ref("Totals"), "points": {"type": "array", "items": _ref("Point")}}),
            "backends": {
                "type": "array",
                "items": _object(
                    {
                        "repository": STRING,
                        "totals": _ref("Totals"),
                        "points": {"type": "array", "items": _ref("Point")},
                    }
                ),
            },
            "service": _object(
                {
                    "callbacks_handled": INTEGER,
                    "callbacks_rejected": INTEGER,
                    "error_rate": PERCENT,
                    "outcomes": {"type": "object", "additionalProperties": INTEGER},
                    "callbacks": {
                        "type": "array",
                        "items": _object(
                            {"time": TIME, "handled": INTEGER, "rejected": INTEGER, "error_rate": PERCENT}
                        ),
                    },
                    "records": INTEGER,
                    "ingestion_latency": _object(
                        {
                            "p50_at_most_seconds": SECONDS,
                            "p95_at_most_seconds": SECONDS,
                            "max_seconds": SECONDS,
                            "bounds": {"type": "array", "items": {"type": "number"}},
                            "at_most": {"type": "array", "items": INTEGER},
                        }
                    ),
                    "replication_lag_seconds": SECONDS,
                    "replication_last_success": _nullable("string", format="date-time"),
                    "dead_letters": INTEGER,
                }
            ),
        }
    ),
}


def _responses(schema: str) -> dict:
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    return {
        "200": {"description": "The page's data", "content": {"application/json": {"schema": _ref(schema)}}},
        "400": {"description": "A query parameter is invalid; the error names it", **error},
        "503": {"description": "ClickHouse or DynamoDB failed or timed out; try again shortly", **error},
    }


def document() -> dict:
    """Return the OpenAPI document."""
    repo_parameters = [
        {"name": "org", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "repo", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OOT HUD pages",
            "version": "1",
            "description": "The data behind /oot, /oot/<org>/<repo>, /pr/<number> and /oot/metrics. "
            "Pass rates are successes / (successes + failures), where failures are failure, timed_out "
            "and startup_failure, over the latest attempt per (head SHA, workflow, job).",
        },
        "paths": {
            "/api/oot/summary": {
                "get": {
                    "summary": "Every allowlisted backend by level, worst pass rate first",
                    "parameters": [DAYS_PARAMETER, EVENT_PARAMETER],
                    "responses": _responses("Summary"),
                }
            },
            "/api/oot/backends/{org}/{repo}": {
                "get": {
                    "summary": "One backend's cards and PR x job matrix",
                    "parameters": [*repo_parameters, DAYS_PARAMETER, EVENT_PARAMETER, PAGE_PARAMETER],
                    "responses": _responses("Backend"),
                }
            },
            "/api/oot/pr/{number}": {
                "get": {
                    "summary": "Every backend's jobs for one upstream PR: newest head SHA, latest attempts",
                    "parameters": [{"name": "number", "in": "path", "required": True, "schema": INTEGER}],
                    "responses": _responses("PullRequest"),
                }
            },
            "/api/oot/metrics": {
                "get": {
                    "summary": "Results over time per backend and the service's health",
                    "parameters": [DAYS_PARAMETER, EVENT_PARAMETER],
                    "responses": _responses("Metrics"),
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
