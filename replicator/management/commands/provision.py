from django.core.management.base import BaseCommand, CommandError

from oot_ingest.dynamo import ensure_table
from replicator import clickhouse, rollup
from replicator.runner import lock_for_fold


class Command(BaseCommand):
    help = "Create the DynamoDB table and the ClickHouse table if they do not exist (safe to repeat)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--skip-clickhouse",
            action="store_true",
            help="Create only the DynamoDB table (the service creates the ClickHouse table on start)",
        )
        parser.add_argument(
            "--refold-rollups",
            action="store_true",
            help="Only recompute the page rollups from every ClickHouse record (after rows were written by hand)",
        )

    def handle(self, *args, **options):
        if options["refold_rollups"]:
            # Only ClickHouse is involved, so DynamoDB Local need not be running.
            self._refold_rollups()
            return
        created = ensure_table()
        self.stdout.write(f"DynamoDB table {'created' if created else 'already exists'}")
        if options["skip_clickhouse"]:
            return
        try:
            clickhouse.ensure_schema()
        except clickhouse.ClickHouseBusy as error:
            raise CommandError(str(error)) from None
        self.stdout.write("ClickHouse table ready")

    def _refold_rollups(self) -> None:
        try:
            clickhouse.ensure_schema()
            with lock_for_fold(timeout_seconds=3600) as held:
                if not held:
                    raise CommandError(
                        "the replicator lock is taken by a replication run; run the command again in a minute"
                    )
                stats = rollup.catch_up(whole=True)
        except clickhouse.ClickHouseBusy as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"rollups refolded: {stats.scopes} backends and event types in {stats.seconds:.1f} s")
