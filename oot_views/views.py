"""HTML pages and their JSON twins.

Each view parses its query string, calls one builder, and renders. An invalid
parameter is a 400 that names it. A ClickHouse or DynamoDB failure or timeout
is a 503 with an error message, and the page keeps its header and filters, so
the visitor never sees a blank page or a trace.
"""

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_safe

from oot_ingest.dynamo import DynamoUnavailable
from oot_views import api, openapi, pages
from oot_views.filters import DAY_CHOICES, EVENT_LABELS, FilterError, Filters, parse_filters, parse_page
from oot_views.metrics import metrics
from oot_views.queries import QueryFailed

logger = logging.getLogger(__name__)

# GitHub PR numbers are far below this. A larger one cannot exist, and one
# above 2^64 would overflow the UInt64 query parameter.
MAX_PR_NUMBER = 10**12
UNAVAILABLE = (
    "Results are temporarily unavailable: the results store failed or did not answer in time. Try again shortly."
)


def _build(builder: Callable[[], dict]) -> tuple[dict | None, str | None]:
    try:
        return builder(), None
    except (QueryFailed, DynamoUnavailable) as error:
        logger.warning("page data unavailable: %s", error)
        return None, UNAVAILABLE


def _render(request: HttpRequest, template: str, builder: Callable[[], dict], context: dict) -> HttpResponse:
    data, error = _build(builder)
    return render(request, template, {**context, "data": data, "error": error}, status=503 if error else 200)


def _filter_context(filters: Filters | None, nav: str = "backends") -> dict:
    return {
        "nav": nav,
        "filters": filters,
        "day_choices": list(DAY_CHOICES.items()),
        "event_choices": list(EVENT_LABELS.items()),
    }


def _bad_request_page(request: HttpRequest, template: str, error: FilterError, context: dict) -> HttpResponse:
    context = {**_filter_context(None), **context, "data": None, "error": f"Invalid request: {error}."}
    return render(request, template, context, status=400)


def _json(builder: Callable[[], dict], shape: Callable[[dict], dict]) -> JsonResponse:
    data, error = _build(builder)
    if error:
        return JsonResponse({"ok": False, "error": error}, status=503)
    return JsonResponse({"ok": True, **shape(data)})


def _json_error(error: FilterError) -> JsonResponse:
    return JsonResponse({"ok": False, "error": str(error)}, status=400)


# --- /oot ---------------------------------------------------------------


@require_safe
def summary_page(request: HttpRequest) -> HttpResponse:
    try:
        filters = parse_filters(request.GET)
    except FilterError as error:
        return _bad_request_page(request, "oot/summary.html", error, {})
    return _render(request, "oot/summary.html", lambda: pages.summary(filters), _filter_context(filters))


@require_safe
def summary_json(request: HttpRequest) -> JsonResponse:
    try:
        filters = parse_filters(request.GET)
    except FilterError as error:
        return _json_error(error)
    return _json(lambda: pages.summary(filters), api.summary_json)


# --- /oot/<org>/<repo> --------------------------------------------------


@require_safe
def backend_page(request: HttpRequest, org: str, repo: str) -> HttpResponse:
    repository = f"{org}/{repo}"
    try:
        filters = parse_filters(request.GET)
        page = parse_page(request.GET)
    except FilterError as error:
        return _bad_request_page(request, "oot/backend.html", error, {"repository": repository})
    return _render(
        request,
        "oot/backend.html",
        lambda: pages.backend(repository, filters, page),
        {**_filter_context(filters), "repository": repository},
    )


@require_safe
def backend_json(request: HttpRequest, org: str, repo: str) -> JsonResponse:
    try:
        filters = parse_filters(request.GET)
        page = parse_page(request.GET)
    except FilterError as error:
        return _json_error(error)
    return _json(lambda: pages.backend(f"{org}/{repo}", filters, page), api.backend_json)


# --- /pr/<number> -------------------------------------------------------


def _check_pr_number(number: int) -> None:
    if not 0 < number <= MAX_PR_NUMBER:
        raise FilterError(f"PR number must be from 1 to {MAX_PR_NUMBER}, got {number}")


@require_safe
def pr_page(request: HttpRequest, number: int) -> HttpResponse:
    try:
        _check_pr_number(number)
    except FilterError as error:
        return _bad_request_page(request, "oot/pr.html", error, {"number": number})
    return _render(request, "oot/pr.html", lambda: pages.pr_results(number), {"number": number})


def _not_a_pr_number(raw: str) -> FilterError:
    return FilterError(f"PR number must be a whole number, got {raw[:40]!r}")


@require_safe
def pr_page_invalid(request: HttpRequest, raw: str) -> HttpResponse:
    """Return a 400 that names the problem for /pr/<anything but digits>, instead of a bare 404."""
    return _bad_request_page(request, "oot/pr.html", _not_a_pr_number(raw), {"number": raw[:40]})


@require_safe
def pr_json_invalid(_request: HttpRequest, raw: str) -> JsonResponse:
    return _json_error(_not_a_pr_number(raw))


@require_safe
def pr_lookup(request: HttpRequest) -> HttpResponse:
    """Redirect the header's PR box (?number=N) to /pr/N."""
    raw = request.GET.get("number", "").strip().lstrip("#")
    try:
        if not raw.isdigit():
            raise _not_a_pr_number(raw)
        number = int(raw)
        _check_pr_number(number)
    except FilterError as error:
        return _bad_request_page(request, "oot/pr.html", error, {"number": raw[:40]})
    return redirect("oot-pr", number=number)


@require_safe
def pr_json(request: HttpRequest, number: int) -> JsonResponse:
    try:
        _check_pr_number(number)
    except FilterError as error:
        return _json_error(error)
    return _json(lambda: pages.pr_results(number), api.pr_json)


# --- /oot/metrics -------------------------------------------------------


@require_safe
def metrics_page(request: HttpRequest) -> HttpResponse:
    try:
        filters = parse_filters(request.GET)
    except FilterError as error:
        return _bad_request_page(request, "oot/metrics.html", error, {"nav": "metrics"})
    return _render(request, "oot/metrics.html", lambda: metrics(filters), _filter_context(filters, nav="metrics"))


@require_safe
def metrics_json(request: HttpRequest) -> JsonResponse:
    try:
        filters = parse_filters(request.GET)
    except FilterError as error:
        return _json_error(error)
    return _json(lambda: metrics(filters, with_charts=False), api.metrics_json)


@require_safe
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi.document())
