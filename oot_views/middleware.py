"""Middleware of this project.

Every page and endpoint gets Content-Security-Policy and Server-Timing
headers. Django's session, authentication and message middleware run for the
pages and admin, and are skipped on the callback API.
"""

import time

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware

from oot_views.queries import take_timing

# The callback API's routes in hud/urls.py. Its views read no session, user
# or message, so the middleware below passes these requests on untouched.
INGESTION_API_PATHS = frozenset({"/api/oot/results", "/api/oot/callback-tokens", "/api/oot/allowlist"})

# Pages use only their own scripts, styles and images, and nothing inline, so
# an injected <script> or style="" attribute does nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class ContentSecurityPolicyMiddleware:
    """Set the CSP, and a Server-Timing header with the request's server time and its ClickHouse time.

    `app` is the time spent below this middleware, `clickhouse` the part of
    it spent in ClickHouse queries and `dynamodb` the part spent reading
    running jobs from DynamoDB. `cache` counts saved-query results served
    from the result cache (hits) and computed (misses).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        take_timing()
        started = time.perf_counter()
        response = self.get_response(request)
        total_ms = (time.perf_counter() - started) * 1000
        timing = take_timing()
        query_ms = timing.get("query_seconds", 0.0) * 1000
        dynamodb_ms = timing.get("dynamodb_seconds", 0.0) * 1000
        hits, misses = int(timing.get("cache_hits", 0)), int(timing.get("cache_misses", 0))
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response["Server-Timing"] = (
            f"app;dur={total_ms:.1f}, clickhouse;dur={query_ms:.1f}, dynamodb;dur={dynamodb_ms:.1f}, "
            f'cache;desc="{hits} hits, {misses} misses"'
        )
        return response


class SkipOnIngestionApiMixin:
    """Run the middleware on every request except those to INGESTION_API_PATHS, which pass on untouched."""

    def __call__(self, request):
        if request.path_info in INGESTION_API_PATHS:
            return self.get_response(request)
        return super().__call__(request)


class PageSessionMiddleware(SkipOnIngestionApiMixin, SessionMiddleware):
    """Django's SessionMiddleware for pages and admin."""


class PageAuthenticationMiddleware(SkipOnIngestionApiMixin, AuthenticationMiddleware):
    """Django's AuthenticationMiddleware for pages and admin."""


class PageMessageMiddleware(SkipOnIngestionApiMixin, MessageMiddleware):
    """Django's MessageMiddleware for pages and admin."""
