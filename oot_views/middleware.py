"""Response headers for every page: Content-Security-Policy and Server-Timing."""

import time

from oot_views.queries import take_query_seconds

# Pages use only their own scripts, styles and images; nothing inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        take_query_seconds()
        started = time.perf_counter()
        response = self.get_response(request)
        total_ms = (time.perf_counter() - started) * 1000
        query_ms = take_query_seconds() * 1000
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response["Server-Timing"] = f"app;dur={total_ms:.1f}, clickhouse;dur={query_ms:.1f}"
        return response
