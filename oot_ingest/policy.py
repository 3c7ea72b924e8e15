"""Admission of callbacks: relay tokens, the allowlist and per-repository rate limits.

Lookups are cached in process memory for POLICY_CACHE_SECONDS, so a callback
costs no SQL query in the common case. A change made in admin clears this
process's cache at once and reaches other processes within that time, so a
revoked token or a removed repository may still pass in another process for
up to POLICY_CACHE_SECONDS.
"""

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from django_ratelimit import ALL
from django_ratelimit import core as ratelimit_core
from redis.exceptions import RedisError

from oot_ingest import counters
from oot_ingest.allowlist import allowlist_document
from oot_ingest.models import AllowlistEntry, RateLimit, RelayToken, token_digest
from oot_ingest.vocabulary import REPORTING_LEVELS

logger = logging.getLogger(__name__)

POLICY_CACHE_SECONDS = 5.0
TOKEN_LAST_USED_INTERVAL_SECONDS = 60
RATE_LIMIT_GROUP = "oot-callbacks"
RATE_LIMIT_PERIOD_SECONDS = 60
# While Redis is unreachable, each process logs at most one warning in this many seconds.
UNAVAILABLE_WARNING_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class Policy:
    """A snapshot of the policy tables, keyed by lower-case repository."""

    allowlist: dict[str, AllowlistEntry]
    rate_limits: dict[str, int]
    token_digests: dict[str, int]  # digest -> RelayToken id, active tokens only
    loaded_at: float
    # The JSON body and ETag of GET /api/oot/allowlist, built on first use.
    allowlist_json: list = field(default_factory=list)


_lock = threading.Lock()
_snapshot: Policy | None = None
# Token digest -> monotonic time of this process's last last_used_at write.
_last_used_written: dict[str, float] = {}


def _fresh(snapshot: Policy | None) -> bool:
    return snapshot is not None and time.monotonic() - snapshot.loaded_at < POLICY_CACHE_SECONDS


def current_policy() -> Policy:
    """Return the cached policy snapshot, reloading it from the database when it is older than the cache time."""
    global _snapshot
    snapshot = _snapshot
    if _fresh(snapshot):
        return snapshot
    with _lock:
        # Another thread may have reloaded while this one waited for the lock.
        if _fresh(_snapshot):
            return _snapshot
        snapshot = Policy(
            allowlist={entry.repository.lower(): entry for entry in AllowlistEntry.objects.all()},
            rate_limits={limit.repository.lower(): limit.per_minute for limit in RateLimit.objects.all()},
            token_digests={
                digest: pk
                for pk, digest in RelayToken.objects.filter(revoked_at__isnull=True).values_list("pk", "digest")
            },
            loaded_at=time.monotonic(),
        )
        _snapshot = snapshot
    return snapshot


def clear_policy_cache() -> None:
    global _snapshot
    _snapshot = None


@receiver([post_save, post_delete], sender=AllowlistEntry)
@receiver([post_save, post_delete], sender=RateLimit)
@receiver([post_save, post_delete], sender=RelayToken)
def _policy_changed(**_kwargs) -> None:
    clear_policy_cache()


def token_configured() -> bool:
    """Tell whether any relay token exists: the environment's or an active admin token."""
    return bool(settings.OOT_RELAY_TOKEN) or bool(current_policy().token_digests)


def check_token(presented: str | None) -> bool:
    """Compare a presented relay token with the configured ones in constant time.

    Both OOT_RELAY_TOKEN and every active admin token are accepted.
    """
    if not presented or not presented.isascii():
        return False
    presented_bytes = presented.encode("ascii")

    configured = settings.OOT_RELAY_TOKEN
    if configured and hmac.compare_digest(presented_bytes, configured.encode("utf-8")):
        return True

    # The lookup key is a SHA-256 digest of the presented token, so timing
    # differences reveal nothing about a stored token.
    digest = token_digest(presented)
    token_id = current_policy().token_digests.get(digest)
    if token_id is None:
        return False
    _touch_token(token_id, digest)
    return True


