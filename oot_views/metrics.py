"""The data behind /oot/metrics: results over time per backend and the service's own health.

Backend series come from oot_success_rate (pass rate, failures, runs, queue
and execution times of the chosen event type). The service figures combine
that query's record counts and ingestion latency (all event types), the
per-hour callback counters in Redis (volume and API error rate), and the
replicator's status in Django's database.
"""

from datetime import UTC, datetime, timedelta

from oot_ingest import counters
from oot_ingest.models import AllowlistEntry
from oot_ingest.vocabulary import pass_rate_colour
from oot_views import charts, links
from oot_views.cells import as_utc, to_count, to_number
from oot_views.filters import Filters
from oot_views.pages import pass_rate
from oot_views.queries import run_query
from replicator.models import DeadLetter, ReplicatorStatus

# Callback counters named callbacks_rejected_<status> break callbacks_rejected
# down by HTTP status, so they are not callbacks of their own.
REJECTED = "callbacks_rejected"
REJECTED_BY_STATUS = "callbacks_rejected_"


def bucket_times(filters: Filters, now: datetime) -> tuple[list[datetime], bool]:
    """Return the start of every bucket in the window, hours for a 1-day window, days otherwise."""
    hourly = filters.days <= 1
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    end = now.replace(minute=0, second=0, microsecond=0)
    if not hourly:
        end = end.replace(hour=0)
    start = now - timedelta(days=filters.days)
    start = start.replace(minute=0, second=0, microsecond=0) if hourly else start.replace(hour=0, minute=0, second=0)
    start = start.replace(microsecond=0)
    times = []
    moment = start
    while moment <= end:
        times.append(moment)
        moment += step
    return times, hourly


def metrics(filters: Filters, with_charts: bool = True) -> dict:
    """Build the metrics page: per-backend series, their totals, and the service's health.

    Without `with_charts` (the JSON endpoint) the chart geometry is left out.
    """
    now = datetime.now(UTC)
    times, hourly = bucket_times(filters, now)
    index = {moment: position for position, moment in enumerate(times)}
    labels = [charts.bucket_label(moment, hourly) for moment in times]
    names = {entry.repository.lower(): entry.repository for entry in AllowlistEntry.objects.all()}

    rows = run_query("oot_success_rate", days=filters.days, event_type=filters.event_type)
    backends: dict[str, list[dict]] = {}
    overall = [_empty_point(moment) for moment in times]
    latency_bounds: list[float] = []
    latency_counts: list[int] = []
    latency_max = None
    for row in rows:
        moment = as_utc(row["bucket"])
        position = index.get(moment)
        if position is None:
            continue
        series = backends.get(row["repository_key"])
        if series is None:
            series = backends[row["repository_key"]] = [_empty_point(moment) for moment in times]
        _add_row(series[position], row)
        _add_row(overall[position], row)
        latency_bounds = [float(bound) for bound in row["latency_bounds"]]
        counts = [to_count(count) for count in row["latency_at_most"]]
        overall[position]["latency_at_most"] = _add_counts(overall[position]["latency_at_most"], counts)
        latency_counts = _add_counts(latency_counts, counts)
        row_max = to_number(row["latency_max"])
        if row_max is not None and (latency_max is None or row_max > latency_max):
            latency_max = row_max

    backend_items = []
    for key, series in sorted(backends.items()):
        _finish(series)
        if not any(point["total"] for point in series):
            continue
        repository = names.get(key, key)
        backend_items.append(_backend_item(repository, series, labels if with_charts else None))
    _finish(overall)

    return {
        "filters": filters,
        "generated_at": now,
        "bucket": "hour" if hourly else "day",
        "overall": overall,
        "overall_totals": _totals(overall),
        "overall_charts": _overall_charts(overall, labels) if with_charts else [],
        "backends": backend_items,
        "service": _service(
            filters,
            now,
            times,
            hourly,
            labels if with_charts else None,
            overall,
            latency_bounds,
            latency_counts,
            latency_max,
        ),
    }


