import json
import time
import urllib.request
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Wait until the running service's replicator has caught up: a run that started after this command "
        "read no new stream records. Asks the service's /readyz, so it works while the service owns chdb."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL of the running service")
        parser.add_argument("--timeout", type=float, default=120, help="Seconds to wait before giving up")

    def handle(self, *args, **options):
        since = datetime.now(UTC)
        deadline = time.monotonic() + options["timeout"]
        started = time.monotonic()
        while time.monotonic() < deadline:
            replication = self._replication(options["url"])
            last_success = replication.get("last_success_at")
            if (
                last_success
                and datetime.fromisoformat(last_success) > since
                and replication.get("last_run_records") == 0
            ):
                self.stdout.write(f"replication caught up after {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.2)
        raise CommandError(f"replication did not catch up within {options['timeout']:.0f} s; see the service log")

    def _replication(self, base_url: str) -> dict:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as response:
                return json.load(response).get("replication", {})
        except urllib.error.HTTPError as error:
            return json.load(error).get("replication", {})
        except OSError:
            return {}
