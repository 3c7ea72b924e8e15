"""Every row of the callback API's response table, the order between them, logs, counters and cost."""

import io
import json
import logging
import threading
import time

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import connection
from django.middleware.csrf import CsrfViewMiddleware
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from redis.connection import AbstractConnection

from hud.cache import PendingCount
from oot_ingest import counters, dynamo, views
from oot_ingest.models import RateLimit, RejectedRequest, RelayToken
from oot_ingest.payload import build_record, decode_body
from tests.conftest import RESULTS_URL, TOKEN, callback_body, post_callback, stored_item
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"
LIMIT = 2 * 1024 * 1024
WORKFLOW = "untrusted.callback_payload.workflow"


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["ok"] is False
    return body["error"]


def padded_body(size: int) -> bytes:
    """A valid in_progress body of exactly `size` bytes, padded inside the unstored webhook body."""
    body = callback_body("in_progress")
    body["untrusted"]["callback_payload"]["payload"]["padding"] = ""
    bare = len(json.dumps(body).encode())
    body["untrusted"]["callback_payload"]["payload"]["padding"] = "p" * (size - bare)
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


@pytest.fixture
def no_token_configured(stores, settings):
    settings.OOT_RELAY_TOKEN = ""
    RelayToken.objects.all().delete()


@pytest.fixture
def closed_dynamodb(stores, settings):
    """Point the service at a DynamoDB endpoint where nothing listens; the settings fixture restores it."""
    settings.DYNAMODB_ENDPOINT = f"http://127.0.0.1:{free_port()}"


# 200


def test_stored(client):
    response = post_callback(client, callback_body("in_progress"))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "status": "in_progress", "dynamoKey": KEY}
    assert stored_item(KEY)["status"] == "in_progress"


def test_duplicate_same_body(client):
    first = post_callback(client, callback_body("completed"))
    second = post_callback(client, callback_body("completed"))
    assert second.status_code == 200
    assert second.json() == first.json() == {"ok": True, "status": "completed", "dynamoKey": KEY}


def test_late_in_progress_reports_stored_status(client):
    post_callback(client, callback_body("completed"))
    response = post_callback(client, callback_body("in_progress"))
    assert response.json() == {"ok": True, "status": "completed", "dynamoKey": KEY}


# 405


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_method_not_allowed(client, method):
    response = getattr(client, method)(RESULTS_URL, headers={"X-OOT-Relay-Token": TOKEN})
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    if method != "head":
        assert "use POST" in response.json()["error"]


# 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-OOT-Relay-Token": ""},
        {"X-OOT-Relay-Token": "wrong-token"},
        {"X-OOT-Relay-Token": TOKEN + "x"},
        {"X-OOT-Relay-Token": TOKEN[:-1]},
        {"X-OOT-Relay-Token": "tökén"},
        # A WSGI server hands over header bytes decoded as Latin-1.
        {"X-OOT-Relay-Token": "tökén".encode().decode("latin-1")},
        {"X-OOT-Relay-Token": TOKEN + "é"},
        {"Authorization": f"Bearer {TOKEN}"},
        {"X-Hud-Internal-Bot": "wrong-token"},
    ],
)
def test_bad_token_is_401(client, headers):
    response = client.post(
        RESULTS_URL, data=json.dumps(callback_body()), content_type="application/json", headers=headers
    )
    assert "token" in error_of(response, 401)
    assert stored_item(KEY) is None


@pytest.mark.parametrize("header", ["X-OOT-Relay-Token", "x-hud-internal-bot"])
def test_both_token_headers_accepted(client, header):
    response = client.post(
        RESULTS_URL, data=json.dumps(callback_body()), content_type="application/json", headers={header: TOKEN}
    )
    assert response.status_code == 200


def test_admin_token_accepted_without_environment_token(client, settings):
    settings.OOT_RELAY_TOKEN = ""
    _token, plain = RelayToken.issue("relay-a")
    assert post_callback(client, callback_body(), token=plain).status_code == 200
    assert post_callback(client, callback_body(), token=TOKEN).status_code == 401


# 503: no token configured


@pytest.mark.usefixtures("no_token_configured")
@pytest.mark.parametrize("token", ["", TOKEN, "anything"])
def test_no_token_configured_is_503(client, token):
    response = post_callback(client, callback_body(), token=token)
    assert "no relay token is configured" in error_of(response, 503)
    assert response["Retry-After"]
    assert stored_item(KEY) is None


