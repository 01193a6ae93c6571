"""Rotate an identity's API token: a new key is printed once (the last line); the old one stops working at once."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from changes import tokens


class Command(BaseCommand):
    help = "Issue a new API token for NAME (replacing its current one) and print it as the last line."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("name")
        parser.add_argument("--days", type=int, default=None,
                            help="Days the new token is valid (default EXMAINT_API_TOKEN_DAYS).")

    def handle(self, *args, name: str, days: int | None, **options) -> None:
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise CommandError(f"no identity named {name!r}")
        if days is not None and not 1 <= days <= 3650:
            raise CommandError("--days must be between 1 and 3650")
        issued = tokens.token_issue(user, actor="system:rotate_api_token", days=days)
        self.stdout.write(f"Rotated the API token of {name}; the old one no longer works. The new one, valid until "
                          f"{issued.token.expires_at:%Y-%m-%d %H:%M} UTC, is shown once:")
        self.stdout.write(issued.key)
