from django.core.management.base import BaseCommand, CommandError

from oot_ingest.dynamo import ensure_table
from replicator import clickhouse


class Command(BaseCommand):
    help = "Create the DynamoDB table and the ClickHouse table if they do not exist (safe to repeat)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--skip-clickhouse",
            action="store_true",
            help="Create only the DynamoDB table (the service creates the ClickHouse table on start)",
        )

    def handle(self, *args, **options):
        created = ensure_table()
        self.stdout.write(f"DynamoDB table {'created' if created else 'already exists'}")
        if options["skip_clickhouse"]:
            return
        try:
            clickhouse.ensure_schema()
        except clickhouse.ClickHouseBusy as error:
            raise CommandError(str(error)) from None
        self.stdout.write("ClickHouse table ready")
