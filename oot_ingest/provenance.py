"""Signed one-shot callback tokens and the per-job transition check.

The relay mints a token when it dispatches a downstream workflow, through
`mint_token` or `POST /api/oot/callback-tokens`. The token is an HS256 JWT
that binds the delivery id, the downstream repository, the upstream PR number
and head SHA, and the dispatch time. Every job of the dispatched workflow
echoes it in its callbacks as `untrusted.callback_payload.callback_token`.

One dispatch fans out into many jobs, so one token covers every job execution
(check_run_id) of its delivery. Each job execution moves through
dispatched -> in_progress -> completed. "Dispatched" exists only in this
check: a job with no state in Redis is dispatched, because a valid token
proves the dispatch. A job's completed consumes that job's use of the token.

Each allowlist entry sets how the check applies to its backend:
- off: the token is read only for its dispatch time, and nothing is rejected.
- warn: every problem is logged and counted, and the callback is stored.
- enforce: a missing, invalid or used token is a 403, a replayed or backwards
  transition is a 409, and the Redis reservation and the DynamoDB write act
  as one step (see `reserve_transition` and `finish_transition`).
"""

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
from django.conf import settings
from django.utils.crypto import salted_hmac
from redis.exceptions import RedisError

from oot_ingest import counters
from oot_ingest.models import AllowlistEntry
from oot_ingest.payload import (
    MAX_KEY_PART_CHARS,
    REPO_PATTERN,
    SHA_PATTERN,
    Callback,
    PayloadError,
    parse_count,
    parse_timestamp,
)
from oot_ingest.vocabulary import STATUS_COMPLETED, STATUS_IN_PROGRESS

logger = logging.getLogger(__name__)

TOKEN_ISSUER = "oot-hud"
TOKEN_AUDIENCE = "oot-hud-callback"
TOKEN_ALGORITHM = "HS256"
# Allowed clock difference between the minting and the verifying process.
TOKEN_LEEWAY_SECONDS = 60
# A dispatch time may lie this far in the future of the minting clock.
MAX_DISPATCH_CLOCK_SKEW = timedelta(minutes=5)

MODE_OFF = AllowlistEntry.Provenance.OFF.value
MODE_WARN = AllowlistEntry.Provenance.WARN.value
MODE_ENFORCE = AllowlistEntry.Provenance.ENFORCE.value

STATE_KEY_PREFIX = "oot:job-state:"
CLAIM_KEY_PREFIX = "oot:job-claim:"
# Lifetime of a reservation. It exceeds the longest DynamoDB write (at most 2
# attempts, each with a 2 s connect and a 5 s read timeout), and a crashed
# process frees the job within this time. A write that outlasts it anyway
# still records its state, because COMMIT_SCRIPT does not need the claim.
CLAIM_TTL_MILLISECONDS = 30_000

# Atomically check a job's transition and reserve it. KEYS: state, claim.
# ARGV: target status, claim value, claim TTL in ms. Returns "reserved" or
# the reason the transition is not allowed.
RESERVE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 'in_flight'
end
local current = redis.call('GET', KEYS[1])
if current == 'completed' then
    if ARGV[1] == 'completed' then
        return 'used'
    end
    return 'backwards'
end
if current == 'in_progress' and ARGV[1] == 'in_progress' then
    return 'replayed'
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 'reserved'
"""

# Move a job's state forward (never from completed back to in_progress) and
# drop the caller's reservation. KEYS: state, claim. ARGV: target status,
# claim value or "", state TTL in seconds.
COMMIT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if not (current == 'completed' and ARGV[1] == 'in_progress') then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then
    redis.call('DEL', KEYS[2])
end
return 1
"""

