"""Celery tasks of the replicator, scheduled by beat (see hud/celery.py)."""

from celery import shared_task
from django.db import close_old_connections

from replicator.runner import run_locked


@shared_task(name="replicator.replicate_stream", ignore_result=True, acks_late=True)
def replicate_stream() -> int:
    """Copy new completed records from the DynamoDB stream into ClickHouse; return records read.

    A second copy of the task while one runs returns 0 at once (Redis lock).
    """
    close_old_connections()
    stats = run_locked()
    return stats.records_read if stats else 0
