from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from oot_ingest import sweeper


class Command(BaseCommand):
    help = (
        "Complete orphaned jobs once: records still in_progress OOT_ORPHAN_HOURS after their last callback "
        "become completed with conclusion timed_out and are marked swept. Safe to run while Celery beat "
        "sweeps too, because a swept write applies only to a record that is still in_progress."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List the orphaned records without writing anything")
        parser.add_argument(
            "--hours",
            type=float,
            default=None,
            help=f"Hours without a callback after which a running job is orphaned (default OOT_ORPHAN_HOURS, "
            f"now {settings.OOT_ORPHAN_HOURS})",
        )

    def handle(self, *args, **options):
        hours = options["hours"]
        if hours is not None and hours <= 0:
            raise CommandError(f"--hours must be greater than 0, got {hours}")

        stats = sweeper.sweep_orphans(hours=hours, dry_run=options["dry_run"])

        for key in stats.keys:
            self.stdout.write(key)
        verb = "would complete" if options["dry_run"] else "completed"
        completed = stats.found if options["dry_run"] else stats.swept
        self.stdout.write(
            f"{stats.backends} backends checked, {stats.found} orphaned records found, {verb} {completed} "
            f"as timed_out, {stats.completed_meanwhile} completed meanwhile"
        )
        if stats.failed_backends:
            raise CommandError(f"DynamoDB query failed for {', '.join(stats.failed_backends)}; run the command again")
