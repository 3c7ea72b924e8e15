"""Replication figures for operators: run statistics, failure logging and the Prometheus lines for /metrics."""

import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from replicator.models import DeadLetter, ReplicatorStatus, StreamGap

if TYPE_CHECKING:
    from replicator.stream import RunStats

logger = logging.getLogger(__name__)

# Replication is "behind" when the last successful run is older than this.
MAX_SUCCESS_AGE_SECONDS = 120
# While runs keep failing, one log line per this many seconds (the first failure logs its traceback).
FAILURE_LOG_INTERVAL_SECONDS = 60.0


class _FailureLog:
    """Failure logging that writes the first failed run in full, then one line with the count per interval."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.logged_at = 0.0

    def failed(self, stream_arn: str | None, error: str) -> None:
        with self._lock:
            self.failures += 1
            failures = self.failures
            due = failures == 1 or time.monotonic() - self.logged_at >= FAILURE_LOG_INTERVAL_SECONDS
            if due:
                self.logged_at = time.monotonic()
        if failures == 1:
            logger.exception("replication run failed stream=%s error=%s; retrying next run", stream_arn, error)
        elif due:
            logger.error(
                "replication runs keep failing stream=%s failures=%s error=%s; retrying every run",
                stream_arn,
                failures,
                error,
            )

    def succeeded(self, stream_arn: str) -> None:
        with self._lock:
            failures, self.failures = self.failures, 0
        if failures:
            logger.info("replication recovered stream=%s after %s failed runs", stream_arn, failures)


failure_log = _FailureLog()


def record_success(stream_arn: str, stats: "RunStats") -> None:
    now = timezone.now()
    status, _ = ReplicatorStatus.objects.get_or_create(stream_arn=stream_arn)
    status.last_run_at = now
    status.last_success_at = now
    status.consecutive_failures = 0
    status.last_run_records = stats.records_read
    status.last_run_rows = stats.rows_inserted
    status.last_run_seconds = round(stats.seconds, 3)
    status.last_lag_seconds = round(stats.max_lag_seconds, 3) if stats.max_lag_seconds is not None else 0.0
    status.caught_up = stats.caught_up
    status.total_records += stats.records_read
    status.total_rows += stats.rows_inserted
    status.save()
    failure_log.succeeded(stream_arn)
    if stats.records_read:
        logger.info(
            "replication run stream=%s records=%s rows=%s dead_letters=%s lag=%.1fs read=%.2fs write=%.2fs",
            stream_arn,
            stats.records_read,
            stats.rows_inserted,
            stats.dead_letters,
            stats.max_lag_seconds or 0.0,
            stats.read_seconds,
            stats.write_seconds,
        )


def record_failure(stream_arn: str | None, error: str) -> None:
    """Log a failed run (repeats rate-limited) and store it on the stream's status, or the latest one."""
    failure_log.failed(stream_arn, error)
    if stream_arn:
        status, _ = ReplicatorStatus.objects.get_or_create(stream_arn=stream_arn)
    else:
        status = ReplicatorStatus.objects.order_by("-last_run_at").first()
        if status is None:
            return
    now = timezone.now()
    status.last_run_at = now
    status.last_error = error[:2000]
    status.last_error_at = now
    status.consecutive_failures += 1
    status.failed_runs += 1
    status.save()


def latest_status() -> ReplicatorStatus | None:
    return ReplicatorStatus.objects.order_by("-last_run_at").first()


def snapshot() -> dict:
    """Return the replication figures for /readyz and /metrics (None where no run has succeeded yet)."""
    status = latest_status()
    last_success = status.last_success_at if status else None
    age = (timezone.now() - last_success).total_seconds() if last_success else None
    return {
        "stream_arn": status.stream_arn if status else None,
        "last_success_at": last_success.isoformat() if last_success else None,
        "age_seconds": round(age, 1) if age is not None else None,
        "behind": age is None or age > MAX_SUCCESS_AGE_SECONDS,
        "lag_seconds": status.last_lag_seconds if status else None,
        "caught_up": status.caught_up if status else False,
        "last_run_records": status.last_run_records if status and last_success else None,
        "last_run_rows": status.last_run_rows if status else 0,
        "last_run_seconds": status.last_run_seconds if status else 0.0,
        "total_records": status.total_records if status else 0,
        "total_rows": status.total_rows if status else 0,
        "consecutive_failures": status.consecutive_failures if status else 0,
        "failed_runs": status.failed_runs if status else 0,
        "last_error": status.last_error if status else "",
        "dead_letters": DeadLetter.objects.count(),
        "open_gaps": StreamGap.objects.filter(reconciled_at__isnull=True).count(),
    }


def prometheus_lines(figures: dict | None = None) -> list[str]:
    """Return the replication metrics in Prometheus text format."""
    figures = figures or snapshot()
    age = figures["age_seconds"]
    metrics = [
        (
            "oot_replication_lag_seconds",
            "gauge",
            "Longest write-to-insert time of the last run's stream records; 0 when it found nothing new.",
            figures["lag_seconds"] or 0,
        ),
        (
            "oot_replication_last_success_age_seconds",
            "gauge",
            "Seconds since the last successful run; -1 before the first.",
            age if age is not None else -1,
        ),
        (
            "oot_replication_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful run; 0 before the first.",
            _unix_time(figures["last_success_at"]),
        ),
        (
            "oot_replication_caught_up",
            "gauge",
            "1 when the last run read every shard to its end or tip.",
            int(figures["caught_up"]),
        ),
        (
            "oot_replication_records_last_run",
            "gauge",
            "Stream records read by the last run.",
            figures["last_run_records"] or 0,
        ),
        (
            "oot_replication_rows_last_run",
            "gauge",
            "Rows inserted into ClickHouse by the last run.",
            figures["last_run_rows"],
        ),
        ("oot_replication_run_seconds", "gauge", "Duration of the last run.", figures["last_run_seconds"]),
        ("oot_replication_records_total", "counter", "Stream records read in all runs.", figures["total_records"]),
        ("oot_replication_rows_total", "counter", "Rows inserted into ClickHouse in all runs.", figures["total_rows"]),
        ("oot_replication_failed_runs_total", "counter", "Runs that failed.", figures["failed_runs"]),
        (
            "oot_replication_consecutive_failures",
            "gauge",
            "Runs failed since the last success.",
            figures["consecutive_failures"],
        ),
        ("oot_dead_letters", "gauge", "Records that could not be converted (see admin).", figures["dead_letters"]),
        ("oot_replication_open_gaps", "gauge", "Trimmed stream stretches not yet reconciled.", figures["open_gaps"]),
    ]
    lines = []
    for name, kind, help_text, value in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value}")
    return lines


def _unix_time(iso: str | None) -> float:
    if not iso:
        return 0
    return round(datetime.fromisoformat(iso).timestamp(), 3)
