"""Policy that maintainers manage in admin: the allowlist, rate limits, relay tokens.

Records themselves live in DynamoDB, never here: accepting a callback writes
no SQL row (a rejected one writes a log entry).
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from oot_ingest.vocabulary import LEVELS


class AllowlistEntry(models.Model):
    """A downstream repository allowed to report, at a level from L1 to L4."""

    class Provenance(models.TextChoices):
        OFF = "off", "off"
        WARN = "warn", "warn (log and count)"
        ENFORCE = "enforce", "enforce (reject)"

    repository = models.CharField(max_length=201, help_text="owner/repo, matched case-insensitively")
    level = models.CharField(max_length=2, choices=[(level, level) for level in LEVELS])
    device = models.CharField(max_length=100, blank=True, help_text="Device name; required for L3, empty otherwise")
    oncalls = models.CharField(max_length=500, blank=True, help_text="Comma-separated oncall handles")
    enabled = models.BooleanField(default=True)
    notes = models.TextField(blank=True)
    not_reporting_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Mark the backend 'not reporting' after this many hours without a callback (empty: the default)",
    )
    provenance = models.CharField(
        max_length=8,
        choices=Provenance.choices,
        default=Provenance.OFF,
        help_text="How callback_token is checked for this backend",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["level", "repository"]
        verbose_name_plural = "allowlist entries"
        constraints = [
            models.UniqueConstraint(Lower("repository"), name="allowlist_repository_unique_ci"),
        ]

    def __str__(self) -> str:
        return f"{self.repository} ({self.level})"

    @property
    def oncall_list(self) -> list[str]:
        return [handle.strip() for handle in self.oncalls.split(",") if handle.strip()]

    @property
    def stale_after_hours(self) -> int:
        return self.not_reporting_hours or settings.OOT_NOT_REPORTING_HOURS


class RateLimit(models.Model):
    """Callbacks a minute one repository may send; repositories without one get the default."""

    repository = models.CharField(max_length=201, help_text="owner/repo, matched case-insensitively")
    per_minute = models.PositiveIntegerField(default=100)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["repository"]
        constraints = [
            models.UniqueConstraint(Lower("repository"), name="ratelimit_repository_unique_ci"),
        ]

    def __str__(self) -> str:
        return f"{self.repository}: {self.per_minute}/min"


def token_digest(token: str) -> str:
    """Return the SHA-256 hex digest of a relay token.

    Tokens are 256-bit random strings, so a fast hash is enough: there is no
    password to guess, and the digest is looked up on every callback.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class RelayToken(models.Model):
    """A named credential for a relay; only its SHA-256 digest is stored."""

    name = models.CharField(max_length=100, unique=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, name: str) -> tuple["RelayToken", str]:
        """Create a token and return it with its plain text, which is never stored."""
        plain = secrets.token_urlsafe(32)
        return cls.objects.create(name=name, digest=token_digest(plain)), plain

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])


class RejectedRequest(models.Model):
    """One rejected callback: when, from which repository, and why."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    repository = models.CharField(max_length=201, blank=True, db_index=True)
    delivery_id = models.CharField(max_length=256, blank=True)
    status_code = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=500)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.status_code} {self.repository or '-'}: {self.reason}"
