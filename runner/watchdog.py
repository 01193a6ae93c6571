"""The watchdog (Celery beat): a server must never silently stay in maintenance.

Two checks (issue 4, docs/exchange-procedure.md §5.6):
- a change still ``running``/``paused`` past ``window_end`` + grace → an ``overrun`` alert;
- a server with no active change found in maintenance — ServerWideOffline not Active, MailboxServer activation
  ``Blocked`` or ``DatabaseCopyActivationDisabledAndMoveNow``, its cluster node not ``Up`` (the HealthChecker
  conditions) → a ``left_in_maintenance`` alert.
Alerts are raised once (``alert_raise`` deduplicates open ones), logged and audited; they are cleared when the
condition is gone.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from changes.models import Alert, Change, Server
from changes.run_services import alert_raise
from changes.states import ACTIVE

from . import conf
from .exchange.session import Endpoint, ExchangeSessionError

log = logging.getLogger(__name__)

ACTOR = "system:watchdog"


@dataclass
class WatchdogReport:
    overrun: list[int] = field(default_factory=list)  # change ids
    left_in_maintenance: dict[str, list[str]] = field(default_factory=dict)  # server -> findings
    unreachable: dict[str, str] = field(default_factory=dict)  # server -> error


def watchdog(*, sessions_factory: Callable[[Server], Any] | None = None, now: datetime | None = None) -> WatchdogReport:
    now = now or timezone.now()
    report = WatchdogReport()
    grace = timedelta(minutes=conf.watchdog_grace_minutes())
    active = Change.objects.filter(state__in=ACTIVE)
    for change in active.filter(window_end__lt=now - grace):
        alert_raise(Alert.Kind.OVERRUN,
                    f"{change.number} is still {change.state} {_ago(now - change.window_end)} after its window ended "
                    f"({change.window_end.isoformat()})", actor=ACTOR, change=change)
        report.overrun.append(change.pk)
    Alert.objects.filter(kind=Alert.Kind.OVERRUN, cleared_at__isnull=True).exclude(
        change__in=active.filter(window_end__lt=now - grace)).update(cleared_at=now)

    busy = set(Server.objects.filter(changes__state__in=ACTIVE).values_list("pk", flat=True))
    if sessions_factory is None:
        from .sessions import open_sessions as sessions_factory
    for server in Server.objects.exclude(pk__in=busy).order_by("name"):
        try:
            findings = maintenance_findings(server, sessions_factory)
        except Exception as exc:  # one bad server must not stop the sweep of the others
            # A server that cannot be checked may be one left in maintenance: people must know (one open alert,
            # cleared by the first sweep that can read it again).
            level = logging.WARNING if isinstance(exc, ExchangeSessionError) else logging.ERROR
            log.log(level, "watchdog: cannot check %s: %s: %s", server.name, type(exc).__name__, exc)
            report.unreachable[server.name] = str(exc)
            alert_raise(Alert.Kind.UNREACHABLE, f"{server.name} cannot be checked for maintenance mode: "
                        f"{type(exc).__name__}: {exc}", actor=ACTOR, server=server)
            continue
        Alert.objects.filter(kind=Alert.Kind.UNREACHABLE, server=server, change__isnull=True,
                             cleared_at__isnull=True).update(cleared_at=now)
        if findings:
            report.left_in_maintenance[server.name] = findings
            alert_raise(Alert.Kind.LEFT_IN_MAINTENANCE,
                        f"{server.name} is in maintenance with no running change: {'; '.join(findings)}",
                        actor=ACTOR, server=server)
        else:
            Alert.objects.filter(kind=Alert.Kind.LEFT_IN_MAINTENANCE, server=server, cleared_at__isnull=True).update(
                cleared_at=now)
    return report


def maintenance_findings(server: Server, sessions_factory: Callable[[Server], Any]) -> list[str]:
    """What shows ``server`` in maintenance (empty: it is not). Read-only cmdlets only."""
    sessions = sessions_factory(server)
    try:
        findings = []
        exchange = sessions(Endpoint.EXCHANGE)
        swo = _answer(exchange.run("Get-ServerComponentState",
                                   {"Identity": server.name, "Component": "ServerWideOffline"},
                                   endpoint=Endpoint.EXCHANGE))
        for obj in swo.output:
            if str(obj.get("State")) != "Active":
                findings.append(f"ServerWideOffline is {obj.get('State')}")
        mailbox = _answer(exchange.run("Get-MailboxServer", {"Identity": server.name}, endpoint=Endpoint.EXCHANGE))
        for obj in mailbox.output:
            if str(obj.get("DatabaseCopyAutoActivationPolicy")) == "Blocked":
                findings.append("DatabaseCopyAutoActivationPolicy is Blocked")
            if obj.get("DatabaseCopyActivationDisabledAndMoveNow") in (True, "True", "true"):
                findings.append("DatabaseCopyActivationDisabledAndMoveNow is True")
        if server.dag_name:
            nodes = _answer(sessions(Endpoint.DEFAULT).run("Get-ClusterNode", {"Name": server.name},
                                                           endpoint=Endpoint.DEFAULT))
            for obj in nodes.output:
                if str(obj.get("State")) != "Up":
                    findings.append(f"cluster node is {obj.get('State')}")
        return findings
    finally:
        sessions.close()


class CannotCheck(ExchangeSessionError):
    """A read answered with error records or nothing at all: no evidence either way."""


def _answer(result: Any) -> Any:
    # "Couldn't be found" arrives as a non-terminating error with no output; treating that as "not in maintenance"
    # would clear a real alert.
    if result.errors or not result.output:
        why = result.errors[0].message if result.errors else "no object returned"
        raise CannotCheck(f"{result.cmdlet}: {why}")
    return result


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
