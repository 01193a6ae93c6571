"""``manage.py check_server EX01 [EX02 ...] [--json]``: try a server's two endpoints the way the runner will and
print what an administrator needs to fix a connection (runner/server_check.py). Runs no mutating command.
Exits 1 when an endpoint could not be used."""
from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from changes.models import Server
from runner.server_check import check_server


class Command(BaseCommand):
    help = "Check the connection to Exchange servers (DNS, Kerberos SPN and mechanism, TLS, version, clock)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("servers", nargs="+", help="Server names from the inventory, e.g. EX01")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        reports = []
        for name in options["servers"]:
            server = Server.objects.filter(name__iexact=name).first()
            if server is None:
                raise CommandError(f"no server named {name} in the inventory")
            reports.append(check_server(server))
        if options["json"]:
            self.stdout.write(json.dumps([r.as_dict() for r in reports], indent=2))
        else:
            for report in reports:
                for line in report.lines():
                    self.stdout.write(line)
        if not all(r.ok for r in reports):
            raise CommandError("some endpoints could not be used (see above)")
