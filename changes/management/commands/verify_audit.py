"""Verify the audit hash chain; exit non-zero naming the first bad event."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from changes import audit


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain (and optionally that a given head hash is on it)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--head", help="A chain head printed in a report: it must be on the intact chain.")

    def handle(self, *args, head: str | None = None, **options) -> None:
        result = audit.verify(head)
        if not result.ok:
            where = f" at event #{result.first_bad_seq}" if result.first_bad_seq else ""
            raise CommandError(
                f"audit chain BROKEN{where}: {result.problem} ({result.events} events verified before it)"
            )
        self.stdout.write(f"audit chain ok: {result.events} events, head {result.head}")
        if head:
            self.stdout.write(f"head {head} is on the chain")
