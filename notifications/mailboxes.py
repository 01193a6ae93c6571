"""The mailbox users a window affects, read from Exchange (read-only): ``Get-Mailbox -Server <server>`` with a
ResultSize cap per server. I/O: called by the sender, never inside a transaction."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class Affected:
    """What reading the servers gave: ``addresses``; ``problems`` worth keeping on the delivery (a cap reached, a
    cmdlet's non-terminating errors); ``unreadable``: the servers whose mailboxes could not be read at all, with
    why — the dispatcher decides whether to retry or to send without their users."""

    addresses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def _read(server: Server, factory: SessionsFactory, limit: int) -> Any:
    from runner.exchange.session import Endpoint

    sessions = factory(server)
    try:
        # Read-only, and capped: -ResultSize keeps a huge server from flooding the worker; more than the cap is
        # reported rather than silently cut (ask for one more to know).
        return sessions(Endpoint.EXCHANGE).run("Get-Mailbox", {"Server": server.name, "ResultSize": limit + 1})
    finally:
        try:
            sessions.close()
        except Exception:  # noqa: BLE001 - a failed close loses nothing already read
            log.warning("%s: closing the Exchange sessions failed", server.name, exc_info=True)


def affected_addresses(server_names: list[str], *, sessions_factory: SessionsFactory | None = None) -> Affected:
    """The affected mailbox addresses of ``server_names``. A server that cannot be read — whatever the reason:
    unreachable, refused credentials, an inventory entry that cannot be turned into a session, a password that
    cannot be decrypted — is reported in ``unreadable``, never raised, so the other servers are still read."""
    from runner.exchange.session import ExchangeSessionError

    factory = sessions_factory or _default_factory
    limit = int(conf.get("MAILBOX_LIMIT"))
    out = Affected()
    for server in Server.objects.filter(name__in=server_names).order_by("name"):
        try:
            result = _read(server, factory, limit)
        except ExchangeSessionError as exc:
            out.unreadable[server.name] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - any other failure to read this server (logged with its traceback)
            log.exception("%s: reading the mailboxes failed", server.name)
            out.unreadable[server.name] = f"{type(exc).__name__}: {exc}"
            continue
        found = [a for a in (_address(mb) for mb in result.output) if a]
        if len(result.output) > limit:
            found = found[:limit]
            out.problems.append(f"{server.name}: more than {limit} mailboxes; only the first {limit} were notified")
        out.problems.extend(f"{server.name}: {e.message}" for e in result.errors)
        out.addresses.extend(found)
    return out
