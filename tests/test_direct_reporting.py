"""Direct reporting: callbacks authenticated by a GitHub Actions OIDC token, verified against a loopback JWKS."""

import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from oot_ingest import oidc, policy, provenance
from oot_ingest.counters import redis_client
from oot_ingest.models import AllowlistEntry
from tests.conftest import RESULTS_URL, TOKEN, callback_body, post_callback, stored_item
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("stores", "demo_allowlist")

REPO = "acme-ai/torch-npu"
REPOSITORY_ID = "700123456"
DELIVERY = "11111111-2222-3333-4444-555555555555"
KEY = f"{REPO}/{DELIVERY}/npu-ci/test-float32/98765432100"
AUDIENCE = "https://hud.example.test/oot"
KEY_ID = "test-signing-key"


def new_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class IssuerHandler(BaseHTTPRequestHandler):
    """Serves the discovery document and the key set of the test issuer."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        issuer = self.server.issuer
        if self.path == "/.well-known/openid-configuration":
            document = {"issuer": issuer, "jwks_uri": f"{issuer}/.well-known/jwks"}
        elif self.path == "/.well-known/jwks":
            document = self.server.jwks
            self.server.jwks_requests += 1
        else:
            self.send_error(404)
            return
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_private_key()


@pytest.fixture(scope="module")
def issuer_server(signing_key):
    server = ThreadingHTTPServer(("127.0.0.1", 0), IssuerHandler)
    server.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    public_jwk = RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    server.jwks = {"keys": [{**public_jwk, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]}
    server.jwks_requests = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def direct_reporting(settings, issuer_server):
    settings.OOT_DIRECT_REPORTING = True
    settings.OOT_OIDC_ISSUER = issuer_server.issuer
    settings.OOT_OIDC_AUDIENCE = AUDIENCE
    settings.OOT_OIDC_JWKS_URL = ""
    oidc.key_source.clear()
    yield
    oidc.key_source.clear()


def oidc_token(signing_key, issuer: str, *, key_id: str = KEY_ID, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": f"repo:{REPO}:pull_request",
        "repository": REPO,
        "repository_id": REPOSITORY_ID,
        "repository_owner": "acme-ai",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": key_id})


def direct_body(status: str = "in_progress", **overrides) -> dict:
    body = callback_body(status, **overrides)
    del body["trusted"]
    return body


def post_direct(client, body: dict, token: str):
    return client.post(
        RESULTS_URL,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_direct_callback_is_stored(client, signing_key, issuer_server):
    token = oidc_token(signing_key, issuer_server.issuer)

    response = post_direct(client, direct_body("in_progress"), token)

    assert response.status_code == 200, response.content
    assert response.json()["dynamoKey"] == KEY
    item = stored_item(KEY)
    assert item["downstream_repo"] == REPO
    assert item["downstream_repo_level"] == "L2", "the level comes from the allowlist"
    assert "queue_time" not in item


def test_direct_level_follows_allowlist(client, signing_key, issuer_server):
    AllowlistEntry.objects.filter(repository=REPO).update(level="L4")
    policy.clear_policy_cache()

    post_direct(client, direct_body("in_progress"), oidc_token(signing_key, issuer_server.issuer))

    assert stored_item(KEY)["downstream_repo_level"] == "L4"


def test_direct_rejects_body_with_trusted(client, signing_key, issuer_server):
    body = callback_body("in_progress")

    response = post_direct(client, body, oidc_token(signing_key, issuer_server.issuer))

    assert response.status_code == 400
    assert response.json()["error"].startswith("trusted: must not be sent")
    assert stored_item(KEY) is None


def test_direct_rejects_forged_signature(client, issuer_server):
    forged = oidc_token(new_private_key(), issuer_server.issuer)

    response = post_direct(client, direct_body(), forged)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid OIDC token: Signature verification failed"
    assert stored_item(KEY) is None


def test_direct_rejects_wrong_audience(client, signing_key, issuer_server):
    token = oidc_token(signing_key, issuer_server.issuer, aud="https://another.example.test")

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 401
    assert response.json()["error"] == f"invalid OIDC token: its audience is not {AUDIENCE}"


def test_direct_rejects_expired_token(client, signing_key, issuer_server):
    an_hour_ago = int(time.time()) - 3600
    token = oidc_token(signing_key, issuer_server.issuer, iat=an_hour_ago - 300, nbf=an_hour_ago - 300, exp=an_hour_ago)

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid OIDC token: it has expired"


def test_direct_rejects_unknown_issuer(client, signing_key, issuer_server):
    token = oidc_token(signing_key, "https://token.actions.example.invalid")

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 401
    assert response.json()["error"] == f"invalid OIDC token: its issuer is not {issuer_server.issuer}"


def test_direct_rejects_unknown_key_id(client, signing_key, issuer_server):
    token = oidc_token(signing_key, issuer_server.issuer, key_id="rotated-away")

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 401
    assert "invalid OIDC token" in response.json()["error"]


def test_direct_rejects_hs256_token(client, issuer_server):
    claims = jwt.decode(oidc_token(new_private_key(), issuer_server.issuer), options={"verify_signature": False})
    token = jwt.encode(
        claims, "shared-secret-that-is-long-enough-for-hs256", algorithm="HS256", headers={"kid": KEY_ID}
    )

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 401


def test_direct_rejects_missing_repository_id(client, signing_key, issuer_server):
    token = oidc_token(signing_key, issuer_server.issuer, repository_id=None)

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 401
    assert "repository_id" in response.json()["error"]


def test_direct_rejects_unlisted_repository(client, signing_key, issuer_server):
    token = oidc_token(signing_key, issuer_server.issuer, repository="someone/else", repository_id="42")

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 403
    assert response.json()["error"] == "repository someone/else is not on the allowlist"


def test_direct_pins_first_repository_id(client, signing_key, issuer_server):
    first = post_direct(client, direct_body("in_progress"), oidc_token(signing_key, issuer_server.issuer))
    assert first.status_code == 200

    impostor = oidc_token(signing_key, issuer_server.issuer, repository_id="999")
    response = post_direct(client, direct_body("completed"), impostor)

    assert response.status_code == 403
    assert f"has repository_id 999, but {REPOSITORY_ID} is pinned" in response.json()["error"]
    assert stored_item(KEY)["status"] == "in_progress"
    assert redis_client().hget(oidc.PINNED_IDS_KEY, REPO.lower()) == REPOSITORY_ID.encode()


def test_direct_takes_queue_time_from_callback_token(client, signing_key, issuer_server):
    dispatched = datetime(2026, 12, 4, 10, 15, 0, tzinfo=UTC)  # 30 s before started_at
    callback_token, _expires_at = provenance.mint_token(
        delivery_id=DELIVERY, repository=REPO, pr_number=4242, head_sha="a" * 40, dispatched_at=dispatched
    )
    body = direct_body("in_progress")
    body["untrusted"]["callback_payload"]["callback_token"] = callback_token

    response = post_direct(client, body, oidc_token(signing_key, issuer_server.issuer))

    assert response.status_code == 200
    assert stored_item(KEY)["queue_time"] == Decimal("30")


def test_direct_applies_enforced_provenance(client, signing_key, issuer_server):
    AllowlistEntry.objects.filter(repository=REPO).update(provenance="enforce")
    policy.clear_policy_cache()

    response = post_direct(client, direct_body(), oidc_token(signing_key, issuer_server.issuer))

    assert response.status_code == 403
    assert response.json()["error"] == "callback_token is missing"


def test_direct_caches_key_set(client, signing_key, issuer_server):
    before = issuer_server.jwks_requests

    for check_run_id in (1, 2, 3):
        token = oidc_token(signing_key, issuer_server.issuer)
        assert post_direct(client, direct_body(check_run_id=check_run_id), token).status_code == 200

    assert issuer_server.jwks_requests - before == 1


def test_relay_token_still_works_with_direct_reporting(client):
    response = post_callback(client, callback_body("in_progress"))

    assert response.status_code == 200


def test_relay_token_wins_over_bearer(client, signing_key, issuer_server):
    response = client.post(
        RESULTS_URL,
        data=json.dumps(callback_body("in_progress")),
        content_type="application/json",
        headers={"X-OOT-Relay-Token": TOKEN, "Authorization": f"Bearer {oidc_token(signing_key, 'x')}"},
    )

    assert response.status_code == 200


def test_bearer_ignored_when_direct_reporting_off(client, settings, signing_key, issuer_server):
    settings.OOT_DIRECT_REPORTING = False

    response = post_direct(client, direct_body(), oidc_token(signing_key, issuer_server.issuer))

    assert response.status_code == 401
    assert response.json()["error"] == "missing or invalid relay token in X-OOT-Relay-Token"


def test_unreachable_issuer_is_503(client, settings, signing_key):
    unreachable = f"http://127.0.0.1:{free_port()}"
    settings.OOT_OIDC_ISSUER = unreachable

    response = post_direct(client, direct_body(), oidc_token(signing_key, unreachable))

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "discovery document" in response.json()["error"]


def test_configured_jwks_url_skips_discovery(client, settings, signing_key, issuer_server):
    settings.OOT_OIDC_JWKS_URL = f"{issuer_server.issuer}/.well-known/jwks"
    settings.OOT_OIDC_ISSUER = "https://token.actions.githubusercontent.com"
    token = oidc_token(signing_key, "https://token.actions.githubusercontent.com")

    response = post_direct(client, direct_body(), token)

    assert response.status_code == 200


def test_direct_without_any_token_is_401(client, settings):
    settings.OOT_RELAY_TOKEN = ""

    response = client.post(RESULTS_URL, data=json.dumps(direct_body()), content_type="application/json")

    assert response.status_code == 401
    assert "OIDC token" in response.json()["error"]
