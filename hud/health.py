"""Endpoints for load balancers and scrapers: /healthz, /readyz and /metrics."""

import logging

from botocore.exceptions import BotoCoreError, ClientError
from clickhouse_connect.driver.exceptions import ClickHouseError
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from redis.exceptions import RedisError

from oot_ingest import counters, dynamo
from replicator import clickhouse, rollup
from replicator import status as replication_status

logger = logging.getLogger(__name__)


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
    try:
        return replication_status.snapshot()
    except DatabaseError as error:
        logger.warning("replication status unreadable: %s", error)
        return {"last_success_at": None, "error": "replication status unreadable"}


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
    if "error" not in replication:
        lines.extend(replication_status.prometheus_lines(replication))
    lines.extend(_rollup_lines())
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")


def _rollup_lines() -> list[str]:
    """Return the Prometheus lines of the rollup backlog, or none when ClickHouse cannot be read."""
    try:
        folded_until, queued = rollup.backlog()
    except (ClickHouseError, clickhouse.ClickHouseBusy, OSError) as error:
        logger.warning("rollup backlog unreadable: %s", str(error)[:300])
        return []
    lines = [
        "# HELP oot_rollup_queued_rows Rows inserted into ClickHouse and not yet folded into the page rollups.",
        "# TYPE oot_rollup_queued_rows gauge",
        f"oot_rollup_queued_rows {queued}",
    ]
    if folded_until is not None:
        lines += [
            "# HELP oot_rollup_folded_until_seconds Unix time up to which queued rows are folded into the rollups.",
            "# TYPE oot_rollup_folded_until_seconds gauge",
            f"oot_rollup_folded_until_seconds {folded_until:.3f}",
        ]
    return lines
