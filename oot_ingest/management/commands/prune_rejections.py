import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from oot_ingest.models import RejectedRequest


class Command(BaseCommand):
    help = (
        "Delete rejection log entries older than the retention period "
        "(OOT_REJECTION_RETENTION_DAYS unless --days is given), in batches."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep entries from this many days; default OOT_REJECTION_RETENTION_DAYS",
        )
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows deleted per statement (default 1000)")
        parser.add_argument(
            "--sleep", type=float, default=0.0, help="Seconds to pause between batches, to spare the database"
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted and delete nothing")

    def handle(self, *args, **options):
        days = options["days"] if options["days"] is not None else settings.OOT_REJECTION_RETENTION_DAYS
        if days < 1:
            raise CommandError(f"--days must be at least 1, got {days}")
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1, got {options['batch_size']}")
        if options["sleep"] < 0:
            raise CommandError(f"--sleep must not be negative, got {options['sleep']}")

        cutoff = timezone.now() - timedelta(days=days)
        expired = RejectedRequest.objects.filter(created_at__lt=cutoff)
        if options["dry_run"]:
            self.stdout.write(
                f"would delete {expired.count()} rejection log entries older than {cutoff:%Y-%m-%d %H:%M} UTC"
            )
            return

        deleted = 0
        while True:
            # Deleting by primary key in bounded batches keeps each transaction short.
            batch = list(expired.order_by("pk").values_list("pk", flat=True)[: options["batch_size"]])
            if not batch:
                break
            deleted += RejectedRequest.objects.filter(pk__in=batch).delete()[0]
            if options["sleep"] and len(batch) == options["batch_size"]:
                time.sleep(options["sleep"])
        self.stdout.write(f"deleted {deleted} rejection log entries older than {cutoff:%Y-%m-%d %H:%M} UTC")
