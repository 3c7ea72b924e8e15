from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from oot_ingest.allowlist import AllowlistError, export_allowlist, import_allowlist


class Command(BaseCommand):
    help = "Import or export the allowlist in the upstream .github/allowlist.yml format."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        importer = sub.add_parser("import", help="Make the allowlist match a YAML file")
        importer.add_argument("path", help="Path of the YAML file")
        importer.add_argument("--keep", action="store_true", help="Keep entries that the file does not list")
        exporter = sub.add_parser("export", help="Print the allowlist as YAML, or write it to --output")
        exporter.add_argument("--output", help="File to write instead of standard output")

    def handle(self, *args, **options):
        if options["action"] == "import":
            try:
                text = Path(options["path"]).read_text(encoding="utf-8")
            except OSError as error:
                raise CommandError(f"cannot read {options['path']}: {error}") from None
            try:
                created, updated, removed = import_allowlist(text, prune=not options["keep"])
            except AllowlistError as error:
                raise CommandError(f"{options['path']}: {error}") from None
            self.stdout.write(f"allowlist imported: {created} created, {updated} updated, {removed} removed")
            return

        text = export_allowlist()
        if options.get("output"):
            Path(options["output"]).write_text(text, encoding="utf-8")
        else:
            self.stdout.write(text, ending="")
