from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from oot_ingest.models import Actor, PolicyChange, RelayToken, record_token_event

COMMAND_ACTOR = Actor(None, "manage.py relay_token", "command")


class Command(BaseCommand):
    help = "Create, revoke or list relay tokens, as the admin's Relay tokens page does."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token and print it once; only its digest is stored")
        create.add_argument("name", help="Who uses the token, for example relay-prod")
        revoke = sub.add_parser("revoke", help="Revoke a token: callbacks that send it get 401")
        revoke.add_argument("name")
        sub.add_parser("list", help="List tokens with their creation, last use and revocation times")

    def handle(self, *args, **options):
        action = options["action"]
        if action == "create":
            try:
                with transaction.atomic():
                    token, plain = RelayToken.issue(options["name"])
                    record_token_event(COMMAND_ACTOR, token.name, PolicyChange.Action.ADDED)
            except IntegrityError:
                raise CommandError(f"a relay token named {options['name']!r} already exists") from None
            self.stderr.write(f"relay token {token.name} created; copy it now, it is not shown again:")
            self.stdout.write(plain)
            return

        if action == "revoke":
            token = RelayToken.objects.filter(name=options["name"]).first()
            if token is None:
                raise CommandError(f"no relay token named {options['name']!r}")
            if not token.active:
                raise CommandError(f"relay token {token.name} was already revoked at {token.revoked_at:%Y-%m-%d %H:%M}")
            with transaction.atomic():
                token.revoke()
                record_token_event(COMMAND_ACTOR, token.name, PolicyChange.Action.REVOKED)
            self.stdout.write(f"relay token {token.name} revoked")
            return

        for token in RelayToken.objects.all():
            state = "active" if token.active else f"revoked {token.revoked_at:%Y-%m-%d %H:%M}"
            last_used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
            self.stdout.write(
                f"{token.name}\t{state}\tcreated {token.created_at:%Y-%m-%d %H:%M}\tlast used {last_used}"
            )
