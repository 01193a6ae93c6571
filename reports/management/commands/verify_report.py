"""``manage.py verify_report report.pdf --trust ca.pem``: the same offline check as ``exmaint-verify``."""
from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports import verify


class Command(BaseCommand):
    help = "Verify a report PDF offline: signature, time-stamp, embedded evidence, printed heads and figures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("report")
        parser.add_argument("--trust", action="append", required=True, metavar="PEM")
        parser.add_argument("--against", default="", metavar="URL")
        parser.add_argument("--token", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = [options["report"], *[a for pem in options["trust"] for a in ("--trust", pem)]]
        if options["against"]:
            argv += ["--against", options["against"], "--token", options["token"]]
        code = verify.main(argv)
        if code:
            sys.exit(code)
