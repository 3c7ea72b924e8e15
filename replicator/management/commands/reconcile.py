from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError
from clickhouse_connect.driver.exceptions import ClickHouseError
from django.core.management.base import BaseCommand, CommandError

from replicator import clickhouse, rollup
from replicator.reconcile import BATCH_ROWS, reconcile
from replicator.runner import lock_for_fold


class Command(BaseCommand):
    help = (
        "Scan DynamoDB and upsert the completed records that ClickHouse lacks (all, or those updated since a "
        "time). Safe to repeat: a second run inserts nothing. In embedded mode the running service owns chdb, "
        "so stop it first with scripts/service stop, which leaves DynamoDB Local running."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since", help="ISO 8601 time, UTC unless it has an offset; only records updated at or after it"
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be upserted, write nothing")
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_ROWS, help=f"Rows per ClickHouse insert (default {BATCH_ROWS})"
        )

    def handle(self, *args, **options):
        since = None
        if options["since"]:
            try:
                since = datetime.fromisoformat(options["since"].replace("Z", "+00:00"))
            except ValueError:
                raise CommandError(
                    f"--since {options['since']!r} is not an ISO 8601 time; use e.g. 2026-12-04T10:00:00Z"
                ) from None
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be 1 or more, got {options['batch_size']}")
        try:
            result = reconcile(since, dry_run=options["dry_run"], batch_rows=options["batch_size"])
        except clickhouse.ClickHouseBusy as error:
            raise CommandError(str(error)) from None
        except (ClientError, BotoCoreError, ClickHouseError, OSError) as error:
            raise CommandError(f"reconcile failed: {error}; nothing after the last full batch was written") from None
        if result.upserted and not options["dry_run"]:
            self._fold_rollups()
        verb = "would upsert" if options["dry_run"] else "upserted"
        self.stdout.write(
            f"scanned {result.scanned} items, {result.completed} completed: {verb} {result.upserted}, "
            f"{result.up_to_date} already up to date, {result.dead_letters} dead letters"
        )

    def _fold_rollups(self) -> None:
        with lock_for_fold() as held:
            if not held:
                self.stdout.write("page rollups: a replication run holds the lock and folds the new rows itself")
                return
            try:
                stats = rollup.catch_up()
            except (ClickHouseError, OSError) as error:
                raise CommandError(
                    f"records reconciled, but folding them into the page rollups failed: {error}"
                ) from None
        self.stdout.write(f"page rollups folded: {stats.scopes} backends and event types in {stats.seconds:.1f} s")
