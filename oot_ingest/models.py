"""Policy that maintainers manage in admin: the allowlist, rate limits, relay tokens.

Records themselves live in DynamoDB, never here: accepting a callback writes
no SQL row (a rejected one writes a log entry).
"""

import hashlib
import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from oot_ingest.vocabulary import LEVELS

# GitHub's naming rules. An owner has 1-39 letters, digits or hyphens and does
# not start with a hyphen. A repository name has 1-100 letters, digits, ".",
# "-" or "_" and is not "." or "..".
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}$")
# An oncall is a GitHub handle or team, so it has no comma and no whitespace.
ONCALL_PATTERN = re.compile(r"^[^\s,]{1,100}$")

REPOSITORY_MAX_CHARS = 140
DEVICE_MAX_CHARS = 100
ONCALLS_MAX_CHARS = 500
MAX_PER_MINUTE = 1_000_000

validate_repository = RegexValidator(
    REPOSITORY_PATTERN, "Enter a GitHub repository as owner/repo, for example acme-ai/torch-npu."
)


def split_oncalls(text: str) -> list[str]:
    """Split a comma-separated oncall string into handles, dropping empty items."""
    return [handle.strip() for handle in text.split(",") if handle.strip()]


class AllowlistEntry(models.Model):
    """A downstream repository allowed to report, at a level from L1 to L4."""

    class Provenance(models.TextChoices):
        OFF = "off", "off"
        WARN = "warn", "warn (log and count)"
        ENFORCE = "enforce", "enforce (reject)"

    repository = models.CharField(
        max_length=201,
        validators=[validate_repository],
        help_text="owner/repo on GitHub, matched case-insensitively",
    )
    level = models.CharField(
        max_length=2,
        choices=[(level, level) for level in LEVELS],
        help_text="L1 is listed but may not report; L2 to L4 may report",
    )
    device = models.CharField(
        max_length=DEVICE_MAX_CHARS, blank=True, help_text="Device name; required for L3, empty otherwise"
    )
    oncalls = models.CharField(
        max_length=ONCALLS_MAX_CHARS, blank=True, help_text="Comma-separated GitHub handles, for example alice, bob"
    )
    enabled = models.BooleanField(default=True, help_text="A disabled repository's callbacks are rejected with 403")
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

    # Fields whose changes are written to PolicyChange. Notes are free text and left out.
    TRACKED_FIELDS = ("repository", "level", "device", "oncalls", "enabled", "provenance", "not_reporting_hours")

    class Meta:
        ordering = ["level", "repository"]
        verbose_name_plural = "allowlist entries"
        constraints = [
            models.UniqueConstraint(
                Lower("repository"),
                name="allowlist_repository_unique_ci",
                violation_error_message="This repository is already on the allowlist (names ignore case).",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository} ({self.level})"

    def clean(self) -> None:
        """Check the device rule and normalise the oncall list to "a, b"."""
        if self.level == "L3" and not self.device.strip():
            raise ValidationError({"device": "An L3 entry needs a device, for example xpu."})
        if self.level != "L3" and self.device:
            raise ValidationError({"device": f"Only L3 entries have a device; clear it for {self.level}."})
        self.device = self.device.strip()

        handles = split_oncalls(self.oncalls)
        invalid = [handle for handle in handles if not ONCALL_PATTERN.match(handle)]
        if invalid:
            raise ValidationError({"oncalls": f"Invalid oncall handle {invalid[0]!r}: separate handles with commas."})
        self.oncalls = ", ".join(handles)

    @property
    def oncall_list(self) -> list[str]:
        return split_oncalls(self.oncalls)

    @property
    def stale_after_hours(self) -> int:
        return self.not_reporting_hours or settings.OOT_NOT_REPORTING_HOURS


class RateLimit(models.Model):
    """Callbacks a minute one repository may send; repositories without one get OOT_DEFAULT_RATE_LIMIT."""

    repository = models.CharField(
        max_length=201,
        validators=[validate_repository],
        help_text="owner/repo on GitHub, matched case-insensitively",
    )
    per_minute = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_PER_MINUTE)],
        help_text="Callbacks accepted per repository in each fixed one-minute window; the next gets 429",
    )
    updated_at = models.DateTimeField(auto_now=True)

    TRACKED_FIELDS = ("repository", "per_minute")

    class Meta:
        ordering = ["repository"]
        constraints = [
            models.UniqueConstraint(
                Lower("repository"),
                name="ratelimit_repository_unique_ci",
                violation_error_message="This repository already has a rate limit (names ignore case).",
            ),
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

    name = models.CharField(max_length=100, unique=True, help_text="Who uses the token, for example relay-prod")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Updated at most once a minute"
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def set_new_secret(self) -> str:
        """Generate a token, store its digest on this unsaved object and return the plain text."""
        plain = secrets.token_urlsafe(32)
        self.digest = token_digest(plain)
        return plain

    @classmethod
    def issue(cls, name: str) -> tuple["RelayToken", str]:
        """Create a token and return it with its plain text, which is never stored."""
        token = cls(name=name)
        plain = token.set_new_secret()
        token.save()
        return token, plain

    def revoke(self) -> None:
        if self.revoked_at is None:
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


class PolicyChange(models.Model):
    """One change to the allowlist, a rate limit or a relay token, with who made it."""

    class Kind(models.TextChoices):
        ALLOWLIST = "allowlist", "allowlist entry"
        RATE_LIMIT = "rate_limit", "rate limit"
        RELAY_TOKEN = "relay_token", "relay token"

    class Action(models.TextChoices):
        ADDED = "added", "added"
        CHANGED = "changed", "changed"
        REMOVED = "removed", "removed"
        REVOKED = "revoked", "revoked"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="Empty for changes made by a management command",
    )
    actor = models.CharField(max_length=150, help_text="User name or command, kept when the user is deleted")
    source = models.CharField(max_length=50, help_text="admin, admin import, or the management command")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    target = models.CharField(max_length=201, db_index=True, help_text="Repository or token name")
    action = models.CharField(max_length=10, choices=Action.choices)
    field = models.CharField(max_length=50, blank=True)
    old_value = models.CharField(max_length=500, blank=True)
    new_value = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        if self.action == self.Action.CHANGED:
            return f"{self.target}: {self.field} {self.old_value!r} -> {self.new_value!r} by {self.actor}"
        return f"{self.target}: {self.action} by {self.actor}"


