from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from replicator import clickhouse
from replicator.reconcile import reconcile_since


class Command(BaseCommand):
    help = "Scan DynamoDB and upsert completed records into ClickHouse (all, or those updated since a time)."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="ISO 8601 time; only records updated at or after it")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be upserted, write nothing")

    def handle(self, *args, **options):
        since = None
        if options["since"]:
            try:
                since = datetime.fromisoformat(options["since"].replace("Z", "+00:00"))
            except ValueError:
                raise CommandError(f"--since {options['since']!r} is not an ISO 8601 time") from None
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
        try:
            scanned, upserted = reconcile_since(since, dry_run=options["dry_run"])
        except clickhouse.ClickHouseBusy as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"scanned {scanned} items, upserted {upserted} completed records")
