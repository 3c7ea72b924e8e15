"""System checks that keep the callback rate limit from being turned off without a word.

Django runs them with manage.py commands such as `check`, `migrate` and
`runserver`, and an error stops those commands. The warning only prints.
The web server (granian) runs no system checks, so oot_ingest.policy also logs
a disabled rate limit on the first callback.
"""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from oot_ingest.models import MAX_PER_MINUTE

SHARED_CACHE_HINT = "Point RATELIMIT_USE_CACHE at a Redis cache shared by every server process, such as 'default'."


@register(Tags.security)
def check_rate_limit_settings(app_configs=None, **kwargs) -> list:
    """Report a disabled rate limit, an invalid default limit and a cache that cannot count callbacks."""
    problems = []
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        problems.append(
            Error(
                "RATELIMIT_ENABLE is False, so callbacks are never rate limited.",
                hint="Remove the setting. To let more callbacks through, raise OOT_DEFAULT_RATE_LIMIT "
                "or a repository's limit in admin.",
                id="oot_ingest.E001",
            )
        )

    default_limit = getattr(settings, "OOT_DEFAULT_RATE_LIMIT", None)
    valid_limit = isinstance(default_limit, int) and not isinstance(default_limit, bool)
    if not valid_limit or not 1 <= default_limit <= MAX_PER_MINUTE:
        problems.append(
            Error(
                f"OOT_DEFAULT_RATE_LIMIT={default_limit!r} is not a whole number of callbacks a minute "
                f"between 1 and {MAX_PER_MINUTE}.",
                hint="Set OOT_DEFAULT_RATE_LIMIT to an integer such as 100.",
                id="oot_ingest.E002",
            )
        )

    cache_name = getattr(settings, "RATELIMIT_USE_CACHE", "default")
    cache_config = settings.CACHES.get(cache_name)
    if cache_config is None:
        problems.append(
            Error(
                f"RATELIMIT_USE_CACHE names the cache {cache_name!r}, which CACHES does not define.",
                hint=SHARED_CACHE_HINT,
                id="oot_ingest.E003",
            )
        )
        return problems

    backend = cache_config.get("BACKEND", "")
    if backend.endswith("DummyCache"):
        problems.append(
            Error(
                f"The rate-limit cache {cache_name!r} is a DummyCache, which stores nothing, so no repository "
                "is ever over its limit.",
                hint=SHARED_CACHE_HINT,
                id="oot_ingest.E004",
            )
        )
    elif backend.endswith("LocMemCache"):
        problems.append(
            Warning(
                f"The rate-limit cache {cache_name!r} is a LocMemCache, so each server process counts on its own "
                "and a repository may send its limit once per process.",
                hint=SHARED_CACHE_HINT,
                id="oot_ingest.W001",
            )
        )
    return problems
