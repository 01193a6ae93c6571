"""Use cases of a running window: start, operator decisions, work-done, alerts. Same shape as services.py: rules,
compare-and-set, audit in the same transaction, follow-up work queued on commit (by task name: ``changes`` does not
import ``runner``)."""
from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import audit, authority, events
from .errors import InvalidRequest, StateConflict
from .models import Alert, AuditEvent, Change, Pause, Server, StepRun, WindowRun
from .queue import enqueue_run
from .selectors import pause_open
from .services import _fingerprint, _lock_schedule, _move, _valid_approvers, change_transition, check_schedule
from .states import State, TransitionNotAllowed
from .step_states import StepEvent, step_next

log = logging.getLogger(__name__)


def _last_transition_seq(change: Change) -> int | None:
    """The seq of the change's newest transition event (the caller's transaction just appended it)."""
    return (AuditEvent.objects.filter(object_type="change", object_id=str(change.pk), action="change.transition")
            .order_by("-seq").values_list("seq", flat=True).first())


def change_start(change: Change, *, actor: Any, plan: str | None = None, options: dict | None = None) -> Change:
    """Start a scheduled window (the scheduler at window_start, or an operator once the window has opened).

    Re-checks at start: the window is open, no freeze window now covers it (emergencies excepted), and the approvals
    still match what is about to run. Creates the run record and queues the engine. Raises StateConflict /
    TransitionNotAllowed / FreezeConflict / NotPermitted.
    """
    if not isinstance(actor, str):
        authority.may_operate(actor, change, to="start a window").require()
    with transaction.atomic():
        change = Change.objects.select_for_update().get(pk=change.pk)
        if change.state != State.SCHEDULED:
            raise TransitionNotAllowed(change.state, State.RUNNING)
        now = timezone.now()
        if now < change.window_start:
            raise StateConflict(f"{change.number}'s window opens at {change.window_start.isoformat()}; "
                                "it cannot start before", window_start=change.window_start.isoformat())
        if now >= change.window_end:
            raise StateConflict(f"{change.number}'s window closed at {change.window_end.isoformat()}; "
                                "reschedule it (PATCH the window) to run it", window_end=change.window_end.isoformat())
        servers = list(change.servers.all())
        _lock_schedule(Q(pk__in=[s.pk for s in servers]))
        check_schedule(change_type=change.change_type, servers=servers, window_start=change.window_start,
                       window_end=change.window_end, exclude_pk=change.pk)
        if len(_valid_approvers(change, _fingerprint(change, servers))) < change.approvals_required:
            raise StateConflict(f"{change.number}'s approvals no longer match its servers, plan and window")
        # The decision is recorded with the run: the queued task is only the fast path (the sweep stands behind it).
        WindowRun.objects.update_or_create(change=change, defaults={
            "plan": plan or change.plan, "options": options or {}, "started_at": now, "decision_waiting_since": now,
        })
        note = "window started" + (f" with options {sorted(options.items())}" if options else "")
        _move(change, State.RUNNING, actor=actor, reason=note)
        enqueue_run(change.pk)
    return change


def change_resume(change: Change, *, actor: Any, action: str, reason: str) -> Change:
    """An operator's decision on a paused window: ``retry`` the failed step, ``skip`` it (refused for steps unsafe
    to skip) or ``abort`` (the exit path runs so the server is left out of maintenance). Audited; it becomes the
    "how it was resolved" of the report."""
    authority.may_operate(actor, change, to="decide on a paused window").require()
    if action not in ("retry", "skip", "abort"):
        raise InvalidRequest("action must be retry, skip or abort", field="action")
    if not reason or not reason.strip():
        raise InvalidRequest("a reason is required", field="reason")
    reason = reason.strip()
    with transaction.atomic():
        change = Change.objects.select_for_update().get(pk=change.pk)
        if change.state != State.PAUSED:
            _refuse_repeated_decision(change)
            raise TransitionNotAllowed(change.state, State.RUNNING)
        step = change.steps.filter(status=StepRun.Status.FAILED).order_by("-order").first()
        if action == "skip" and step is not None and not step.skippable:
            raise StateConflict(f"step {step.order} ({step.name}) is not safe to skip; retry or abort",
                                step=step.key)
        if step is not None:
            step.decision, step.decided_by, step.resolution = action, actor, reason
            if action in ("skip", "retry"):  # an abort leaves the step failed: the exit path runs instead
                step.status = step_next(step.status, StepEvent.OPERATOR_SKIP if action == "skip" else StepEvent.RETRY)
            step.save(update_fields=["decision", "decided_by", "resolution", "status"])
        # Recorded for the engine with the decision; the sweep acts on it if the queued task is lost.
        WindowRun.objects.filter(change=change).update(
            decision_waiting_since=timezone.now(), **({"aborting": True} if action == "abort" else {}))
        event = audit.append(actor=actor, action=f"window.{action}", obj=change, reason=reason,
                             changes={"step": [None, step.key if step else None]})
        _record_decision(change, step, actor=actor, action=action, reason=reason, seq=event.seq,
                         at=event.created_at)
        Alert.objects.filter(
            change=change, kind__in=[Alert.Kind.PAUSED, Alert.Kind.UNREACHABLE, Alert.Kind.PRECHECK_BLOCKED],
            cleared_at__isnull=True,
        ).update(cleared_at=timezone.now())
        _move(change, State.RUNNING, actor=actor, reason=f"operator decision: {action}")
        enqueue_run(change.pk)
    return change