def _empty_point(moment: datetime) -> dict:
    return {
        "time": moment,
        "total": 0,
        "successes": 0,
        "failures": 0,
        "records": 0,
        "queue_sum": 0.0,
        "queue_samples": 0,
        "execution_sum": 0.0,
        "execution_samples": 0,
        "latency_at_most": [],
    }


def _add_counts(left: list[int], right: list[int]) -> list[int]:
    return [a + b for a, b in zip(left or [0] * len(right), right, strict=True)]


def _add_row(point: dict, row: dict) -> None:
    """Add one query row to a bucket, turning averages into sums so that buckets combine exactly."""
    point["total"] += to_count(row["total"])
    point["successes"] += to_count(row["successes"])
    point["failures"] += to_count(row["failures"])
    point["records"] += to_count(row["records"])
    for name in ("queue", "execution"):
        samples = to_count(row[f"{name}_samples"])
        average = to_number(row[f"avg_{name}_seconds"])
        if samples and average is not None:
            point[f"{name}_sum"] += average * samples
            point[f"{name}_samples"] += samples


def _finish(series: list[dict]) -> None:
    for point in series:
        point["pass_rate"] = pass_rate(point["successes"], point["failures"])
        point["pass_rate_colour"] = pass_rate_colour(point["pass_rate"])
        point["avg_queue_seconds"] = point["queue_sum"] / point["queue_samples"] if point["queue_samples"] else None
        point["avg_execution_seconds"] = (
            point["execution_sum"] / point["execution_samples"] if point["execution_samples"] else None
        )


def _totals(series: list[dict]) -> dict:
    successes = sum(point["successes"] for point in series)
    failures = sum(point["failures"] for point in series)
    queue_samples = sum(point["queue_samples"] for point in series)
    execution_samples = sum(point["execution_samples"] for point in series)
    rate = pass_rate(successes, failures)
    return {
        "total": sum(point["total"] for point in series),
        "successes": successes,
        "failures": failures,
        "pass_rate": rate,
        "pass_rate_colour": pass_rate_colour(rate),
        "avg_queue_seconds": sum(point["queue_sum"] for point in series) / queue_samples if queue_samples else None,
        "avg_execution_seconds": (
            sum(point["execution_sum"] for point in series) / execution_samples if execution_samples else None
        ),
    }


def _backend_item(repository: str, series: list[dict], labels: list[str] | None) -> dict:
    item = {
        "repository": repository,
        "path": links.backend_path(repository),
        "totals": _totals(series),
        "points": series,
    }
    if labels is None:
        return item
    return {
        **item,
        "pass_rate_chart": charts.line_chart(
            "Pass rate",
            labels,
            [{"label": "pass rate", "tone": "blue", "values": [point["pass_rate"] for point in series]}],
            unit="%",
            y_max=100,
            guides=charts.PASS_RATE_GUIDES,
        ),
        "runs_chart": charts.bar_chart(
            "Runs and failures",
            labels,
            [
                {"label": "runs", "tone": "grey", "values": [point["total"] for point in series]},
                {"label": "failures", "tone": "red", "values": [point["failures"] for point in series]},
            ],
        ),
    }


def _overall_charts(overall: list[dict], labels: list[str]) -> list[dict]:
    return [
        charts.line_chart(
            "Pass rate, all backends",
            labels,
            [{"label": "pass rate", "tone": "blue", "values": [point["pass_rate"] for point in overall]}],
            unit="%",
            y_max=100,
            guides=charts.PASS_RATE_GUIDES,
        ),
        charts.bar_chart(
            "Runs and failures, all backends",
            labels,
            [
                {"label": "runs", "tone": "grey", "values": [point["total"] for point in overall]},
                {"label": "failures", "tone": "red", "values": [point["failures"] for point in overall]},
            ],
        ),
        charts.line_chart(
            "Average queue and execution time",
            labels,
            [
                {"label": "queue", "tone": "yellow", "values": [point["avg_queue_seconds"] for point in overall]},
                {
                    "label": "execution",
                    "tone": "blue",
                    "values": [point["avg_execution_seconds"] for point in overall],
                },
            ],
            unit="s",
        ),
    ]


