"""The JSON endpoints return the shapes their OpenAPI document describes, and the same numbers as the pages."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from oot_views.openapi import document
from tests.conftest import callback_body, post_callback, replicate
from tests.test_pages import REPO, insert, page, put_running, record

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

ENDPOINTS = {
    "/api/oot/summary?days=7": "Summary",
    f"/api/oot/backends/{REPO}?days=7": "Backend",
    "/api/oot/backends/nobody/unknown": "Backend",
    "/api/oot/pr/4242": "PullRequest",
    "/api/oot/pr/1": "PullRequest",
    "/api/oot/metrics?days=7": "Metrics",
    "/api/oot/metrics?days=1": "Metrics",
}
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def check(value, schema: dict, schemas: dict, path: str = "$") -> list[str]:
    """Return the ways `value` breaks `schema` (the JSON Schema subset the document uses)."""
    if "$ref" in schema:
        return check(value, schemas[schema["$ref"].rsplit("/", 1)[1]], schemas, path)
    if "oneOf" in schema:
        matches = [option for option in schema["oneOf"] if not check(value, option, schemas, path)]
        return [] if len(matches) == 1 else [f"{path}: matches {len(matches)} of the oneOf options"]

    problems = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        is_bool = isinstance(value, bool)
        if not any(isinstance(value, TYPES[kind]) and (kind == "boolean" or not is_bool) for kind in kinds):
            return [f"{path}: {value!r} is not of type {kinds}"]

    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: {value!r} is not {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {value} is above {schema['maximum']}")
    if isinstance(value, str) and schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{path}: {value!r} is not a date-time")
    if isinstance(value, str) and schema.get("format") == "uri" and not value.startswith(("http://", "https://")):
        problems.append(f"{path}: {value!r} is not an http(s) URL")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}: required key {name!r} is missing")
        for name, item in value.items():
            if name in schema.get("properties", {}):
                problems.extend(check(item, schema["properties"][name], schemas, f"{path}.{name}"))
            elif isinstance(schema.get("additionalProperties"), dict):
                problems.extend(check(item, schema["additionalProperties"], schemas, f"{path}.{name}"))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems.extend(check(item, schema["items"], schemas, f"{path}[{index}]"))
    return problems


@pytest.fixture
def some_results(client, stores, demo_allowlist):
    """Completed, running and re-run jobs through the real path, plus a row straight in ClickHouse."""
    post_callback(client, callback_body("in_progress", job_name="build", check_run_id="1"))
    post_callback(client, callback_body("completed", job_name="build", check_run_id="1", conclusion="failure"))
    post_callback(client, callback_body("completed", job_name="test", check_run_id="2", run_attempt=2))
    post_callback(client, callback_body("in_progress", job_name="docs", check_run_id="3"))
    replicate()
    insert(record("nightly", event="nightly", pr=0, completed_ago=timedelta(hours=2), total_tests=Decimal(5)))


@pytest.mark.usefixtures("some_results")
@pytest.mark.parametrize(("url", "schema_name"), ENDPOINTS.items())
def test_response_matches_schema(client, url, schema_name):
    schemas = document()["components"]["schemas"]
    response = client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert check(response.json(), schemas[schema_name], schemas) == []


def test_schema_check_can_fail():
    schemas = document()["components"]["schemas"]

    problems = check({"ok": True, "days": "7"}, schemas["Summary"], schemas)

    assert "$.days: '7' is not of type ['integer']" in problems
    assert "$: required key 'levels' is missing" in problems


@pytest.mark.parametrize(
    ("url", "schema_name"), [("/api/oot/summary?days=2", "Error"), ("/api/oot/backends/a/b?page=0", "Error")]
)
def test_errors_match_schema(client, url, schema_name):
    schemas = document()["components"]["schemas"]
    response = client.get(url)

    assert response.status_code == 400
    assert check(response.json(), schemas[schema_name], schemas) == []


def test_openapi_document_is_served(client):
    response = client.get("/api/oot/openapi.json")
    body = response.json()

    assert response.status_code == 200
    assert body["openapi"].startswith("3.1")
    assert sorted(body["paths"]) == [
        "/api/oot/backends/{org}/{repo}",
        "/api/oot/metrics",
        "/api/oot/pr/{number}",
        "/api/oot/summary",
    ]
    for path in body["paths"].values():
        assert set(path["get"]["responses"]) == {"200", "400", "503"}


def test_every_schema_reference_resolves():
    body = document()
    names = set(body["components"]["schemas"])
    text = str(body)

    references = {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}
    assert references <= names


@pytest.mark.usefixtures("some_results")
def test_json_and_html_show_the_same_numbers(client):
    summary = client.get("/api/oot/summary?days=7").json()
    acme = next(item for level in summary["levels"] for item in level["backends"] if item["repository"] == REPO)
    backend = client.get(f"/api/oot/backends/{REPO}?days=7").json()
    pr = client.get("/api/oot/pr/4242").json()

    assert (acme["successes"], acme["failures"], acme["total"]) == (1, 1, 2)
    assert backend["cards"]["total_jobs"] == 2
    assert backend["cards"]["failures"] == 1
    assert backend["pass_rate"] == acme["pass_rate"] == 50.0
    assert pr["summary"] == "1/3 passed, 1 running"
    assert "50.0%" in page(client, "/oot?days=7")
    assert "1/3 passed, 1 running" in page(client, "/pr/4242")


def test_running_only_pr(client):
    put_running("build")

    body = client.get("/api/oot/pr/4242").json()

    assert body["summary"] == "0/1 passed, 1 running"
    assert body["jobs"][0]["duration_seconds"] > 0
