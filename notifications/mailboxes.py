"""The mailbox users a window affects, read from Exchange (read-only): ``Get-Mailbox -Server <server>`` with a
ResultSize cap per server. I/O: called by the sender, never inside a transaction."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from changes.models import Server

from . import conf

log = logging.getLogger(__name__)
SessionsFactory = Callable[[Server], Any]


def _default_factory(server: Server) -> Any:
    from runner.sessions import open_sessions

    return open_sessions(server)


def _address(mailbox: dict[str, Any]) -> str:
    for key in ("PrimarySmtpAddress", "WindowsEmailAddress", "UserPrincipalName"):
        value = str(mailbox.get(key) or "").strip()
        if "@" in value:
            return value
    return ""


def affected_addresses(server_names: list[str], *, sessions_factory: SessionsFactory | None = None,
                       ) -> tuple[list[str], list[str]]:
    """(addresses, problems). A server that cannot be read is a problem, not an exception: the notice still goes
    to everyone else (a window announcement is time-sensitive); the problem is kept on the delivery."""
    from runner.exchange.session import Endpoint, ExchangeSessionError

    factory = sessions_factory or _default_factory
    limit = int(conf.get("MAILBOX_LIMIT"))
    addresses: list[str] = []
    problems: list[str] = []
    for server in Server.objects.filter(name__in=server_names).order_by("name"):
        sessions = factory(server)
        try:
            # Read-only, and capped: -ResultSize keeps a huge server from flooding the worker; more than the cap is
            # reported rather than silently cut (ask for one more to know).
            result = sessions(Endpoint.EXCHANGE).run("Get-Mailbox", {"Server": server.name, "ResultSize": limit + 1})
        except ExchangeSessionError as exc:
            problems.append(f"{server.name}: mailboxes could not be read: {exc}")
            continue
        finally:
            sessions.close()
        found = [a for a in (_address(mb) for mb in result.output) if a]
        if len(result.output) > limit:
            found = found[:limit]
            problems.append(f"{server.name}: more than {limit} mailboxes; only the first {limit} were notified")
        problems.extend(f"{server.name}: {e.message}" for e in result.errors)
        addresses.extend(found)
    return addresses, problems
