"""DynamoDB throttling, server errors and outages give 503 with Retry-After and leave the item as it was.

Throttling and server errors are faults DynamoDB Local cannot produce, so they
are injected with botocore's Stubber on the service's own client. An outage
is a real refused connection.
"""

import pytest
from botocore.stub import Stubber

from oot_ingest import dynamo
from tests.conftest import callback_body, post_callback, stored_item
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"

FAULTS = [
    ("ProvisionedThroughputExceededException", 400),
    ("ThrottlingException", 400),
    ("RequestLimitExceeded", 400),
    ("InternalServerError", 500),
    ("ServiceUnavailable", 503),
]


def assert_retry_later(response) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["ok"] is False
    assert "DynamoDB is unavailable" in response.json()["error"]
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize(("code", "http_status"), FAULTS)
def test_fault_on_new_record(client, code, http_status):
    with Stubber(dynamo.client()) as stub:
        stub.add_client_error("update_item", service_error_code=code, http_status_code=http_status)
        response = post_callback(client, callback_body("in_progress"))
        stub.assert_no_pending_responses()
    assert_retry_later(response)
    assert code in response.json()["error"]
    assert stored_item(KEY) is None


@pytest.mark.parametrize(("code", "http_status"), FAULTS)
def test_fault_leaves_stored_item_unchanged(client, code, http_status):
    assert post_callback(client, callback_body("in_progress")).status_code == 200
    before = stored_item(KEY)

    with Stubber(dynamo.client()) as stub:
        stub.add_client_error("update_item", service_error_code=code, http_status_code=http_status)
        response = post_callback(client, callback_body("completed"))

    assert_retry_later(response)
    assert stored_item(KEY) == before
    assert post_callback(client, callback_body("completed")).json()["status"] == "completed", "a retry succeeds"


def test_fault_during_late_fill(client, settings):
    """The late in_progress's second write fails: the completed item keeps every field it had."""
    assert post_callback(client, callback_body("completed")).status_code == 200
    before = stored_item(KEY)
    stored = dynamo.client().get_item(TableName=settings.DYNAMODB_TABLE, Key={"dynamoKey": {"S": KEY}})["Item"]

    with Stubber(dynamo.client()) as stub:
        stub.add_client_error(
            "update_item",
            service_error_code="ConditionalCheckFailedException",
            http_status_code=400,
            modeled_fields={"Item": stored},
        )
        stub.add_client_error("update_item", service_error_code="ThrottlingException", http_status_code=400)
        response = post_callback(client, callback_body("in_progress"))
        stub.assert_no_pending_responses()

    assert_retry_later(response)
    assert stored_item(KEY) == before
    assert "started_at" not in before


def test_unreachable_endpoint(client, settings):
    assert post_callback(client, callback_body("in_progress")).status_code == 200
    before = stored_item(KEY)
    original = settings.DYNAMODB_ENDPOINT

    settings.DYNAMODB_ENDPOINT = f"http://127.0.0.1:{free_port()}"
    response = post_callback(client, callback_body("completed"))
    settings.DYNAMODB_ENDPOINT = original

    assert_retry_later(response)
    assert "EndpointConnectionError" in response.json()["error"]
    assert stored_item(KEY) == before


def test_unexpected_client_error_is_503_not_500(client):
    with Stubber(dynamo.client()) as stub:
        stub.add_client_error("update_item", service_error_code="AccessDeniedException", http_status_code=400)
        response = post_callback(client, callback_body("in_progress"))
    assert_retry_later(response)


def test_record_refused_by_dynamodb_is_400(client):
    with Stubber(dynamo.client()) as stub:
        stub.add_client_error(
            "update_item",
            service_error_code="ValidationException",
            service_message="Item size has exceeded the maximum allowed size",
            http_status_code=400,
        )
        response = post_callback(client, callback_body("in_progress"))
    assert response.status_code == 400
    assert "DynamoDB rejected the record: Item size has exceeded" in response.json()["error"]
