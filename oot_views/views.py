"""HTML pages and their JSON twins. Each view parses filters, calls one builder in
`pages`, and renders; a ClickHouse or DynamoDB failure becomes an error state."""

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from oot_ingest.dynamo import DynamoUnavailable
from oot_views import pages
from oot_views.queries import QueryFailed

logger = logging.getLogger(__name__)

UNAVAILABLE = "Results are temporarily unavailable: the results store did not answer in time. Try again shortly."


def _build(builder: Callable[[], dict]) -> tuple[dict | None, str | None]:
    try:
        return builder(), None
    except (QueryFailed, DynamoUnavailable) as error:
        logger.warning("page data unavailable: %s", error)
        return None, UNAVAILABLE


DAY_CHOICES = [(1, "24h"), (7, "7d"), (30, "30d")]


def _page(request: HttpRequest, template: str, builder: Callable[[], dict], extra: dict) -> HttpResponse:
    data, error = _build(builder)
    context = {
        **extra,
        "data": data,
        "error": error,
        "day_choices": DAY_CHOICES,
        "event_choices": list(pages.EVENT_CHOICES.items()),
    }
    return render(request, template, context, status=503 if error else 200)


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items() if key != "entry"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _json(builder: Callable[[], dict]) -> JsonResponse:
    data, error = _build(builder)
    if error:
        return JsonResponse({"ok": False, "error": error}, status=503)
    return JsonResponse({"ok": True, **_jsonable(data)})


def _page_number(request: HttpRequest) -> int:
    raw = request.GET.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 10_000 else 1


def summary_page(request: HttpRequest) -> HttpResponse:
    filters = pages.parse_filters(request.GET)
    return _page(request, "oot/summary.html", lambda: pages.summary(filters), {"filters": filters})


def summary_json(request: HttpRequest) -> JsonResponse:
    filters = pages.parse_filters(request.GET)
    return _json(lambda: pages.summary(filters))


def backend_page(request: HttpRequest, org: str, repo: str) -> HttpResponse:
    filters = pages.parse_filters(request.GET)
    page = _page_number(request)
    return _page(
        request,
        "oot/backend.html",
        lambda: pages.backend(f"{org}/{repo}", filters, page),
        {"filters": filters, "repo": f"{org}/{repo}"},
    )


def backend_json(request: HttpRequest, org: str, repo: str) -> JsonResponse:
    filters = pages.parse_filters(request.GET)
    page = _page_number(request)
    return _json(lambda: pages.backend(f"{org}/{repo}", filters, page))


def pr_page(request: HttpRequest, number: int) -> HttpResponse:
    return _page(request, "oot/pr.html", lambda: pages.pr_results(number), {"number": number})


def pr_json(request: HttpRequest, number: int) -> JsonResponse:
    return _json(lambda: pages.pr_results(number))


def metrics_page(request: HttpRequest) -> HttpResponse:
    filters = pages.parse_filters(request.GET)
    return _page(request, "oot/metrics.html", lambda: pages.metrics(filters), {"filters": filters})
