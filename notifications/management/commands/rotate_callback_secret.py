"""Make or replace an API client's callback signing secret and print it (last line): the only time it is shown."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from changes.models import ApiClient
from notifications.secrets import callback_secret_rotate


class Command(BaseCommand):
    help = "Rotate the HMAC secret an API client's callbacks are signed with; prints the new secret (last line)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("name", help="The API client's user name.")

    def handle(self, *args, name: str, **options) -> None:
        client = ApiClient.objects.select_related("user").filter(user__username=name).first()
        if client is None:
            raise CommandError(f"no API client named {name!r}")
        secret = callback_secret_rotate(client, actor="system:rotate_callback_secret")
        self.stdout.write(f"New callback secret for {name} (the previous one no longer verifies):")
        self.stdout.write(secret)
