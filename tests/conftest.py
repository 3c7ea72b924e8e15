"""Shared fixtures: clean stores per test, the demo allowlist, and callback builders.

The components themselves (DynamoDB Local, Redis, chdb) are started once per
session by the tests.services plugin.
"""

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from django.conf import settings

from oot_ingest import counters, dynamo, policy
from oot_ingest.allowlist import import_allowlist
from oot_ingest.counters import redis_client
from oot_ingest.models import AllowlistEntry
from replicator import clickhouse, rollup

ROOT = Path(__file__).resolve().parent.parent
DEMO_ALLOWLIST = ROOT / "demo" / "allowlist.yml"
DEMO_CORPUS = ROOT / "demo" / "relay-traffic.jsonl.gz"
RESULTS_URL = "/api/oot/results"
TOKEN = "test-relay-token"


def reset_dynamodb() -> None:
    """Drop and re-create the records table, so each test gets an empty table and a new stream."""
    client = dynamo.client()
    try:
        client.delete_table(TableName=settings.DYNAMODB_TABLE)
        client.get_waiter("table_not_exists").wait(
            TableName=settings.DYNAMODB_TABLE, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    dynamo.ensure_table()


def reset_clickhouse() -> None:
    clickhouse.ensure_schema()
    clickhouse.client().command(f"TRUNCATE TABLE {settings.CLICKHOUSE_DATABASE}.{clickhouse.TABLE}")
    rollup.truncate()


@pytest.fixture
def stores(db):
    """Empty DynamoDB table, ClickHouse table and Redis for one test."""
    reset_dynamodb()
    reset_clickhouse()
    # Counts a previous test recorded but has not written yet must not land here.
    counters.flush()
    redis_client().flushdb()
    policy.clear_policy_cache()
    yield
    policy.clear_policy_cache()


@pytest.fixture
def demo_allowlist(db):
    """The demo allowlist: L2, L3 and L4 backends that report, and two L1 repositories."""
    import_allowlist(DEMO_ALLOWLIST.read_text(encoding="utf-8"))
    policy.clear_policy_cache()


def callback_body(
    status: str = "in_progress",
    *,
    repo: str = "acme-ai/torch-npu",
    level: str = "L2",
    delivery_id: str = "11111111-2222-3333-4444-555555555555",
    job_name: str = "test-float32",
    check_run_id: str | int = "98765432100",
    run_attempt: str | int = 1,
    pr_number: int = 4242,
    head_sha: str = "a" * 40,
    queue_time: float | None = 12.5,
    conclusion: str | None = None,
    **workflow_overrides,
) -> dict:
    """Build a well-formed relay request body for one job callback."""
    workflow = {
        "schema_version": "1",
        "status": status,
        "conclusion": conclusion if status == "completed" else None,
        "name": "npu-ci",
        "url": "https://github.com/acme-ai/torch-npu/actions/runs/24033272679",
        "job_name": job_name,
        "check_run_id": check_run_id,
        "run_id": "24033272679",
        "run_attempt": run_attempt,
    }
    if status == "in_progress":
        workflow["started_at"] = "2026-12-04T10:15:30Z"
    else:
        workflow.update(
            conclusion=conclusion or "success",
            completed_at="2026-12-04T10:45:12Z",
            test_results={"total": 100, "passed": 98, "failed": 2, "skipped": 0},
            failed_tests_detail=[
                {
                    "name": "test_conv2d",
                    "classname": "TestConv",
                    "message": "not close",
                    "stacktrace": "Traceback ...",
                    "duration": 1.25,
                }
            ],
            artifact_url="https://artifacts.example.org/runs/24033272679/",
            environment={"device": "Ascend910B", "driver": "24.1"},
        )
    workflow.update(workflow_overrides)
    return {
        "trusted": {
            "verified_repo": repo,
            "downstream_repo_level": level,
            "ci_metrics": {"queue_time": queue_time, "execution_time": None},
        },
        "untrusted": {
            "callback_payload": {
                "event_type": "pull_request",
                "delivery_id": delivery_id,
                "payload": {
                    "pull_request": {"number": pr_number, "head": {"sha": head_sha}},
                    "repository": {"full_name": "pytorch/pytorch"},
                },
                "workflow": workflow,
            }
        },
    }


def post_callback(client, body, token: str = TOKEN, **extra):
    """POST a body (a dict, or bytes/str sent as they are) to the callback API with the relay token."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"X-OOT-Relay-Token": token} if token is not None else {}
    return client.post(
        RESULTS_URL, data=data, content_type=extra.pop("content_type", "application/json"), headers=headers, **extra
    )


def stored_item(key: str) -> dict | None:
    """Read a record straight from DynamoDB (plain Python values)."""
    return dynamo.table().get_item(Key={"dynamoKey": key}, ConsistentRead=True).get("Item")


def replicate() -> None:
    """Run one replication pass and fail the test if it did not complete."""
    from replicator.stream import replicate_once

    stats = replicate_once(deadline_seconds=20)
    assert stats is not None, "replication run failed; see the log"


def clickhouse_rows(where: str = "1", parameters: dict | None = None) -> list[dict]:
    result = clickhouse.client().query(
        f"SELECT * FROM {clickhouse.TABLE} FINAL WHERE {where} ORDER BY dynamoKey", parameters=parameters or {}
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


@pytest.fixture
def body_factory():
    return lambda *args, **kwargs: copy.deepcopy(callback_body(*args, **kwargs))


@dataclass
class PolicyWorld:
    """Allowlist entries at every level, a repository that is not listed, and the people who use admin."""

    l1: AllowlistEntry
    l2: AllowlistEntry
    l3: AllowlistEntry
    l4: AllowlistEntry
    disabled: AllowlistEntry
    unknown: str
    staff: object
    member: object


@pytest.fixture
def policy_world(db, django_user_model):
    """Backends at L2, L3 and L4, an L1 and a disabled repository, an unknown one, a superuser and a non-staff user.

    Anonymous visitors use the plain `client` fixture.
    """
    world = PolicyWorld(
        l1=AllowlistEntry.objects.create(repository="example-labs/torch-riscv", level="L1"),
        l2=AllowlistEntry.objects.create(
            repository="acme-ai/torch-npu", level="L2", oncalls="npu-oncall-a, npu-oncall-b"
        ),
        l3=AllowlistEntry.objects.create(
            repository="contoso/xpu-backend", level="L3", device="xpu", oncalls="xpu-oncall"
        ),
        l4=AllowlistEntry.objects.create(repository="initech/rocm-ci", level="L4", oncalls="rocm-oncall"),
        disabled=AllowlistEntry.objects.create(repository="fabrikam/tpu-bridge", level="L2", enabled=False),
        unknown="nobody/unlisted-backend",
        # No passwords: hashing one costs about a second, and tests sign in with force_login.
        staff=django_user_model.objects.create_superuser("maintainer", "maintainer@example.org", None),
        member=django_user_model.objects.create_user("visitor", "visitor@example.org", None),
    )
    policy.clear_policy_cache()
    yield world
    policy.clear_policy_cache()