@pytest.mark.usefixtures("no_token_configured")
def test_revoked_admin_token_is_not_configured(client):
    token, plain = RelayToken.issue("relay-a")
    token.revoke()
    assert post_callback(client, callback_body(), token=plain).status_code == 503


# 413


def test_body_at_limit_accepted(client):
    response = post_callback(client, padded_body(LIMIT))
    assert response.status_code == 200, response.content


def test_body_over_limit_is_413(client):
    response = post_callback(client, padded_body(LIMIT + 1))
    assert "larger than the limit of 2097152 bytes" in error_of(response, 413)
    assert stored_item(KEY) is None


def test_declared_length_over_limit_is_413_unread(client):
    response = post_callback(client, b"{}", CONTENT_LENGTH=str(LIMIT + 1))
    assert "2097153 bytes" in error_of(response, 413)


def test_over_limit_non_json_is_413_not_400(client):
    assert post_callback(client, b"x" * (LIMIT + 1)).status_code == 413


@pytest.mark.parametrize("declared", ["abc", "-1", "1e3", "²"])
def test_invalid_content_length_is_400(client, declared):
    assert "Content-Length" in error_of(post_callback(client, b"{}", CONTENT_LENGTH=declared), 400)


def chunked_request(body: bytes):
    """A request as a WSGI server passes a chunked upload: no Content-Length, the stream decoded."""
    request = RequestFactory().post(
        RESULTS_URL, data=b"", content_type="application/json", headers={"X-OOT-Relay-Token": TOKEN}
    )
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.META["wsgi.input"] = io.BytesIO(body)
    return request


def test_chunked_body_read():
    response = views.results(chunked_request(json.dumps(callback_body()).encode()))
    assert response.status_code == 200, response.content
    assert stored_item(KEY)["status"] == "in_progress"


def test_chunked_body_at_limit_accepted():
    assert views.results(chunked_request(padded_body(LIMIT))).status_code == 200


def test_chunked_body_over_limit_is_413():
    stream = chunked_request(padded_body(LIMIT + 1000))
    response = views.results(stream)
    assert response.status_code == 413
    assert stream.META["wsgi.input"].tell() == LIMIT + 1, "reading stops one byte past the limit"


def test_no_length_and_not_chunked_is_empty(client):
    request = chunked_request(json.dumps(callback_body()).encode())
    del request.META["HTTP_TRANSFER_ENCODING"]
    response = views.results(request)
    assert "body is empty" in json.loads(response.content)["error"]


# 400


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("trusted", "verified_repo"), "trusted.verified_repo"),
        (("untrusted", "callback_payload", "delivery_id"), "untrusted.callback_payload.delivery_id"),
        (("untrusted", "callback_payload", "workflow", "status"), f"{WORKFLOW}.status"),
        (("untrusted", "callback_payload", "workflow", "name"), f"{WORKFLOW}.name"),
        (("untrusted", "callback_payload", "workflow", "job_name"), f"{WORKFLOW}.job_name"),
        (("untrusted", "callback_payload", "workflow", "check_run_id"), f"{WORKFLOW}.check_run_id"),
        (("trusted",), "trusted"),
        (("untrusted",), "untrusted"),
        (("untrusted", "callback_payload"), "untrusted.callback_payload"),
        (("untrusted", "callback_payload", "workflow"), f"{WORKFLOW}"),
    ],
)
@pytest.mark.parametrize("how", ["missing", "null", "empty"])
def test_missing_required_field_is_400(client, path, field, how):
    body = callback_body("completed")
    parent = body
    for name in path[:-1]:
        parent = parent[name]
    if how == "missing":
        del parent[path[-1]]
    else:
        parent[path[-1]] = None if how == "null" else ""
    message = error_of(post_callback(client, body), 400)
    assert message.startswith(f"{field}:")


@pytest.mark.parametrize("status", ["queued", "COMPLETED", "done", "", 1, None])
def test_unknown_status_is_400(client, status):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["status"] = status
    assert f"{WORKFLOW}.status" in error_of(post_callback(client, body), 400)


def test_bad_count_is_400(client):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["test_results"]["passed"] = -1
    assert f"{WORKFLOW}.test_results.passed" in error_of(post_callback(client, body), 400)


def test_non_http_url_is_400(client):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["artifact_url"] = "javascript:alert(1)"
    assert f"{WORKFLOW}.artifact_url" in error_of(post_callback(client, body), 400)


@pytest.mark.parametrize(("body", "fragment"), [(b"not json", "not valid JSON"), (b"[1]", "not an array")])
def test_not_json_or_not_object_is_400(client, body, fragment):
    assert fragment in error_of(post_callback(client, body), 400)


