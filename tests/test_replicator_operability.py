"""What an operator sees of replication: /metrics, /readyz and the admin pages."""

import pytest
from django.utils import timezone

from replicator.models import DeadLetter, ReplicatorStatus, StreamGap
from replicator.stream import replicate_once
from tests.conftest import callback_body, post_callback, replicate

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")


def metric(text: str, name: str) -> float:
    """Return the value of an unlabelled metric in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not found in /metrics")


@pytest.fixture
def replicated(client, stores, demo_allowlist):
    post_callback(client, callback_body("in_progress"))
    post_callback(client, callback_body("completed"))
    replicate()


@pytest.mark.usefixtures("replicated")
def test_metrics_report_replication(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert metric(text, "oot_replication_records_last_run") == 2
    assert metric(text, "oot_replication_rows_last_run") == 1
    assert metric(text, "oot_replication_records_total") == 2
    assert metric(text, "oot_replication_rows_total") == 1
    assert 0 <= metric(text, "oot_replication_lag_seconds") < 600
    assert 0 <= metric(text, "oot_replication_last_success_age_seconds") < 600
    assert metric(text, "oot_replication_last_success_timestamp_seconds") > 1.7e9
    assert metric(text, "oot_replication_caught_up") == 1
    assert metric(text, "oot_replication_consecutive_failures") == 0
    assert metric(text, "oot_dead_letters") == 0
    assert metric(text, "oot_replication_open_gaps") == 0
    assert "# TYPE oot_replication_records_total counter" in text


def test_metrics_before_first_run(client):
    text = client.get("/metrics").content.decode()

    assert metric(text, "oot_replication_last_success_age_seconds") == -1
    assert metric(text, "oot_replication_last_success_timestamp_seconds") == 0
    assert metric(text, "oot_replication_caught_up") == 0


def test_metrics_count_failures_and_dead_letters(client, settings):
    replicate()
    DeadLetter.objects.create(reason="pr_number is not an integer", image="{}")
    settings.DYNAMODB_ENDPOINT = "http://127.0.0.1:1"
    assert replicate_once(deadline_seconds=5) is None
    assert replicate_once(deadline_seconds=5) is None

    text = client.get("/metrics").content.decode()

    assert metric(text, "oot_replication_consecutive_failures") == 2
    assert metric(text, "oot_replication_failed_runs_total") == 2
    assert metric(text, "oot_dead_letters") == 1


@pytest.mark.usefixtures("replicated")
def test_readyz_reports_replication(client):
    replication = client.get("/readyz").json()["replication"]

    assert replication["last_success_at"] is not None
    assert replication["behind"] is False
    assert replication["last_run_records"] == 2
    assert replication["caught_up"] is True
    assert replication["dead_letters"] == 0


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "operator@example.org", "operator-pw")
    client.force_login(user)
    return client


@pytest.mark.usefixtures("replicated")
def test_admin_shows_replication_status(staff_client):
    page = staff_client.get("/admin/replicator/replicatorstatus/")

    assert page.status_code == 200
    text = page.content.decode()
    assert ReplicatorStatus.objects.get().stream_arn in text
    assert "Last lag seconds" in text
    assert "Consecutive failures" in text


def test_admin_shows_dead_letter_reason(staff_client):
    letter = DeadLetter.objects.create(
        dynamo_key="acme-ai/torch-npu/d/npu-ci/job/1",
        event_name="MODIFY",
        sequence_number="000000000000000000042",
        reason="completed_at is not an ISO 8601 time: 'yesterday'",
        image='{"dynamoKey": {"S": "acme-ai/torch-npu/d/npu-ci/job/1"}}',
    )

    listing = staff_client.get("/admin/replicator/deadletter/")
    detail = staff_client.get(f"/admin/replicator/deadletter/{letter.pk}/change/")

    assert listing.status_code == 200
    assert "completed_at is not an ISO 8601 time" in listing.content.decode()
    assert "acme-ai/torch-npu/d/npu-ci/job/1" in listing.content.decode()
    assert detail.status_code == 200
    assert "000000000000000000042" in detail.content.decode()


def test_admin_lists_stream_gaps(staff_client):
    StreamGap.objects.create(stream_arn="arn:stream", shard_id="shardId-gap", until=timezone.now())

    page = staff_client.get("/admin/replicator/streamgap/")

    assert page.status_code == 200
    assert "shardId-gap" in page.content.decode()


def test_admin_hides_replication_from_visitors(client):
    page = client.get("/admin/replicator/deadletter/")

    assert page.status_code == 302
    assert "/admin/login/" in page["Location"]
