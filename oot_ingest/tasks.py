"""Celery tasks of the ingestion app, scheduled by beat (see hud/celery.py)."""

from celery import shared_task

from oot_ingest import sweeper


@shared_task(name="oot_ingest.sweep_orphans", ignore_result=True, acks_late=True)
def sweep_orphans() -> int:
    """Complete orphaned in_progress records as timed_out; return how many were completed."""
    stats = sweeper.run_locked()
    return stats.swept if stats else 0