def _touch_token(token_id: int, digest: str) -> None:
    """Set the token's last_used_at, at most once a minute.

    The in-process memo saves a query on most callbacks. The conditional
    UPDATE keeps several processes to one write a minute as well.
    """
    now = time.monotonic()
    if now - _last_used_written.get(digest, -1e9) < TOKEN_LAST_USED_INTERVAL_SECONDS:
        return
    _last_used_written[digest] = now
    threshold = timezone.now() - timedelta(seconds=TOKEN_LAST_USED_INTERVAL_SECONDS)
    RelayToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=threshold), pk=token_id).update(
        last_used_at=timezone.now()
    )


def admission_error(repo: str) -> str | None:
    """Return why a repository may not report, or None when it may."""
    entry = current_policy().allowlist.get(repo.lower())
    if entry is None:
        return f"repository {repo} is not on the allowlist"
    if not entry.enabled:
        return f"repository {repo} is disabled on the allowlist"
    if entry.level not in REPORTING_LEVELS:
        return f"repository {repo} is at level {entry.level}; results are accepted from L2 and above"
    return None


def allowlist_entry(repo: str) -> AllowlistEntry | None:
    return current_policy().allowlist.get(repo.lower())


def rate_limit_for(repo: str) -> int:
    """Return the repository's callbacks a minute: its own limit, else OOT_DEFAULT_RATE_LIMIT."""
    return current_policy().rate_limits.get(repo.lower(), settings.OOT_DEFAULT_RATE_LIMIT)


@dataclass(frozen=True)
class RateDecision:
    """The outcome of counting one callback against its repository's budget."""

    limit: int
    limited: bool = False
    retry_after: int = 0
    checked: bool = True


def consume_rate_limit(request: HttpRequest, repo: str) -> RateDecision:
    """Count one callback for `repo` in the current one-minute window and tell whether it is over the limit.

    Counters live in the cache named by RATELIMIT_USE_CACHE (Redis), keyed by
    the lower-case repository, so each repository has its own budget. The
    window is django-ratelimit's fixed window, and the limit is part of the
    counter key, so changing a repository's limit starts it a new count.
    When Redis is unreachable the callback is admitted (fail open): the relay
    limits its own traffic, and losing results is worse than a burst.
    """
    return start_rate_limit(request, repo).decision()


def start_rate_limit(request: HttpRequest, repo: str) -> "PendingRateLimit":
    """Count one callback as `consume_rate_limit` does, but leave reading Redis's reply to `decision()`.

    The count is sent at once, so it is the same whatever the caller does
    next. The caller can prepare its write while Redis counts, and must call
    `decision()` before writing, or `discard()` when it writes nothing.
    """
    limit = rate_limit_for(repo)
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return PendingRateLimit(repo, limit, usage=None)
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    rate = (limit, RATE_LIMIT_PERIOD_SECONDS)
    try:
        if not hasattr(cache, "start_incr_or_add"):
            usage = ratelimit_core.get_usage(
                request, group=RATE_LIMIT_GROUP, key=lambda _group, _request: repo.lower(), rate=rate, increment=True
            )
            return PendingRateLimit(repo, limit, usage=usage)
        value = repo.lower()
        # NOTE: _get_window and _make_cache_key are django-ratelimit 4.1's
        # private helpers. tests/test_policy_enforcement.py checks that
        # get_usage reads the counters written here, so a release that
        # changes them fails there.
        window_end = ratelimit_core._get_window(value, RATE_LIMIT_PERIOD_SECONDS)
        cache_key = ratelimit_core._make_cache_key(RATE_LIMIT_GROUP, window_end, rate, value, ALL)
        pending = cache.start_incr_or_add(cache_key, RATE_LIMIT_PERIOD_SECONDS + ratelimit_core.EXPIRATION_FUDGE)
    except RedisError as error:
        return PendingRateLimit(repo, limit, failure=str(error))
    return PendingRateLimit(repo, limit, pending=pending, window_end=window_end)