@dataclass(frozen=True)
class Actor:
    """The author of a policy change: a signed-in user, or a management command with user None."""

    user: object | None
    label: str
    source: str

    @classmethod
    def from_request(cls, request, source: str = "admin") -> "Actor":
        return cls(request.user, request.user.get_username(), source)


def tracked_values(obj: models.Model) -> dict[str, str]:
    """Return the tracked fields of an allowlist entry or rate limit as display strings."""
    values = {}
    for name in obj.TRACKED_FIELDS:
        value = getattr(obj, name)
        values[name] = "" if value is None else str(value)
    return values


def record_policy_change(
    actor: Actor,
    kind: str,
    target: str,
    before: dict[str, str] | None,
    after: dict[str, str] | None,
) -> list[PolicyChange]:
    """Write the difference between two tracked-value dicts to PolicyChange and return the rows.

    `before` None means the object was added and `after` None that it was
    removed. A change writes one row per field that differs.
    """
    common = {"user": actor.user, "actor": actor.label[:150], "source": actor.source[:50], "kind": kind}
    common["target"] = target[:201]
    if before is None:
        summary = ", ".join(f"{name}={value}" for name, value in (after or {}).items() if value)
        rows = [PolicyChange(action=PolicyChange.Action.ADDED, new_value=summary[:500], **common)]
    elif after is None:
        summary = ", ".join(f"{name}={value}" for name, value in before.items() if value)
        rows = [PolicyChange(action=PolicyChange.Action.REMOVED, old_value=summary[:500], **common)]
    else:
        rows = [
            PolicyChange(
                action=PolicyChange.Action.CHANGED,
                field=name,
                old_value=before.get(name, "")[:500],
                new_value=after[name][:500],
                **common,
            )
            for name in after
            if before.get(name, "") != after[name]
        ]
    return PolicyChange.objects.bulk_create(rows)


def record_token_event(actor: Actor, token_name: str, action: str) -> PolicyChange:
    """Write the creation or revocation of a relay token to PolicyChange; the token itself is never written."""
    return PolicyChange.objects.create(
        user=actor.user,
        actor=actor.label[:150],
        source=actor.source[:50],
        kind=PolicyChange.Kind.RELAY_TOKEN,
        target=token_name[:201],
        action=action,
    )
