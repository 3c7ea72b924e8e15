"""Direct reporting: callbacks authenticated by a GitHub Actions OIDC token instead of a relay.

With OOT_DIRECT_REPORTING=true a downstream workflow may POST its callbacks
to `/api/oot/results` with `Authorization: Bearer <OIDC token>`. The token
must be an RS256 JWT from OOT_OIDC_ISSUER for OOT_OIDC_AUDIENCE, signed by a
key in the issuer's JWKS. The service then fills `trusted` itself: the
repository comes from the token's `repository` claim and the level from the
allowlist.

The first `repository_id` seen for a repository is pinned in Redis. A later
token whose repository has the same name but another id (the repository was
deleted and re-created, or the name passed to another owner) is rejected.
"""

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.http import HttpRequest
from redis.exceptions import RedisError

from oot_ingest import counters
from oot_ingest.payload import REPO_PATTERN, PayloadError

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "repository", "repository_id"]
LEEWAY_SECONDS = 60
FETCH_TIMEOUT_SECONDS = 5
# How long the discovery document and the key set are cached before they are fetched again.
CACHE_SECONDS = 300
DISCOVERY_RETRY_SECONDS = 30
PINNED_IDS_KEY = "oot:oidc:repository-id"


class OidcError(Exception):
    """A direct-reporting request that cannot be authenticated: 401, 403, or 503 when a dependency is down."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class OidcIdentity:
    """The workflow an OIDC token vouches for."""

    repository: str
    repository_id: str
    subject: str


def bearer_token(request: HttpRequest) -> str | None:
    """Return the token of an `Authorization: Bearer` header, or None."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class _KeySource:
    """The issuer's JWKS client, found through the issuer's discovery document and cached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: jwt.PyJWKClient | None = None
        self._settings: tuple[str, str] | None = None
        self._loaded_at = 0.0

    def client(self) -> jwt.PyJWKClient:
        configured = (settings.OOT_OIDC_ISSUER, settings.OOT_OIDC_JWKS_URL)
        with self._lock:
            fresh = time.monotonic() - self._loaded_at < CACHE_SECONDS
            if self._client is not None and self._settings == configured and fresh:
                return self._client
            try:
                jwks_url = settings.OOT_OIDC_JWKS_URL or _discover_jwks_url(settings.OOT_OIDC_ISSUER)
            except OidcError:
                if self._client is None or self._settings != configured:
                    raise
                # Keep the known key set through a discovery outage and try
                # discovery again in DISCOVERY_RETRY_SECONDS.
                self._loaded_at = time.monotonic() - CACHE_SECONDS + DISCOVERY_RETRY_SECONDS
                return self._client
            self._client = jwt.PyJWKClient(
                jwks_url, cache_keys=True, lifespan=CACHE_SECONDS, timeout=FETCH_TIMEOUT_SECONDS
            )
            self._settings = configured
            self._loaded_at = time.monotonic()
            return self._client

    def clear(self) -> None:
        with self._lock:
            self._client = None


key_source = _KeySource()


def _discover_jwks_url(issuer: str) -> str:
    """Read `jwks_uri` from the issuer's OpenID Connect discovery document."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            document = json.loads(response.read(1024 * 1024))
    except (OSError, ValueError) as error:
        logger.warning("OIDC discovery failed url=%s error=%s", url, error)
        raise OidcError(503, f"the OIDC discovery document {url} could not be read ({error}); retry later") from None

    if not isinstance(document, dict):
        raise OidcError(503, f"the OIDC discovery document {url} is not a JSON object")
    if document.get("issuer") != issuer:
        raise OidcError(503, f"the OIDC discovery document {url} names issuer {document.get('issuer')!r}, not {issuer}")
    jwks_url = document.get("jwks_uri")
    if not isinstance(jwks_url, str) or not jwks_url.startswith(("https://", "http://")):
        raise OidcError(503, f"the OIDC discovery document {url} has no http(s) jwks_uri")
    return jwks_url


def verify_token(token: str) -> OidcIdentity:
    """Verify an OIDC token's signature, issuer, audience and expiry; raise OidcError (401 or 503)."""
    try:
        signing_key = key_source.client().get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as error:
        logger.warning("OIDC key set could not be fetched issuer=%s error=%s", settings.OOT_OIDC_ISSUER, error)
        raise OidcError(503, f"the issuer's key set could not be fetched ({error}); retry later") from None
    except (jwt.PyJWKClientError, jwt.InvalidTokenError) as error:
        raise OidcError(401, f"invalid OIDC token: {error}") from None

    try:
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=ALGORITHMS,
            audience=settings.OOT_OIDC_AUDIENCE,
            issuer=settings.OOT_OIDC_ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise OidcError(401, "invalid OIDC token: it has expired") from None
    except jwt.InvalidAudienceError:
        raise OidcError(401, f"invalid OIDC token: its audience is not {settings.OOT_OIDC_AUDIENCE}") from None
    except jwt.InvalidIssuerError:
        raise OidcError(401, f"invalid OIDC token: its issuer is not {settings.OOT_OIDC_ISSUER}") from None
    except jwt.InvalidTokenError as error:
        raise OidcError(401, f"invalid OIDC token: {error}") from None

    repository = claims["repository"]
    if not isinstance(repository, str) or not REPO_PATTERN.match(repository):
        raise OidcError(401, f"invalid OIDC token: repository claim {str(repository)[:80]!r} is not owner/repo")
    repository_id = str(claims["repository_id"])
    if not repository_id.isdigit():
        raise OidcError(401, f"invalid OIDC token: repository_id claim {repository_id[:40]!r} is not a number")
    return OidcIdentity(repository=repository, repository_id=repository_id, subject=str(claims.get("sub", "")))


def pin_repository_id(identity: OidcIdentity) -> None:
    """Store the first repository_id seen for a repository and reject any other; raise OidcError (403 or 503)."""
    field = identity.repository.lower()
    try:
        redis = counters.redis_client()
        if redis.hsetnx(PINNED_IDS_KEY, field, identity.repository_id):
            logger.info("pinned repository_id repo=%s repository_id=%s", identity.repository, identity.repository_id)
            return
        pinned = redis.hget(PINNED_IDS_KEY, field)
    except RedisError as error:
        raise OidcError(503, f"the pinned repository_id cannot be read (Redis: {error}); retry later") from None

    pinned_id = pinned.decode() if pinned else ""
    if pinned_id != identity.repository_id:
        counters.increment("oidc_repository_id_mismatch")
        raise OidcError(
            403,
            f"repository {identity.repository} has repository_id {identity.repository_id}, but {pinned_id} is pinned; "
            "if the repository was re-created on purpose, remove the pin in Redis "
            f"(HDEL {PINNED_IDS_KEY} {field})",
        )


def trusted_document(document: dict, identity: OidcIdentity, level: str | None) -> dict:
    """Return the callback document with `trusted` filled from the token and the allowlist.

    The downstream must not send `trusted` itself: nothing it sends is trusted.
    """
    if "trusted" in document:
        raise PayloadError("trusted", "must not be sent with an OIDC token; the service fills it in")
    return {
        "trusted": {
            "verified_repo": identity.repository,
            "downstream_repo_level": level,
            "ci_metrics": {"queue_time": None, "execution_time": None},
        },
        "untrusted": document.get("untrusted"),
    }
