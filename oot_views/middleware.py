"""Response headers for every page and endpoint: Content-Security-Policy and Server-Timing."""

import time

from oot_views.queries import take_timing

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