class PendingRateLimit:
    """One callback counted against its repository's budget; `decision()` reads the outcome once."""

    def __init__(self, repo: str, limit: int, *, usage=False, pending=None, window_end: int = 0, failure: str = ""):
        self.repo = repo
        self.limit = limit
        self._usage = usage  # django-ratelimit's usage dict, None when disabled, False while unknown
        self._pending = pending
        self._window_end = window_end
        self._failure = failure
        self._decision: RateDecision | None = None

    def decision(self) -> RateDecision:
        if self._decision is None:
            self._decision = self._decide()
        return self._decision

    def discard(self) -> None:
        """Drop Redis's reply unread, when the callback is rejected for another reason; the count stays."""
        if self._pending is not None and self._decision is None:
            self._pending.discard()
            self._pending = None

    def _read_usage(self) -> dict | None:
        if self._pending is None:
            return self._usage
        count = self._pending.result()
        self._pending = None
        # time_left reads django-ratelimit's clock, as get_usage does, so that
        # it agrees with the window the key was made for.
        return {
            "count": count,
            "limit": self.limit,
            "should_limit": count > self.limit,
            "time_left": self._window_end - int(ratelimit_core.time.time()),
        }

    def _decide(self) -> RateDecision:
        limit = self.limit
        if self._failure:
            _note_unavailable(self.repo, self._failure)
            return RateDecision(limit, checked=False)
        try:
            usage = self._read_usage()
        except RedisError as error:
            _note_unavailable(self.repo, str(error))
            return RateDecision(limit, checked=False)
        if usage is None:
            # RATELIMIT_ENABLE is False. manage.py reports it as oot_ingest.E001,
            # but the web server runs no system checks, so it is logged here too.
            _log_disabled_once()
            return RateDecision(limit, checked=False)
        if usage["limit"] == 0:
            # get_usage returns limit 0 when it could not read or write a counter,
            # because the cache failed or the key expired between its add and incr.
            # Limits here are at least 1, so limit 0 always means one of these.
            _note_unavailable(self.repo, "the rate-limit counter could not be read or written")
            return RateDecision(limit, checked=False)
        if usage["should_limit"]:
            return RateDecision(limit, limited=True, retry_after=max(1, usage["time_left"]))
        return RateDecision(limit)


_disabled_logged = False


def _log_disabled_once() -> None:
    global _disabled_logged
    if not _disabled_logged:
        _disabled_logged = True
        logger.error(
            "rate limit disabled: RATELIMIT_ENABLE is False, so no callback is counted (check oot_ingest.E001)"
        )


_unavailable_lock = threading.Lock()
_unavailable_count = 0
_unavailable_warned_at = -1e9


def rate_limit_unavailable_count() -> int:
    """Return how many callbacks this process admitted without a rate-limit check."""
    return _unavailable_count


def _note_unavailable(repo: str, error: str) -> None:
    """Count a callback admitted unchecked, and log a warning with the process total at most once a minute."""
    global _unavailable_count, _unavailable_warned_at
    with _unavailable_lock:
        _unavailable_count += 1
        now = time.monotonic()
        warn = now - _unavailable_warned_at >= UNAVAILABLE_WARNING_INTERVAL_SECONDS
        if warn:
            _unavailable_warned_at = now
        total = _unavailable_count
    # The shared counter is in Redis as well, so it is lost while Redis is down.
    # The process counter above and the log line still record the callback.
    counters.increment("rate_limit_unavailable")
    if warn:
        logger.warning(
            "rate limit not checked, callback admitted repo=%s unchecked_in_process=%d error=%s", repo, total, error
        )


def allowlist_body() -> tuple[bytes, str]:
    """Return the JSON body of GET /api/oot/allowlist and its strong ETag, cached with the policy snapshot."""
    snapshot = current_policy()
    if not snapshot.allowlist_json:
        document = allowlist_document(snapshot.allowlist.values())
        body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        snapshot.allowlist_json[:] = [body, etag]
    body, etag = snapshot.allowlist_json
    return body, etag
