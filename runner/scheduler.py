"""Starting windows on time and waking runs: what the Celery tasks (ETA messages and beat sweeps) call.

A window must not be lost to a lost message, so each path has a periodic sweep behind it: ``start_due_windows``
behind the ``start_window`` ETA message, ``resume_held_windows`` behind the ``run_window`` ETA message of a hold and
behind a worker that died holding a lease. Duplicate messages are harmless: ``change_start`` is a compare-and-set and
``run_window`` takes a lease.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.db.models import Q
from django.utils import timezone

from changes.errors import DomainError
from changes.models import Alert, Change, WindowRun
from changes.queue import RUN_TASK, START_TASK
from changes.run_services import alert_raise, change_start
from changes.states import State, TransitionNotAllowed

log = logging.getLogger(__name__)

SCHEDULER = "system:scheduler"
# A decision's own message normally reaches a worker within moments; after this the sweep queues the run again (a
# duplicate is harmless: the run's lease lets one worker through).
NUDGE_AFTER = timedelta(seconds=10)
# A run nobody holds, with no hold and no recorded decision, started less than this long ago may simply be waiting
# in the queue behind another window: leave it be. (A start, a decision or an expired lease is not held back.)
FRESH_START = timedelta(minutes=2)


def start_window(change_id: int) -> str:
    """Start a scheduled change whose window is open; re-queue one that is early. Returns what happened."""
    change = Change.objects.filter(pk=change_id).first()
    if change is None or change.state != State.SCHEDULED:
        return f"not scheduled ({change.state if change else 'missing'})"
    now = timezone.now()
    if now < change.window_start:
        # An ETA message delivered early (clock skew, a broker redelivery): come back at the real start.
        current_app.send_task(START_TASK, args=[change_id], eta=change.window_start)
        return "early"
    if now >= change.window_end:
        alert_raise(Alert.Kind.NOT_STARTED, f"{change.number}: its window closed at {change.window_end.isoformat()} "
                    "before it could start; reschedule it", actor=SCHEDULER, change=change)
        return "window closed"
    try:
        change_start(change, actor=SCHEDULER)
    except (DomainError, TransitionNotAllowed) as exc:
        # Started meanwhile by another starter (a duplicate message on another worker, the sweep, an operator): the
        # state read above is stale, and there is nothing to report.
        state = Change.objects.filter(pk=change_id).values_list("state", flat=True).first()
        if state != State.SCHEDULED:
            return f"not scheduled ({state})"
        # Freeze or changed approvals: the change stays as it is, and people are told (once: the alert is not
        # repeated by every sweep while it is open).
        detail = getattr(exc, "detail", str(exc))
        alert_raise(Alert.Kind.NOT_STARTED, f"{change.number} did not start at its window: {detail}",
                    actor=SCHEDULER, change=change)
        return f"refused: {detail}"
    return "started"


def start_due_windows() -> list[int]:
    """The sweep behind the ETA message: start every scheduled change whose window is open now."""
    now = timezone.now()
    due = Change.objects.filter(state=State.SCHEDULED, window_start__lte=now, window_end__gt=now).order_by(
        "window_start").values_list("pk", flat=True)
    return [pk for pk in due if start_window(pk) == "started"]


def resume_held_windows() -> list[int]:
    """Queue ``run_window`` for running changes nobody is running: a hold that is due (its ETA message lost or not
    yet due), an operator's decision recorded in the database whose message was lost (the broker was down), or a
    lease that expired because its worker died or stopped heartbeating."""
    now = timezone.now()
    runs = (
        WindowRun.objects.filter(change__state=State.RUNNING, finished_at__isnull=True)
        .filter(Q(lock_owner="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now))
        .filter(Q(wake_at__lte=now)
                | Q(decision_waiting_since__lte=now - NUDGE_AFTER)
                | Q(lock_owner__gt="")
                | (Q(wake_at__isnull=True, decision_waiting_since__isnull=True)
                   & (Q(started_at__lt=now - FRESH_START) | Q(started_at__isnull=True))))
        .values_list("change_id", flat=True)
    )
    queued = list(runs)
    for change_id in queued:
        current_app.send_task(RUN_TASK, args=[change_id])
    if queued:
        log.info("resuming runs of changes %s", queued)
    return queued
