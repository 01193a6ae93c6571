"""The mailbox users a window affects, read from Exchange (read-only): ``Get-Mailbox -Server <server>``, paged.
I/O: called by the sender, never inside a transaction.

Get-Mailbox has no continuation token over remoting, so the pages are keyed on a sorted property (Microsoft's
Get-Mailbox reference lists -SortBy and -Filter in the -Server parameter set; Alias is both a SortBy property and a
filterable one, the mailNickname): each page is ``Get-Mailbox -Server S -SortBy Alias -ResultSize <page size>``, and
every page after the first adds ``-Filter "Alias -ge '<the last alias of the previous page>'"`` (an OPATH parameter
value, never script text). Exchange evaluates both the sort and the filter in Active Directory, so they agree on the
order whatever its collation. ``-ge`` rather than ``-gt`` asks for the boundary again, so mailboxes sharing an alias
across a page boundary are not skipped; mailboxes already read are dropped by their GUID. A short page is the last.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from changes.models import Server

from . import conf

log = logging.getLogger(__name__)
SessionsFactory = Callable[[Server], Any]
PAGE_KEY = "Alias"  # one of Get-Mailbox's SortBy properties, and filterable


def _default_factory(server: Server) -> Any:
    from runner.sessions import open_sessions

    return open_sessions(server)


def _address(mailbox: dict[str, Any]) -> str:
    for key in ("PrimarySmtpAddress", "WindowsEmailAddress", "UserPrincipalName"):
        value = str(mailbox.get(key) or "").strip()
        if "@" in value:
            return value
    return ""


def _identity(mailbox: dict[str, Any]) -> str:
    """What tells two mailboxes apart when a page repeats its boundary."""
    for key in ("Guid", "ExchangeGuid", "DistinguishedName"):
        value = str(mailbox.get(key) or "")
        if value:
            return value
    return f"{mailbox.get(PAGE_KEY)}|{_address(mailbox)}"


def opath_text(value: str) -> str:
    """A text value inside an OPATH filter: single-quoted, a single quote doubled (an alias may contain one)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Affected:
    """What reading the servers gave: ``addresses``; ``problems`` worth keeping on the delivery (a cap reached, a
    cmdlet's non-terminating errors); ``unreadable``: the servers whose mailboxes could not be read at all, with
    why — the dispatcher decides whether to retry or to send without their users."""

    addresses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass
class _ServerRead:
    mailboxes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    capped: bool = False
    stalled: bool = False


def _read_pages(session: Any, server: str, *, limit: int, page_size: int) -> _ServerRead:
    """Every mailbox of ``server`` page by page, up to ``limit`` (one more is read to know the cap was passed)."""
    # At least 2: a page repeats its boundary mailbox. No page larger than the cap needs.
    size = max(2, min(page_size, limit + 1))
    out = _ServerRead()
    seen: set[str] = set()
    after: str | None = None
    while True:
        parameters: dict[str, Any] = {"Server": server, "SortBy": PAGE_KEY, "ResultSize": size}
        if after is not None:
            parameters["Filter"] = f"{PAGE_KEY} -ge {opath_text(after)}"
        result = session.run("Get-Mailbox", parameters)
        out.errors.extend(e.message for e in result.errors)
        fresh = [mb for mb in result.output if _identity(mb) not in seen]
        seen.update(_identity(mb) for mb in fresh)
        out.mailboxes.extend(fresh)
        if len(out.mailboxes) > limit:
            del out.mailboxes[limit:]
            out.capped = True
            return out
        if len(result.output) < size:
            return out
        last = str(result.output[-1].get(PAGE_KEY) or "")
        if not fresh or not last:
            # A whole page of one alias already read (or no key to go on from): asking again would loop.
            out.stalled = True
            return out
        after = last


def _read(server: Server, factory: SessionsFactory, *, limit: int, page_size: int) -> _ServerRead:
    from runner.exchange.session import Endpoint

    sessions = factory(server)
    try:
        # A failure on any page fails the whole server (the dispatcher retries it): a list frozen from half the
        # pages would leave the other users uninformed for good.
        return _read_pages(sessions(Endpoint.EXCHANGE), server.name, limit=limit, page_size=page_size)
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
    page_size = int(conf.get("MAILBOX_PAGE_SIZE"))
    out = Affected()
    for server in Server.objects.filter(name__in=server_names).order_by("name"):
        try:
            read = _read(server, factory, limit=limit, page_size=page_size)
        except ExchangeSessionError as exc:
            out.unreadable[server.name] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - any other failure to read this server (logged with its traceback)
            log.exception("%s: reading the mailboxes failed", server.name)
            out.unreadable[server.name] = f"{type(exc).__name__}: {exc}"
            continue
        if read.capped:
            out.problems.append(f"{server.name}: more than {limit} mailboxes; only the first {limit} were notified")
        if read.stalled:
            out.problems.append(f"{server.name}: reading the mailboxes by {PAGE_KEY} stopped making progress after "
                                f"{len(read.mailboxes)}; the others were not notified")
        out.problems.extend(f"{server.name}: {message}" for message in read.errors)
        out.addresses.extend(a for a in (_address(mb) for mb in read.mailboxes) if a)
    return out
