"""WSGI entry point. In embedded mode this process also owns chdb and runs the replicator."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hud.settings")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - needs the configured app

if settings.REPLICATOR_EMBEDDED:
    from replicator import embedded  # noqa: E402

    embedded.start()
