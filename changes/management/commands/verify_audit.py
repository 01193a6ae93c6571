"""Verify the audit hash chain; exit non-zero naming the first bad event. With --anchors, check it against the
anchors written outside the database (changes/anchors.py)."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from changes import anchors, audit


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain (and optionally that a given head hash is on it, or its anchors)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--head", help="A chain head printed in a report: it must be on the intact chain.")
        parser.add_argument(
            "--anchors", nargs="?", const="", metavar="FILE",
            help="Check the chain against the anchors in this JSON-lines file (a copy of the anchor sink, or a "
                 "syslog extract); without FILE, the configured EXMAINT_AUDIT_ANCHOR_FILE.")
        parser.add_argument(
            "--tsa-roots", metavar="PEM",
            help="Trust roots for the anchors' RFC 3161 tokens (default: EXMAINT_TSA_ROOTS); without any, tokens "
                 "are not checked.")

    def handle(self, *args, head: str | None = None, anchors: str | None = None, tsa_roots: str | None = None,
               **options) -> None:
        if anchors is not None:
            self._check_anchors(anchors or settings.EXMAINT_AUDIT_ANCHORS["FILE"],
                                tsa_roots or settings.EXMAINT_AUDIT_ANCHORS["TSA_ROOTS"])
        result = audit.verify(head)
        if not result.ok:
            where = f" at event #{result.first_bad_seq}" if result.first_bad_seq else ""
            raise CommandError(
                f"audit chain BROKEN{where}: {result.problem} ({result.events} events verified before it)"
            )
        self.stdout.write(f"audit chain ok: {result.events} events, head {result.head}")
        if head:
            self.stdout.write(f"head {head} is on the chain")

    def _check_anchors(self, path: str, roots_path: str) -> None:
        if not path:
            raise CommandError("no anchor file: pass --anchors FILE or set EXMAINT_AUDIT_ANCHOR_FILE")
        try:
            lines = anchors.read_anchor_file(path)
            roots = anchors.load_trust_roots(roots_path) if roots_path else None
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        result = anchors.verify_anchors(lines, trust_roots=roots)
        for note in result.notes:
            self.stderr.write(f"note: {note}")
        if not result.ok:
            good = f"#{result.last_good_seq}" if result.last_good_seq else "none"
            raise CommandError(
                f"audit chain BROKEN against its anchors: {result.problem}. Last good anchor: {good}; events from "
                f"#{result.first_bad_seq} on cannot be trusted")
        tokens = f", {result.tokens_checked} TSA token(s) verified" if result.tokens_checked else ""
        if result.tokens_unchecked:
            tokens += f", {result.tokens_unchecked} TSA token(s) not checked (no --tsa-roots)"
        self.stdout.write(f"anchors ok: {result.anchors} anchor(s) in {path}, the last at #{result.last_good_seq}"
                          f"{tokens}; {result.unanchored} event(s) after it not anchored yet")