# 403


@pytest.mark.parametrize(
    ("repo", "fragment"),
    [
        ("nobody/unlisted-backend", "not on the allowlist"),
        ("example-labs/torch-riscv", "level L1"),
        ("EXAMPLE-LABS/Torch-RISCV", "level L1"),
    ],
)
def test_not_admitted_is_403(client, repo, fragment):
    response = post_callback(client, callback_body(repo=repo))
    assert fragment in error_of(response, 403)


@pytest.mark.parametrize("repo", ["contoso/xpu-backend", "initech/rocm-ci", "ACME-AI/torch-npu"])
def test_reporting_levels_admitted(client, repo):
    assert post_callback(client, callback_body(repo=repo)).status_code == 200


# 429


def test_over_rate_limit_is_429(client):
    RateLimit.objects.create(repository="acme-ai/torch-npu", per_minute=2)
    assert post_callback(client, callback_body(check_run_id="1")).status_code == 200
    assert post_callback(client, callback_body(check_run_id="2")).status_code == 200

    response = post_callback(client, callback_body(check_run_id="3"))

    assert "rate limit of 2 callbacks a minute" in error_of(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 60
    assert stored_item(KEY.replace("98765432100", "3")) is None
    other = post_callback(client, callback_body(repo="initech/rocm-ci", check_run_id="3"))
    assert other.status_code == 200, "another repository's budget is untouched"


# 503: DynamoDB


@pytest.mark.usefixtures("closed_dynamodb")
def test_dynamodb_down_is_503(client):
    response = post_callback(client, callback_body())
    assert "DynamoDB is unavailable" in error_of(response, 503)
    assert response["Retry-After"] == "5"


# The order between rows: 405, 503 (no token), 401, 413, 400, 403, 429, 409, 503 (DynamoDB)


@pytest.mark.usefixtures("no_token_configured")
def test_order_405_before_503_no_token(client):
    assert client.get(RESULTS_URL).status_code == 405


@pytest.mark.usefixtures("no_token_configured")
def test_order_503_no_token_before_401_and_413(client):
    assert post_callback(client, b"x" * (LIMIT + 1), token="wrong").status_code == 503


def test_order_401_before_413_and_400(client):
    assert post_callback(client, b"x" * (LIMIT + 1), token="wrong").status_code == 401
    assert post_callback(client, b"not json", token="").status_code == 401


def test_order_413_before_400(client):
    assert post_callback(client, b"x" * (LIMIT + 1), content_type="text/plain").status_code == 413


def test_order_400_before_403(client):
    body = callback_body(repo="example-labs/torch-riscv")
    body["untrusted"]["callback_payload"]["workflow"]["run_attempt"] = -1
    assert post_callback(client, body).status_code == 400
    assert (
        post_callback(client, callback_body(repo="example-labs/torch-riscv"), content_type="text/plain").status_code
        == 400
    )


def test_order_403_before_429(client):
    RateLimit.objects.create(repository="example-labs/torch-riscv", per_minute=1)
    for check_run_id in ("1", "2", "3"):
        response = post_callback(client, callback_body(repo="example-labs/torch-riscv", check_run_id=check_run_id))
        assert response.status_code == 403


def test_order_429_before_503_dynamodb(client, settings):
    RateLimit.objects.create(repository="acme-ai/torch-npu", per_minute=1)
    assert post_callback(client, callback_body(check_run_id="1")).status_code == 200
    settings.DYNAMODB_ENDPOINT = f"http://127.0.0.1:{free_port()}"
    assert post_callback(client, callback_body(check_run_id="2")).status_code == 429
    assert post_callback(client, callback_body(repo="initech/rocm-ci")).status_code == 503


# Logs


def test_one_log_line_per_rejection(client, caplog):
    caplog.set_level(logging.DEBUG)
    body = callback_body()
    body["untrusted"]["callback_payload"]["workflow"]["run_attempt"] = "many"

    post_callback(client, body)

    lines = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 1, [record.getMessage() for record in lines]
    message = lines[0].getMessage()
    assert "status=400" in message
    assert "repo=acme-ai/torch-npu" in message
    assert "delivery_id=11111111-2222-3333-4444-555555555555" in message
    assert f"reason={WORKFLOW}.run_attempt" in message


@pytest.mark.parametrize(
    ("send", "status"),
    [
        (lambda client: client.get(RESULTS_URL), 405),
        (lambda client: post_callback(client, callback_body(), token="wrong"), 401),
        (lambda client: post_callback(client, b"x" * (LIMIT + 1)), 413),
        (lambda client: post_callback(client, callback_body(repo="nobody/unlisted")), 403),
    ],
)
def test_each_rejection_logged_once(client, caplog, send, status):
    caplog.set_level(logging.DEBUG)
    send(client)
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert f"status={status}" in lines[0]


def test_log_line_cannot_be_forged(client, caplog):
    caplog.set_level(logging.WARNING)
    post_callback(client, callback_body(repo="acme-ai/torch-npu\nFAKE status=200", delivery_id="d\r\nFAKE"))
    [line] = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert "\n" not in line
    assert "\r" not in line


def test_token_never_logged(client, caplog, settings):
    secret = "relay-SECRET-4f1b9c"
    wrong = "relay-WRONG-77aa20"
    settings.OOT_RELAY_TOKEN = secret
    caplog.set_level(logging.DEBUG)
    responses = [
        post_callback(client, callback_body(), token=secret),
        post_callback(client, callback_body(), token=wrong),
        post_callback(client, callback_body(repo="nobody/unlisted"), token=secret),
        post_callback(client, b"not json", token=secret),
        post_callback(client, callback_body(), token=secret + "\n"),
    ]
    text = "\n".join(record.getMessage() for record in caplog.records)
    text += "\n".join(str(record.args) for record in caplog.records)
    text += "\n".join(response.content.decode() for response in responses)
    text += "\n".join(str(row) + row.reason for row in RejectedRequest.objects.all())
    assert secret not in text
    assert wrong not in text


def test_rejections_recorded_for_admin(client):
    post_callback(client, callback_body(repo="nobody/unlisted"))
    post_callback(client, callback_body(), token="wrong")
    rows = list(RejectedRequest.objects.values_list("status_code", "repository", "delivery_id"))
    assert rows == [(403, "nobody/unlisted", "11111111-2222-3333-4444-555555555555")], (
        "a request without a valid token writes no row"
    )


# Counters


def test_counters_by_outcome(client):
    post_callback(client, callback_body("in_progress"))
    post_callback(client, callback_body("in_progress"))
    post_callback(client, callback_body("completed"))
    post_callback(client, callback_body("completed"))
    post_callback(client, callback_body("in_progress"))
    post_callback(client, callback_body(), token="wrong")
    post_callback(client, b"[]")

    values = counters.read_all()
    assert values["callbacks_accepted"] == 2
    assert values["callbacks_duplicate"] == 2
    assert values["callbacks_ignored_late"] == 1
    assert values["callbacks_rejected"] == 2
    assert values["callbacks_rejected_401"] == 1
    assert values["callbacks_rejected_400"] == 1

    metrics = client.get("/metrics").content.decode()
    assert 'oot_callbacks_total{outcome="accepted"} 2' in metrics
    assert 'oot_callbacks_total{outcome="duplicate"} 2' in metrics
    assert 'oot_callbacks_total{outcome="ignored_late"} 1' in metrics
    assert 'oot_callbacks_total{outcome="rejected"} 2' in metrics
    assert 'oot_callbacks_rejected_total{status="401"} 1' in metrics


# Cost


def test_accepted_callback_costs_one_update_and_no_sql(client):
    assert post_callback(client, callback_body(check_run_id="1")).status_code == 200, "warms the policy cache"
    calls = []

    def record_call(model, **_kwargs):
        calls.append(model.name)

    events = dynamo.client().meta.events
    events.register("before-call.dynamodb", record_call)
    try:
        with CaptureQueriesContext(connection) as queries:
            in_progress = post_callback(client, callback_body("in_progress", check_run_id="2"))
            completed = post_callback(client, callback_body("completed", check_run_id="2"))
    finally:
        events.unregister("before-call.dynamodb", record_call)

    assert in_progress.status_code == completed.status_code == 200
    assert calls == ["UpdateItem", "UpdateItem"]
    assert [query["sql"] for query in queries.captured_queries] == []


def test_counts_written_in_background(client):
    """No read has to flush them: the process's own thread writes counts within a second."""
    assert post_callback(client, callback_body()).status_code == 200
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline
        and counters.redis_client().hget(counters.COUNTERS_KEY, "callbacks_accepted") is None
    ):
        time.sleep(0.05)
    assert counters.redis_client().hget(counters.COUNTERS_KEY, "callbacks_accepted") == b"1"
    assert "acme-ai/torch-npu" in counters.last_callbacks()