# Drop the caller's reservation so that a retry can pass. KEYS: claim. ARGV: claim value.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class ProvenanceError(Exception):
    """A callback that fails the provenance check.

    `status` is 403 for a token problem, 409 for a transition problem and 503
    when Redis, which stores the job states, is unreachable. `code` is a short
    name for counters and logs.
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TokenClaims:
    """The dispatch a callback token vouches for."""

    delivery_id: str
    repository: str
    pr_number: int
    head_sha: str
    dispatched_at: datetime
    expires_at: datetime


@dataclass
class MintRequest:
    """A validated `POST /api/oot/callback-tokens` body."""

    delivery_id: str
    repository: str
    pr_number: int
    head_sha: str
    dispatched_at: datetime | None


@dataclass
class ProvenanceCheck:
    """The outcome of the token check for one callback, carried to the transition step."""

    mode: str
    job: str
    state_key: str
    claim_key: str
    target: str
    claims: TokenClaims | None = None
    claim_value: str = ""


# --- minting -------------------------------------------------------------


def _signing_key() -> bytes:
    """Return the HS256 key: OOT_CALLBACK_TOKEN_SECRET, else a key derived from SECRET_KEY."""
    configured = settings.OOT_CALLBACK_TOKEN_SECRET
    if configured:
        return configured.encode("utf-8")
    derived = salted_hmac("oot_ingest.provenance.callback-token", b"", secret=settings.SECRET_KEY, algorithm="sha256")
    return derived.digest()


def token_lifetime() -> timedelta:
    return timedelta(seconds=settings.OOT_CALLBACK_TOKEN_LIFETIME_SECONDS)


def mint_token(
    *,
    delivery_id: str,
    repository: str,
    pr_number: int,
    head_sha: str | None,
    dispatched_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """Sign a callback token for one dispatch and return it with its expiry time.

    `dispatched_at` defaults to `now`, which defaults to the current time.
    The token expires OOT_CALLBACK_TOKEN_LIFETIME_SECONDS (3 days by default)
    after `now`.
    """
    issued_at = now or datetime.now(UTC)
    dispatched_at = dispatched_at or issued_at
    expires_at = issued_at + token_lifetime()
    claims = {
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": uuid.uuid4().hex,
        "delivery_id": delivery_id,
        "repository": repository,
        "pr_number": int(pr_number),
        "head_sha": (head_sha or "").lower(),
        "dispatched_at": round(dispatched_at.timestamp(), 3),
    }
    token = jwt.encode(claims, _signing_key(), algorithm=TOKEN_ALGORITHM)
    return token, datetime.fromtimestamp(claims["exp"], UTC)


def parse_mint_request(document: dict) -> MintRequest:
    """Validate a token request body; raise PayloadError naming the field."""
    delivery_id = document.get("delivery_id")
    if not isinstance(delivery_id, str) or not delivery_id:
        raise PayloadError("delivery_id", "missing or not a string")
    if len(delivery_id) > MAX_KEY_PART_CHARS:
        raise PayloadError("delivery_id", f"is longer than {MAX_KEY_PART_CHARS} characters")

    repository = document.get("repository")
    if not isinstance(repository, str) or not REPO_PATTERN.match(repository):
        raise PayloadError("repository", f"must be owner/repo, got {str(repository)[:80]!r}")

    pr_number = parse_count(document.get("pr_number"), "pr_number") or 0

    head_sha = document.get("head_sha")
    if head_sha is None or head_sha == "":
        head_sha = ""
    elif not isinstance(head_sha, str) or not SHA_PATTERN.match(head_sha):
        raise PayloadError("head_sha", "must be a hexadecimal commit SHA")

    dispatched_at = None
    stamp = parse_timestamp(document.get("dispatched_at"), "dispatched_at")
    if stamp is not None:
        dispatched_at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        now = datetime.now(UTC)
        if dispatched_at > now + MAX_DISPATCH_CLOCK_SKEW:
            raise PayloadError("dispatched_at", f"is in the future: {stamp}")
        if dispatched_at < now - token_lifetime():
            raise PayloadError("dispatched_at", f"is older than the token lifetime: {stamp}")

    return MintRequest(
        delivery_id=delivery_id,
        repository=repository,
        pr_number=pr_number,
        head_sha=head_sha.lower(),
        dispatched_at=dispatched_at,
    )


# --- verifying -------------------------------------------------------------


def decode_token(token: str) -> TokenClaims:
    """Verify a token's signature, expiry, issuer and audience; raise ProvenanceError (403)."""
    try:
        claims = jwt.decode(
            token,
            _signing_key(),
            algorithms=[TOKEN_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            issuer=TOKEN_ISSUER,
            leeway=TOKEN_LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "delivery_id", "repository", "dispatched_at"]},
        )
    except jwt.ExpiredSignatureError:
        raise ProvenanceError(403, "expired", "callback_token has expired") from None
    except jwt.InvalidSignatureError:
        raise ProvenanceError(403, "bad_signature", "callback_token has an invalid signature") from None
    except jwt.InvalidTokenError as error:
        raise ProvenanceError(403, "invalid", f"callback_token is invalid: {error}") from None

    try:
        return TokenClaims(
            delivery_id=str(claims["delivery_id"]),
            repository=str(claims["repository"]),
            pr_number=int(claims.get("pr_number") or 0),
            head_sha=str(claims.get("head_sha") or "").lower(),
            dispatched_at=datetime.fromtimestamp(float(claims["dispatched_at"]), UTC),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (TypeError, ValueError, OverflowError):
        raise ProvenanceError(403, "invalid", "callback_token has malformed claims") from None


def _claim_mismatch(claims: TokenClaims, callback: Callback) -> str | None:
    """Return which claim differs from the callback, or None when all match."""
    record = callback.record
    if claims.repository.lower() != callback.repo.lower():
        return f"callback_token is for repository {claims.repository}, not {callback.repo}"
    if claims.delivery_id != callback.delivery_id:
        return f"callback_token is for delivery {claims.delivery_id}, not {callback.delivery_id}"
    if claims.pr_number != int(record.get("pr_number") or 0):
        return f"callback_token is for PR {claims.pr_number}, not {record.get('pr_number')}"
    head_sha = str(record.get("pytorch_head_sha") or "").lower()
    if claims.head_sha != head_sha:
        return f"callback_token is for head SHA {claims.head_sha or '(none)'}, not {head_sha or '(none)'}"
    return None


def _job_identity(callback: Callback) -> tuple[str, str]:
    """Return a job execution's description for messages and its Redis key suffix.

    check_run_id is digits only and repositories contain no ':', so the
    delivery id, which may contain anything, is the unambiguous middle part.
    """
    record = callback.record
    check_run_id = record["check_run_id"]
    description = f"job {record['job_name']} (check_run_id {check_run_id})"
    return description, f"{callback.repo.lower()}:{callback.delivery_id}:{check_run_id}"


def _transition_problem(current: str | None, target: str, job: str) -> ProvenanceError | None:
    """Return why `current` -> `target` is not allowed for one job, or None."""
    if current == STATUS_COMPLETED and target == STATUS_COMPLETED:
        return ProvenanceError(403, "used", f"callback_token was already used: {job} is already completed")
    if current == STATUS_COMPLETED:
        return ProvenanceError(409, "backwards", f"{job} is already completed; in_progress would go backwards")
    if current == STATUS_IN_PROGRESS and target == STATUS_IN_PROGRESS:
        return ProvenanceError(409, "replayed", f"{job} is already in_progress; this in_progress is a replay")
    return None


def check_callback(callback: Callback, mode: str) -> ProvenanceCheck:
    """Check a callback's token and its job's state under the backend's mode.

    Raises ProvenanceError with status 403 (or 503 when Redis is unreachable)
    only in enforce mode. In warn mode every problem is logged and counted.
    A valid token that matches the callback fills a missing queue time from
    its dispatch time in every mode.
    """
    job, suffix = _job_identity(callback)
    check = ProvenanceCheck(
        mode=mode,
        job=job,
        state_key=STATE_KEY_PREFIX + suffix,
        claim_key=CLAIM_KEY_PREFIX + suffix,
        target=callback.status,
    )

    try:
        check.claims = _verified_claims(callback)
        _fill_queue_time(callback, check.claims)
    except ProvenanceError as problem:
        _handle_problem(problem, check, callback)

    if mode != MODE_OFF:
        try:
            _check_used(check)
        except ProvenanceError as problem:
            _handle_problem(problem, check, callback)
    return check


def _verified_claims(callback: Callback) -> TokenClaims:
    if not callback.callback_token:
        raise ProvenanceError(403, "missing", "callback_token is missing")
    claims = decode_token(callback.callback_token)
    mismatch = _claim_mismatch(claims, callback)
    if mismatch:
        raise ProvenanceError(403, "mismatch", mismatch)
    return claims


def _check_used(check: ProvenanceCheck) -> None:
    """Raise the job's transition problem that applies before the rate limit.

    In enforce mode that is only a used token (403): replays and backwards
    transitions (409) are decided atomically by `reserve_transition`. In warn
    mode every problem is raised here, to be logged.
    """
    try:
        raw = counters.redis_client().get(check.state_key)
    except RedisError as error:
        raise ProvenanceError(503, "redis", f"job states cannot be read (Redis: {error}); retry later") from None
    current = raw.decode() if raw else None
    problem = _transition_problem(current, check.target, check.job)
    if problem and (problem.status == 403 or check.mode == MODE_WARN):
        raise problem


def _handle_problem(problem: ProvenanceError, check: ProvenanceCheck, callback: Callback) -> None:
    if check.mode == MODE_ENFORCE:
        counters.increment("provenance_rejected")
        raise problem
    if check.mode == MODE_WARN:
        counters.increment("provenance_warnings")
        counters.increment(f"provenance_warning_{problem.code}")
        logger.warning(
            "provenance check failed, callback stored anyway (mode warn) repo=%s delivery_id=%s dynamoKey=%s reason=%s",
            callback.repo,
            callback.delivery_id,
            callback.key,
            problem.message,
        )
        return
    logger.debug("provenance not checked (mode off) dynamoKey=%s reason=%s", callback.key, problem.message)


def _fill_queue_time(callback: Callback, claims: TokenClaims) -> None:
    """Set queue_time from the dispatch time when `trusted.ci_metrics` has none.

    Only an in_progress callback does this. A completed one SETs every field it
    carries, so a derived value there would overwrite a queue_time that the
    relay sent with the in_progress.
    """
    record = callback.record
    if "queue_time" in record or callback.status != STATUS_IN_PROGRESS:
        return
    started = record.get("started_at")
    started_at = datetime.fromisoformat(started.replace("Z", "+00:00")) if started else datetime.now(UTC)
    waited = (started_at - claims.dispatched_at).total_seconds()
    if 0 <= waited <= 10**9:
        record["queue_time"] = Decimal(str(round(waited, 3)))


# --- transitions -------------------------------------------------------------


def _run_script(source: str, keys: list[str], args: list[Any]) -> Any:
    # register_script only computes the SHA-1. Calling the script runs EVALSHA and loads it on a miss.
    return counters.redis_client().register_script(source)(keys=keys, args=args)


def reserve_transition(check: ProvenanceCheck) -> None:
    """Reserve the job's next state in enforce mode; raise ProvenanceError (403, 409 or 503).

    The check and the reservation run as one Lua script, so of several
    identical concurrent callbacks exactly one passes. The others get a 409
    while it is being stored, or the transition's own 403 or 409 once it is.
    Call `finish_transition` after the DynamoDB write, whether it failed or not.
    """
    if check.mode != MODE_ENFORCE:
        return
    claim_value = f"{secrets.token_hex(8)}|{check.target}"
    try:
        outcome = _run_script(
            RESERVE_SCRIPT, [check.state_key, check.claim_key], [check.target, claim_value, CLAIM_TTL_MILLISECONDS]
        )
    except RedisError as error:
        counters.increment("provenance_rejected")
        raise ProvenanceError(503, "redis", f"job states cannot be written (Redis: {error}); retry later") from None

    outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if outcome == "reserved":
        check.claim_value = claim_value
        return

    counters.increment("provenance_rejected")
    if outcome == "in_flight":
        raise ProvenanceError(
            409, "in_flight", f"another callback for {check.job} is being stored; retry in a few seconds"
        )
    current = STATUS_COMPLETED if outcome in ("used", "backwards") else STATUS_IN_PROGRESS
    problem = _transition_problem(current, check.target, check.job)
    raise problem or ProvenanceError(409, outcome, f"{check.job} cannot move to {check.target}")


def finish_transition(check: ProvenanceCheck, *, written: bool) -> None:
    """Record the job's new state after a stored write, or release the reservation after a failed one.

    In warn mode the state is recorded too, so that later replays are
    reported. A Redis failure here is logged and not raised, because the
    record is already in DynamoDB (or nothing was written). A reservation
    that cannot be released expires after CLAIM_TTL_MILLISECONDS.
    """
    if check.mode == MODE_OFF:
        return
    try:
        if written:
            ttl_seconds = int(token_lifetime().total_seconds())
            _run_script(
                COMMIT_SCRIPT, [check.state_key, check.claim_key], [check.target, check.claim_value, ttl_seconds]
            )
        elif check.claim_value:
            _run_script(RELEASE_SCRIPT, [check.claim_key], [check.claim_value])
    except RedisError as error:
        counters.increment("provenance_state_not_saved")
        logger.warning(
            "job state not saved in Redis key=%s target=%s written=%s error=%s",
            check.state_key,
            check.target,
            written,
            error,
        )


def job_state(callback: Callback) -> str | None:
    """Return the stored state of a callback's job: in_progress, completed, or None for dispatched."""
    _job, suffix = _job_identity(callback)
    raw = counters.redis_client().get(STATE_KEY_PREFIX + suffix)
    return raw.decode() if raw else None


def mode_for(entry: AllowlistEntry | None) -> str:
    return entry.provenance if entry is not None and entry.provenance else MODE_OFF
