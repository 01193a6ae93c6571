"""Create an integration identity (or a person) with roles and print its API token, once, as the last line."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from changes import audit, events, tokens
from changes.models import ApiClient, Role


class Command(BaseCommand):
    help = "Create an API client with one or more roles and print its token (last line of the output)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("name")
        parser.add_argument("--role", action="append", required=True, choices=Role.values, dest="roles")
        parser.add_argument("--source", default="", help="Source system whose changes a requester may read.")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="Also allow Django admin login (set a password).")
        parser.add_argument("--days", type=int, default=None,
                            help="Days the token is valid (default EXMAINT_API_TOKEN_DAYS).")

    def handle(self, *args, name: str, roles: list[str], source: str, email: str, staff: bool, days: int | None,
               **options) -> None:
        User = get_user_model()  # noqa: N806 - Django idiom
        if Role.REQUESTER in roles and not source:
            raise CommandError("a requester posts changes for one source system: give --source")
        if User.objects.filter(username=name).exists():
            raise CommandError(f"an identity named {name!r} already exists")
        if days is not None and not 1 <= days <= 3650:
            raise CommandError("--days must be between 1 and 3650")
        with transaction.atomic():
            user = User.objects.create_user(username=name, email=email, is_staff=staff)
            user.groups.set(Group.objects.filter(name__in=roles))
            client = ApiClient.objects.create(user=user, source=source)
            audit.append(
                actor="system:create_api_client", action="identity.created", object_type="user", object_id=user.pk,
                changes={"username": [None, name], "roles": [None, sorted(roles)], "source": [None, source]},
            )
            # Stored hashed: this output is the only place the key ever appears.
            issued = tokens.token_issue(user, actor="system:create_api_client", days=days)
            # Apps that keep something per client make it now; notifications answers with the callback signing
            # secret, shown once (only its encrypted form is stored; `manage.py rotate_callback_secret NAME`).
            shown_once = events.emit(events.API_CLIENT_CREATED, client=client, actor="system:create_api_client")
        self.stdout.write(f"Created {name} with role(s) {', '.join(sorted(roles))}.")
        for line in shown_once:
            self.stdout.write(line)
        self.stdout.write(issued.key)
