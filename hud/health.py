"""Endpoints for load balancers and scrapers: /healthz, /readyz and /metrics."""

import logging

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from redis.exceptions import RedisError

from oot_ingest import counters, dynamo
from replicator import clickhouse
from replicator.models import DeadLetter, ReplicatorStatus

logger = logging.getLogger(__name__)

# Replication is "behind" when the last successful run is older than this.
MAX_REPLICATION_AGE_SECONDS = 120


def healthz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def _check_dynamodb() -> str | None:
    try:
        dynamo.client().describe_table(TableName=settings.DYNAMODB_TABLE)
    except (ClientError, BotoCoreError) as error:
        return str(error)
    return None


def _check_redis() -> str | None:
    try:
        counters.redis_client().ping()
    except RedisError as error:
        return str(error)
    return None


def _replication() -> dict:
    status = ReplicatorStatus.objects.order_by("-last_run_at").first()
    if status is None or status.last_success_at is None:
        return {"last_success_at": None, "age_seconds": None, "lag_seconds": None, "last_run_records": None}
    age = (timezone.now() - status.last_success_at).total_seconds()
    return {
        "last_success_at": status.last_success_at.isoformat(),
        "age_seconds": round(age, 1),
        "lag_seconds": status.last_lag_seconds,
        "last_run_records": status.last_run_records,
        "behind": age > MAX_REPLICATION_AGE_SECONDS,
    }


def readyz(_request: HttpRequest) -> JsonResponse:
    checks = {
        "dynamodb": _check_dynamodb(),
        "clickhouse": None if clickhouse.ping() else "ClickHouse query failed",
        "redis": _check_redis(),
    }
    replication = _replication()
    ready = all(error is None for error in checks.values())
    body = {
        "ok": ready,
        "checks": {name: ("ok" if error is None else error) for name, error in checks.items()},
        "replication": replication,
    }
    return JsonResponse(body, status=200 if ready else 503)


def metrics(_request: HttpRequest) -> HttpResponse:
    """Prometheus text format: callback counters, replication lag and dead letters."""
    lines = []
    values = counters.read_all()
    lines.append("# HELP oot_callbacks_total Callbacks by outcome since the counters were created.")
    lines.append("# TYPE oot_callbacks_total counter")
    for outcome in ("accepted", "duplicate", "ignored_late", "rejected"):
        lines.append(f'oot_callbacks_total{{outcome="{outcome}"}} {values.get(f"callbacks_{outcome}", 0)}')
    lines.append("# HELP oot_callbacks_rejected_total Rejected callbacks by HTTP status.")
    lines.append("# TYPE oot_callbacks_rejected_total counter")
    for name, value in sorted(values.items()):
        if name.startswith("callbacks_rejected_"):
            lines.append(f'oot_callbacks_rejected_total{{status="{name.rsplit("_", 1)[1]}"}} {value}')
    lines.append("# HELP oot_rate_limit_unavailable_total Callbacks admitted without a rate-limit check (Redis down).")
    lines.append("# TYPE oot_rate_limit_unavailable_total counter")
    lines.append(f"oot_rate_limit_unavailable_total {values.get('rate_limit_unavailable', 0)}")

    replication = _replication()
    status = ReplicatorStatus.objects.order_by("-last_run_at").first()
    lines.append("# HELP oot_replication_lag_seconds Stream record creation to ClickHouse insert, last run.")
    lines.append("# TYPE oot_replication_lag_seconds gauge")
    lines.append(f"oot_replication_lag_seconds {replication['lag_seconds'] or 0}")
    lines.append("# HELP oot_replication_last_success_age_seconds Seconds since the last successful run.")
    lines.append("# TYPE oot_replication_last_success_age_seconds gauge")
    age = replication["age_seconds"]
    lines.append(f"oot_replication_last_success_age_seconds {age if age is not None else -1}")
    lines.append("# HELP oot_replication_records_last_run Stream records read by the last run.")
    lines.append("# TYPE oot_replication_records_last_run gauge")
    lines.append(f"oot_replication_records_last_run {status.last_run_records if status else 0}")
    lines.append("# HELP oot_replication_records_total Stream records read in all runs.")
    lines.append("# TYPE oot_replication_records_total counter")
    lines.append(f"oot_replication_records_total {status.total_records if status else 0}")
    lines.append("# HELP oot_dead_letters Stream records that could not be converted.")
    lines.append("# TYPE oot_dead_letters gauge")
    lines.append(f"oot_dead_letters {DeadLetter.objects.count()}")
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")
