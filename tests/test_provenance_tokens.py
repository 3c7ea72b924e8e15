"""Callback tokens: minting through the API, and the token check in off, warn and enforce modes."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import jwt
import pytest

from oot_ingest import policy, provenance
from oot_ingest.counters import read_all
from oot_ingest.models import AllowlistEntry, RateLimit, RejectedRequest
from tests.conftest import TOKEN, callback_body, post_callback, stored_item

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

REPO = "acme-ai/torch-npu"
DELIVERY = "11111111-2222-3333-4444-555555555555"
KEY = f"{REPO}/{DELIVERY}/npu-ci/test-float32/98765432100"
MINT_URL = "/api/oot/callback-tokens"


def set_mode(mode: str, repo: str = REPO) -> None:
    AllowlistEntry.objects.filter(repository__iexact=repo).update(provenance=mode)
    policy.clear_policy_cache()


def mint(**overrides) -> str:
    arguments = {"delivery_id": DELIVERY, "repository": REPO, "pr_number": 4242, "head_sha": "a" * 40}
    arguments.update(overrides)
    token, _expires_at = provenance.mint_token(**arguments)
    return token


def with_token(body: dict, token: str | None) -> dict:
    body["untrusted"]["callback_payload"]["callback_token"] = token
    return body


def post_mint(client, document, token: str | None = TOKEN):
    headers = {"X-OOT-Relay-Token": token} if token is not None else {}
    return client.post(MINT_URL, data=json.dumps(document), content_type="application/json", headers=headers)


# --- minting ---------------------------------------------------------------


def test_mint_endpoint_returns_verifiable_token(client):
    response = post_mint(
        client,
        {
            "delivery_id": DELIVERY,
            "repository": REPO,
            "pr_number": 4242,
            "head_sha": "A" * 40,
            "dispatched_at": "2026-12-04T10:00:00Z",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    claims = provenance.decode_token(body["callback_token"])
    assert claims.delivery_id == DELIVERY
    assert claims.repository == REPO
    assert claims.pr_number == 4242
    assert claims.head_sha == "a" * 40
    assert claims.dispatched_at == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    lifetime = expires_at - datetime.now(UTC)
    assert timedelta(days=3) - timedelta(minutes=1) < lifetime <= timedelta(days=3)


def test_mint_endpoint_needs_relay_token(client):
    missing = post_mint(client, {"delivery_id": DELIVERY, "repository": REPO}, token=None)
    wrong = post_mint(client, {"delivery_id": DELIVERY, "repository": REPO}, token="not-the-token")

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert "relay token" in wrong.json()["error"]


def test_mint_endpoint_rejects_get(client):
    response = client.get(MINT_URL, headers={"X-OOT-Relay-Token": TOKEN})

    assert response.status_code == 405


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"repository": REPO}, "delivery_id"),
        ({"delivery_id": DELIVERY, "repository": "no-slash"}, "repository"),
        ({"delivery_id": DELIVERY, "repository": REPO, "pr_number": -1}, "pr_number"),
        ({"delivery_id": DELIVERY, "repository": REPO, "head_sha": "not-hex"}, "head_sha"),
        ({"delivery_id": DELIVERY, "repository": REPO, "dispatched_at": "yesterday"}, "dispatched_at"),
        ({"delivery_id": DELIVERY, "repository": REPO, "dispatched_at": "2099-01-01T00:00:00Z"}, "dispatched_at"),
        ({"delivery_id": DELIVERY, "repository": REPO, "dispatched_at": "2001-01-01T00:00:00Z"}, "dispatched_at"),
    ],
)
def test_mint_endpoint_names_invalid_field(client, document, field):
    response = post_mint(client, document)

    assert response.status_code == 400
    assert response.json()["error"].startswith(field)


def test_mint_endpoint_rejects_unlisted_repository(client):
    response = post_mint(client, {"delivery_id": DELIVERY, "repository": "someone/else"})

    assert response.status_code == 403
    assert "not on the allowlist" in response.json()["error"]


# --- enforce ---------------------------------------------------------------


def test_enforce_accepts_matching_token(client):
    set_mode("enforce")

    started = post_callback(client, with_token(callback_body("in_progress"), mint()))
    finished = post_callback(client, with_token(callback_body("completed"), mint()))

    assert started.status_code == 200
    assert finished.status_code == 200
    assert stored_item(KEY)["status"] == "completed"


def test_enforce_rejects_missing_token(client):
    set_mode("enforce")

    response = post_callback(client, callback_body("in_progress"))

    assert response.status_code == 403
    assert response.json()["error"] == "callback_token is missing"
    assert stored_item(KEY) is None
    assert RejectedRequest.objects.filter(status_code=403, reason="callback_token is missing").count() == 1


def test_enforce_rejects_forged_signature(client, settings):
    set_mode("enforce")
    settings.OOT_CALLBACK_TOKEN_SECRET = "x" * 40
    forged = mint()
    settings.OOT_CALLBACK_TOKEN_SECRET = ""

    response = post_callback(client, with_token(callback_body("in_progress"), forged))

    assert response.status_code == 403
    assert response.json()["error"] == "callback_token has an invalid signature"
    assert stored_item(KEY) is None


def test_enforce_rejects_token_signed_with_none(client):
    set_mode("enforce")
    claims = jwt.decode(mint(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")

    response = post_callback(client, with_token(callback_body("in_progress"), unsigned))

    assert response.status_code == 403
    assert "invalid" in response.json()["error"]


def test_enforce_rejects_expired_token(client):
    set_mode("enforce")
    four_days_ago = datetime.now(UTC) - timedelta(days=4)

    response = post_callback(client, with_token(callback_body("in_progress"), mint(now=four_days_ago)))

    assert response.status_code == 403
    assert response.json()["error"] == "callback_token has expired"


def test_enforce_rejects_garbage_token(client):
    set_mode("enforce")

    response = post_callback(client, with_token(callback_body("in_progress"), "not.a.jwt"))

    assert response.status_code == 403
    assert response.json()["error"].startswith("callback_token is invalid")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"repository": "fabrikam/tpu-bridge"}, "callback_token is for repository fabrikam/tpu-bridge"),
        ({"delivery_id": "another-delivery"}, "callback_token is for delivery another-delivery"),
        ({"pr_number": 4243}, "callback_token is for PR 4243, not 4242"),
        ({"head_sha": "b" * 40}, f"callback_token is for head SHA {'b' * 40}"),
    ],
)
def test_enforce_rejects_token_for_other_dispatch(client, overrides, message):
    set_mode("enforce")

    response = post_callback(client, with_token(callback_body("in_progress"), mint(**overrides)))

    assert response.status_code == 403
    assert response.json()["error"].startswith(message)
    assert stored_item(KEY) is None


def test_repository_match_ignores_case(client):
    set_mode("enforce")

    response = post_callback(client, with_token(callback_body("in_progress"), mint(repository="ACME-AI/Torch-NPU")))

    assert response.status_code == 200


def test_enforce_checks_token_before_rate_limit(client):
    set_mode("enforce")
    RateLimit.objects.create(repository=REPO, per_minute=1)
    policy.clear_policy_cache()
    assert post_callback(client, with_token(callback_body("in_progress"), mint())).status_code == 200

    unsigned = post_callback(client, callback_body("completed"))

    assert unsigned.status_code == 403, "a token problem outranks the rate limit"


# --- warn and off ------------------------------------------------------------


def test_warn_stores_and_counts(client, caplog):
    set_mode("warn")

    response = post_callback(client, with_token(callback_body("in_progress"), mint(pr_number=1)))

    assert response.status_code == 200
    assert stored_item(KEY)["status"] == "in_progress"
    counts = read_all()
    assert counts["provenance_warnings"] == 1
    assert counts["provenance_warning_mismatch"] == 1
    assert "callback_token is for PR 1, not 4242" in caplog.text


def test_warn_counts_replay(client):
    set_mode("warn")
    token = mint()

    first = post_callback(client, with_token(callback_body("completed"), token))
    replay = post_callback(client, with_token(callback_body("completed"), token))

    assert first.status_code == 200
    assert replay.status_code == 200
    assert read_all()["provenance_warning_used"] == 1


def test_off_ignores_bad_token(client):
    set_mode("off")

    response = post_callback(client, with_token(callback_body("in_progress"), "not.a.jwt"))

    assert response.status_code == 200
    assert "provenance_warnings" not in read_all()


def test_enforce_applies_per_backend(client):
    set_mode("enforce", "fabrikam/tpu-bridge")

    response = post_callback(client, callback_body("in_progress"))

    assert response.status_code == 200


# --- timing ----------------------------------------------------------------


def test_dispatch_time_gives_missing_queue_time(client):
    dispatched = datetime(2026, 12, 4, 10, 14, 48, 500000, tzinfo=UTC)  # 41.5 s before started_at
    body = with_token(callback_body("in_progress", queue_time=None), mint(dispatched_at=dispatched))

    response = post_callback(client, body)

    assert response.status_code == 200
    assert stored_item(KEY)["queue_time"] == Decimal("41.5")


def test_trusted_queue_time_wins_over_dispatch_time(client):
    dispatched = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    body = with_token(callback_body("in_progress", queue_time=12.5), mint(dispatched_at=dispatched))

    post_callback(client, body)

    assert stored_item(KEY)["queue_time"] == Decimal("12.5")


def test_completed_keeps_relay_queue_time(client):
    dispatched = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    post_callback(client, with_token(callback_body("in_progress", queue_time=12.5), mint(dispatched_at=dispatched)))

    post_callback(client, with_token(callback_body("completed", queue_time=None), mint(dispatched_at=dispatched)))

    assert stored_item(KEY)["queue_time"] == Decimal("12.5")


def test_forged_token_gives_no_queue_time(client, settings):
    settings.OOT_CALLBACK_TOKEN_SECRET = "y" * 40
    forged = mint(dispatched_at=datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    settings.OOT_CALLBACK_TOKEN_SECRET = ""

    post_callback(client, with_token(callback_body("in_progress", queue_time=None), forged))

    assert "queue_time" not in stored_item(KEY)
