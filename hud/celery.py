"""The Celery app: Redis broker, beat schedule for replication and the orphan sweep."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hud.settings")

app = Celery("hud")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _schedule(sender, **_kwargs) -> None:
    from django.conf import settings

    sender.conf.beat_schedule = {
        "replicate-stream": {
            "task": "replicator.replicate_stream",
            "schedule": settings.REPLICATOR_INTERVAL_SECONDS,
            "options": {"expires": max(5.0, settings.REPLICATOR_INTERVAL_SECONDS * 5)},
        },
        "sweep-orphans": {
            "task": "oot_ingest.sweep_orphans",
            "schedule": settings.OOT_SWEEP_INTERVAL_SECONDS,
            "options": {"expires": settings.OOT_SWEEP_INTERVAL_SECONDS},
        },
    }