def test_accepted_callback_costs_one_redis_round_trip(client, monkeypatch):
    """The rate limit's count is the only Redis call on the request's thread.

    Counters of stored callbacks are written by a background thread.
    """
    assert post_callback(client, callback_body(check_run_id="1")).status_code == 200, "loads the rate-limit script"
    request_thread = threading.get_ident()
    sent = []
    send_packed_command = AbstractConnection.send_packed_command

    def record_send(self, command, *args, **kwargs):
        if threading.get_ident() == request_thread:
            sent.append(command)
        return send_packed_command(self, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", record_send)
    response = post_callback(client, callback_body(check_run_id="2"))

    assert response.status_code == 200
    assert len(sent) == 1, sent


# Response headers


def test_callback_response_keeps_security_headers(client):
    response = post_callback(client, callback_body())

    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response
    assert "Server-Timing" in response


def test_callback_response_sets_no_cookie(client):
    client.cookies["sessionid"] = "a-session-the-api-ignores"

    response = post_callback(client, callback_body())

    assert response.status_code == 200
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")


def test_callback_response_gives_its_length(client):
    response = post_callback(client, callback_body())

    assert response.status_code == 200
    assert int(response["Content-Length"]) == len(response.content)


def test_callback_api_skips_the_page_middleware(client, monkeypatch):
    """Sessions, CSRF and the rest of the page middleware never run for a callback."""

    def fail(self, request):
        raise AssertionError("page middleware ran")

    monkeypatch.setattr(SessionMiddleware, "process_request", fail)
    monkeypatch.setattr(CsrfViewMiddleware, "process_request", fail)

    assert post_callback(client, callback_body()).status_code == 200
    assert stored_item(KEY) is not None
    with pytest.raises(AssertionError, match="page middleware ran"):
        client.get("/oot")


def test_disallowed_host_is_400(client):
    response = post_callback(client, callback_body(), HTTP_HOST="attacker.example")

    assert response.status_code == 400
    assert stored_item(KEY) is None


# The write's before_send hook, where the rate limit's reply is read


def built_record() -> dict:
    return build_record(decode_body(json.dumps(callback_body("in_progress")).encode())).record


def test_before_send_runs_once_first(stores):
    calls = []

    def before_send():
        calls.append(stored_item(KEY))

    dynamo.write_record(built_record(), before_send=before_send)

    assert calls == [None], "ran once, before the item existed"
    assert stored_item(KEY)["status"] == "in_progress"


def test_before_send_raise_writes_nothing(stores):
    class Rejected(Exception):
        pass

    calls = []

    def before_send():
        calls.append(1)
        raise Rejected

    with pytest.raises(Rejected):
        dynamo.write_record(built_record(), before_send=before_send)

    assert calls == [1], "botocore did not retry the refusal"
    assert stored_item(KEY) is None
    dynamo.write_record(built_record())
    assert stored_item(KEY)["revision"] == 1, "the hook does not outlive its write"


def test_late_redis_reply_still_limits(client, monkeypatch):
    """A callback over its limit writes nothing when Redis replies after the DynamoDB request is ready."""
    RateLimit.objects.create(repository="acme-ai/torch-npu", per_minute=1)
    assert post_callback(client, callback_body(check_run_id="1")).status_code == 200
    result = PendingCount.result

    def slow_result(self):
        time.sleep(0.05)
        return result(self)

    monkeypatch.setattr(PendingCount, "result", slow_result)

    response = post_callback(client, callback_body(check_run_id="2"))

    assert response.status_code == 429
    assert stored_item(KEY.replace("98765432100", "2")) is None


def _broken_write(*_args, **_kwargs):
    raise RuntimeError("simulated bug in the write path")


def test_unexpected_error_is_500_in_api_shape(monkeypatch, caplog):
    monkeypatch.setattr(views, "_write", _broken_write)
    lenient = Client(raise_request_exception=False)

    with caplog.at_level(logging.ERROR, logger="oot_ingest.views"):
        response = post_callback(lenient, callback_body("in_progress"))

    assert response.status_code == 500
    assert response.json() == {"ok": False, "error": "internal error; the service logged the details"}
    assert "simulated bug" not in response.content.decode()
    assert any("callback failed with an unexpected error" in record.getMessage() for record in caplog.records)
    assert stored_item(KEY) is None


def test_unexpected_error_surfaces_in_test_client(client, monkeypatch):
    # The test client raises what the view reported, so no test can pass over a 500 unnoticed.
    monkeypatch.setattr(views, "_write", _broken_write)

    with pytest.raises(RuntimeError, match="simulated bug"):
        post_callback(client, callback_body("in_progress"))
    assert stored_item(KEY) is None