def _percentile_bound(bounds: list[float], at_most: list[int], total: int, fraction: float) -> float | None:
    """Return the smallest bound that at least `fraction` of the records are at or under, or None if none is."""
    if not total:
        return None
    for bound, count in zip(bounds, at_most, strict=True):
        if count >= fraction * total:
            return bound
    return None


def _service(filters, now, times, hourly, labels, overall, bounds, at_most, latency_max) -> dict:
    """Build the service-health figures and charts."""
    callbacks = [{"time": moment, "handled": 0, "rejected": 0, "by_outcome": {}} for moment in times]
    position_of = {moment: position for position, moment in enumerate(times)}
    for hour, values in counters.read_hourly(now - timedelta(days=filters.days)):
        bucket = hour if hourly else hour.replace(hour=0)
        position = position_of.get(bucket)
        if position is None:
            continue
        point = callbacks[position]
        for name, value in values.items():
            if name.startswith(REJECTED_BY_STATUS):
                status = name.removeprefix(REJECTED_BY_STATUS)
                point["by_outcome"][f"rejected {status}"] = point["by_outcome"].get(f"rejected {status}", 0) + value
                continue
            point["handled"] += value
            if name == REJECTED:
                point["rejected"] += value
            else:
                outcome = name.removeprefix("callbacks_").replace("_", " ")
                point["by_outcome"][outcome] = point["by_outcome"].get(outcome, 0) + value
    for point in callbacks:
        point["error_rate"] = round(100.0 * point["rejected"] / point["handled"], 2) if point["handled"] else None

    handled = sum(point["handled"] for point in callbacks)
    rejected = sum(point["rejected"] for point in callbacks)
    outcomes: dict[str, int] = {}
    for point in callbacks:
        for name, value in point["by_outcome"].items():
            outcomes[name] = outcomes.get(name, 0) + value
    records = sum(point["records"] for point in overall)
    status = ReplicatorStatus.objects.order_by("-last_run_at").first()
    return {
        "callbacks_handled": handled,
        "callbacks_rejected": rejected,
        "error_rate": round(100.0 * rejected / handled, 2) if handled else None,
        "outcomes": dict(sorted(outcomes.items())),
        "callbacks": callbacks,
        "records": records,
        "ingestion_latency": {
            "p50_at_most_seconds": _percentile_bound(bounds, at_most, records, 0.5),
            "p95_at_most_seconds": _percentile_bound(bounds, at_most, records, 0.95),
            "max_seconds": latency_max,
            "bounds": bounds,
            "at_most": at_most,
        },
        "replication_lag_seconds": status.last_lag_seconds if status else None,
        "replication_last_success": status.last_success_at if status else None,
        "replication_last_error": status.last_error if status else "",
        "dead_letters": DeadLetter.objects.count(),
        "charts": []
        if labels is None
        else [
            charts.bar_chart(
                "Callbacks received",
                labels,
                [
                    {"label": "callbacks", "tone": "grey", "values": [point["handled"] for point in callbacks]},
                    {"label": "rejected", "tone": "red", "values": [point["rejected"] for point in callbacks]},
                ],
            ),
            charts.line_chart(
                "API error rate",
                labels,
                [{"label": "rejected", "tone": "red", "values": [point["error_rate"] for point in callbacks]}],
                unit="%",
            ),
            charts.bar_chart(
                "Records reaching ClickHouse",
                labels,
                [{"label": "records", "tone": "blue", "values": [point["records"] for point in overall]}],
            ),
            charts.line_chart(
                "Ingestion to ClickHouse, 95th percentile (at most)",
                labels,
                [
                    {
                        "label": "p95",
                        "tone": "blue",
                        "values": [
                            _percentile_bound(bounds, point["latency_at_most"], point["records"], 0.95)
                            for point in overall
                        ],
                    }
                ],
                unit="s",
            ),
        ],
    }