def _record_decision(change: Change, step: StepRun | None, *, actor: Any, action: str, reason: str, seq: int,
                     at: Any) -> Pause:
    """The decision answers the change's open pause. A pause the engine did not record (a change paused by hand)
    gets its row now, dated by the decision, so every decision has one."""
    pause = pause_open(change)
    if pause is None:
        pause = Pause(change=change, code=Pause.Reason.UNRECORDED, step=step,
                      server_id=step.server_id if step is not None else None, paused_at=at, paused_seq=seq)
    pause.decision, pause.decision_reason, pause.decided_at, pause.decided_seq = action, reason, at, seq
    pause.decided_by = actor if not isinstance(actor, str) else None
    pause.decided_by_label = audit.actor_label(actor)
    pause.save()
    return pause


def change_pause(change_id: int, *, actor: Any, code: str, message: str, step: StepRun | None = None,
                 server: Server | None = None, evidence: dict[str, Any] | None = None,
                 alert_kind: str = Alert.Kind.PAUSED) -> Pause:
    """The engine stops a running window for an operator: the transition (``message`` is its audit reason), the
    structured record of why (``Pause``; ``code`` is a ``Pause.Reason``) and the operator alert, in one transaction.
    Raises TransitionNotAllowed / StateConflict when the change is not running."""
    if code not in Pause.Reason.values:
        raise InvalidRequest(f"unknown pause reason {code!r}", field="code")
    server = server or (step.server if step is not None and step.server_id else None)
    with transaction.atomic():
        # The row first: the transition's listeners (the ITSM callback) read it in this transaction.
        pause = Pause.objects.create(change_id=change_id, code=code, step=step, server=server, message=message,
                                     evidence=evidence or {}, paused_at=timezone.now())
        change = change_transition(change_id, State.PAUSED, actor=actor, reason=message[:1000])
        pause.paused_seq = _last_transition_seq(change)
        pause.save(update_fields=["paused_seq"])
        alert_raise(alert_kind, f"{change.number}: {message}", actor=actor, change=change, server=server)
    return pause


def change_work_done(change: Change, *, actor: Any, notes: str) -> Change:
    """The operator reports the work of the window done; the engine moves on to the exit."""
    authority.may_operate(actor, change, to="report the work done").require()
    if not notes or not notes.strip():
        raise InvalidRequest("notes are required: say what was done", field="notes")
    with transaction.atomic():
        change = Change.objects.select_for_update().get(pk=change.pk)
        if change.state != State.RUNNING:
            raise StateConflict(f"{change.number} is '{change.state}', not running", state=change.state)
        run = WindowRun.objects.select_for_update().get(change=change)
        if run.work_done_at is not None:
            if run.work_notes != notes.strip():
                raise StateConflict(
                    f"the work of {change.number} was already reported done at {run.work_done_at.isoformat()} "
                    f"({_waiting(run)}); the first report's notes are kept", work_done_at=run.work_done_at.isoformat())
            # The same report again (an operator who saw no effect yet, a client retrying): nothing new to record;
            # wake the engine again in case the first message was lost.
            enqueue_run(change.pk)
            return change
        run.work_done_at, run.work_done_by, run.work_notes = timezone.now(), actor, notes.strip()
        run.decision_waiting_since = run.work_done_at
        run.save(update_fields=["work_done_at", "work_done_by", "work_notes", "decision_waiting_since"])
        audit.append(actor=actor, action="window.work_done", obj=change, reason=run.work_notes)
        enqueue_run(change.pk)
    return change


def _waiting(run: WindowRun) -> str:
    if run.decision_waiting_since is not None:
        return f"waiting for the runner since {run.decision_waiting_since.isoformat()}"
    return "the runner has taken it up"


def _refuse_repeated_decision(change: Change) -> None:
    """A decision posted again once the window runs again: say which decision was taken and whether the runner has
    taken it up yet (rather than a bare "running → running")."""
    pause = change.pauses.exclude(decision="").order_by("-decided_at").first()
    run = WindowRun.objects.filter(change=change).first()
    if change.state == State.RUNNING and pause is not None and run is not None:
        raise StateConflict(f"{change.number} is running again: {pause.decided_by_label} decided "
                            f"{pause.decision} at {pause.decided_at.isoformat()} ({_waiting(run)})",
                            state=change.state, decision=pause.decision)


def alert_raise(kind: str, message: str, *, actor: Any, change: Change | None = None,
                server: Server | None = None) -> Alert:
    """Raise an alert once (an open alert of the same kind for the same change/server is not repeated): logged,
    audited and shown on the change."""
    with transaction.atomic():
        existing = Alert.objects.filter(kind=kind, change=change, server=server, cleared_at__isnull=True).first()
        if existing is not None:
            return existing
        alert = Alert.objects.create(kind=kind, change=change, server=server, message=message)
        events.emit(events.ALERT_RAISED, change=change, alert=alert)
        audit.append(actor=actor, action=f"alert.{kind}", object_type="change" if change else "server",
                     object_id=(change or server).pk if (change or server) else "", reason=message)
    log.warning("ALERT %s: %s", kind, message)
    return alert


