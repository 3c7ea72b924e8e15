from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from oot_ingest.allowlist import COMMAND_ACTOR, AllowlistError, export_allowlist, import_allowlist


class Command(BaseCommand):
    help = "Import or export the allowlist in the upstream .github/allowlist.yml format."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        importer = sub.add_parser("import", help="Make the allowlist match a YAML file")
        importer.add_argument("path", help="Path of the YAML file")
        importer.add_argument("--keep", action="store_true", help="Keep entries that the file does not list")
        importer.add_argument(
            "--dry-run", action="store_true", help="List the repositories that would change and change nothing"
        )
        exporter = sub.add_parser("export", help="Print the allowlist as YAML, or write it to --output")
        exporter.add_argument("--output", help="File to write instead of standard output")

    def handle(self, *args, **options):
        if options["action"] == "import":
            listed = options["dry_run"] or options["verbosity"] >= 2
            self._import(options["path"], keep=options["keep"], dry_run=options["dry_run"], listed=listed)
            return

        text = export_allowlist()
        if options.get("output"):
            try:
                Path(options["output"]).write_text(text, encoding="utf-8")
            except OSError as error:
                raise CommandError(f"could not write {options['output']}: {error}") from None
        else:
            self.stdout.write(text, ending="")

    def _import(self, path: str, *, keep: bool, dry_run: bool, listed: bool) -> None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"could not read {path}: {error}") from None
        try:
            result = import_allowlist(text, prune=not keep, dry_run=dry_run, actor=COMMAND_ACTOR)
        except AllowlistError as error:
            raise CommandError(f"{path}: {error}") from None

        if listed:
            changes = (("create", result.created), ("update", result.updated), ("remove", result.removed))
            for label, repositories in changes:
                for repository in repositories:
                    self.stdout.write(f"  {label} {repository}")
        self.stdout.write(result.summary())
