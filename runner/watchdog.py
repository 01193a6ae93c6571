"""The watchdog (Celery beat): a server must never silently stay in maintenance, and a window must never stall
silently.

From the records alone (``watch_runs``, every 20 s; also part of ``watchdog``), for the running windows:
- a server the run put in maintenance and has not brought out yet, past ``window_end`` + the stall grace →
  ``past_window_end``;
- an operator's decision (start, retry/skip/abort, work-done) recorded but not taken up by a worker for a minute
  (the broker or every worker is down) → ``decision_waiting``;
- a step running past its own timeout + the stall grace while its worker still holds the lease → ``step_stalled``;
- a lease that expired a whole lease length ago and was not taken over (its worker stopped heartbeating: it died,
  or cannot reach the database, and no other worker has picked the run up) → ``worker_lost``.
Against Exchange (``watchdog``, every 5 min; issue 4, docs/exchange-procedure.md §5.6):
- a change still ``running``/``paused`` past ``window_end`` + grace → an ``overrun`` alert;
- a server with no active change found in maintenance — ServerWideOffline not Active, MailboxServer activation
  ``Blocked`` or ``DatabaseCopyActivationDisabledAndMoveNow``, its cluster node not ``Up`` (the HealthChecker
  conditions) → a ``left_in_maintenance`` alert.
Alerts are raised once per cause (``alert_raise`` deduplicates open ones of the same kind, change and server),
logged and audited; they are cleared when the condition is gone.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from changes.models import Alert, Change, Server, StepRun, WindowRun
from changes.run_services import alert_raise
from changes.states import ACTIVE, State

from . import conf
from .exchange.session import Endpoint, ExchangeSessionError
from .executor import FIRST_RETRY_DELAY
from .step_types import DEFAULT_STEP_TIMEOUT

log = logging.getLogger(__name__)

ACTOR = "system:watchdog"
# A decision the runner has not taken up after this long is reported: its message should take moments, the sweep
# behind it runs every 10 s.
DECISION_WAIT = timedelta(minutes=1)


@dataclass
class WatchdogReport:
    overrun: list[int] = field(default_factory=list)  # change ids
    left_in_maintenance: dict[str, list[str]] = field(default_factory=dict)  # server -> findings
    unreachable: dict[str, str] = field(default_factory=dict)  # server -> error
    runs: RunsReport | None = None


@dataclass
class RunsReport:
    """What ``watch_runs`` found: change ids, and (change id, server name) for the per-server alerts."""

    past_window_end: list[tuple[int, str]] = field(default_factory=list)
    decision_waiting: list[int] = field(default_factory=list)
    step_stalled: list[tuple[int, str]] = field(default_factory=list)
    worker_lost: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        return {"past_window_end": self.past_window_end, "decision_waiting": self.decision_waiting,
                "step_stalled": self.step_stalled, "worker_lost": self.worker_lost}


def watch_runs(*, now: datetime | None = None) -> RunsReport:
    """The checks that need only the database, for the windows that run now (servers of an active change are
    skipped by the Exchange checks below, not here)."""
    now = now or timezone.now()
    report = RunsReport()
    grace = timedelta(seconds=conf.stall_grace_seconds())
    runs = list(WindowRun.objects.filter(change__state__in=ACTIVE, finished_at__isnull=True)
                .select_related("change"))
    raised: dict[str, set[tuple[int, int | None]]] = {kind: set() for kind in _RUN_KINDS}

    def alert(kind: str, message: str, change: Change, server: Server | None = None) -> None:
        alert_raise(kind, message, actor=ACTOR, change=change, server=server)
        raised[kind].add((change.pk, server.pk if server else None))

    for run in runs:
        change = run.change
        live = bool(run.lock_owner) and run.lock_expires_at is not None and run.lock_expires_at >= now
        if change.window_end < now - grace:
            for server in _in_maintenance(change):
                alert(Alert.Kind.PAST_WINDOW_END,
                      f"{server.name} is still in maintenance {_ago(now - change.window_end)} after the window of "
                      f"{change.number} ended ({change.window_end.isoformat()}); {change.number} is {change.state}",
                      change, server)
                report.past_window_end.append((change.pk, server.name))
        if change.state != State.RUNNING:
            continue
        waiting = run.decision_waiting_since
        if waiting is not None and waiting < now - DECISION_WAIT and not live:
            alert(Alert.Kind.DECISION_WAITING,
                  f"{change.number}: the operator's decision recorded at {waiting.isoformat()} has waited "
                  f"{_ago(now - waiting)} for the runner; is the broker or every worker down?", change)
            report.decision_waiting.append(change.pk)
        if run.lock_owner and run.lock_expires_at is not None and \
                run.lock_expires_at < now - timedelta(seconds=conf.lease_seconds()):
            alert(Alert.Kind.WORKER_LOST,
                  f"{change.number}: its run is still held by {run.lock_owner}, whose lease expired at "
                  f"{run.lock_expires_at.isoformat()} without renewal (the worker died or cannot reach the database) "
                  "and no other worker has taken it over", change)
            report.worker_lost.append(change.pk)
        if live and run.wake_at is None:
            for step in change.steps.filter(status=StepRun.Status.RUNNING, started_at__isnull=False).select_related(
                    "server"):
                limit = _step_limit(step)
                if step.started_at < now - limit - grace:
                    alert(Alert.Kind.STEP_STALLED,
                          f"{change.number}: step {step.order} ({step.name}) on "
                          f"{step.server.name if step.server else 'the window'} has run "
                          f"{_ago(now - step.started_at)}, past its own limit of {_ago(limit)} and a grace of "
                          f"{_ago(grace)}, with no result; its worker {run.lock_owner} still holds the run",
                          change, step.server)
                    report.step_stalled.append((change.pk, step.server.name if step.server else ""))
    for kind, keep in raised.items():
        opened = Alert.objects.filter(kind=kind, cleared_at__isnull=True)
        stale = [a.pk for a in opened if (a.change_id, a.server_id) not in keep]
        if stale:
            Alert.objects.filter(pk__in=stale).update(cleared_at=now)
    return report


_RUN_KINDS = (Alert.Kind.PAST_WINDOW_END, Alert.Kind.DECISION_WAITING, Alert.Kind.STEP_STALLED,
              Alert.Kind.WORKER_LOST)


def _in_maintenance(change: Change) -> list[Server]:
    """The change's servers its run has started to put in maintenance and not yet brought all the way out (read
    from the step records: an entry step attempted, an exit step not passed or skipped)."""
    done = (StepRun.Status.PASSED, StepRun.Status.SKIPPED)
    entered = set(change.steps.filter(phase=StepRun.Phase.ENTER, attempts__gt=0).values_list("server_id", flat=True))
    open_exit = set(change.steps.filter(phase=StepRun.Phase.EXIT).filter(~Q(status__in=done))
                    .values_list("server_id", flat=True))
    return list(Server.objects.filter(pk__in=entered & open_exit).order_by("name"))


def _step_limit(step: StepRun) -> timedelta:
    """How long ``step`` may run: its own timeout; an exit step the engine retries while the server is unreachable
    gets every attempt and the backoff between them (30 s, doubled)."""
    timeout = float(step.timeout_s or DEFAULT_STEP_TIMEOUT)
    if step.phase == StepRun.Phase.EXIT and step.idempotent:
        attempts = conf.exit_retry_attempts()
        return timedelta(seconds=timeout * attempts + FIRST_RETRY_DELAY * (2 ** (attempts - 1) - 1))
    return timedelta(seconds=timeout)


def watchdog(*, sessions_factory: Callable[[Server], Any] | None = None, now: datetime | None = None) -> WatchdogReport:
    now = now or timezone.now()
    report = WatchdogReport(runs=watch_runs(now=now))
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
