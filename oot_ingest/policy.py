"""Who may report and how often: relay tokens, the allowlist and rate limits.

Lookups are cached in process memory for POLICY_CACHE_SECONDS, so a callback
costs no SQL query in the common case. A change made in admin clears this
process's cache at once and reaches other processes within that time.
"""

import hmac
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from oot_ingest.models import AllowlistEntry, RateLimit, RelayToken, token_digest
from oot_ingest.vocabulary import REPORTING_LEVELS

logger = logging.getLogger(__name__)

POLICY_CACHE_SECONDS = 5.0
TOKEN_LAST_USED_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class Policy:
    """A snapshot of the policy tables, keyed by lower-case repository."""

    allowlist: dict[str, AllowlistEntry]
    rate_limits: dict[str, int]
    token_digests: dict[str, int]  # digest -> RelayToken id, active tokens only
    loaded_at: float


_lock = threading.Lock()
_snapshot: Policy | None = None
_last_used_written: dict[int, float] = {}


def current_policy() -> Policy:
    global _snapshot
    snapshot = _snapshot
    if snapshot is not None and time.monotonic() - snapshot.loaded_at < POLICY_CACHE_SECONDS:
        return snapshot
    with _lock:
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
    """Compare a presented relay token with the configured ones in constant time."""
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
    _touch_token(token_id)
    return True


def _touch_token(token_id: int) -> None:
    now = time.monotonic()
    if now - _last_used_written.get(token_id, -1e9) < TOKEN_LAST_USED_INTERVAL_SECONDS:
        return
    _last_used_written[token_id] = now
    RelayToken.objects.filter(pk=token_id).update(last_used_at=timezone.now())


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
    """Return the repository's callbacks a minute: its own limit, else the default."""
    return current_policy().rate_limits.get(repo.lower(), settings.OOT_DEFAULT_RATE_LIMIT)
