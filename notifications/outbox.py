"""The transactional outbox: turns domain events (changes.events) into Delivery rows, in the caller's transaction.

No I/O here: rows are written, and the dispatch is queued with ``transaction.on_commit`` (a lost queue message is
picked up by the periodic sweep, ``notifications.tasks.dispatch_due``).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from changes import events
from changes.models import Alert, AuditEvent, Change, WindowRun
from changes.queue import send_task_safely
from changes.selectors import pause_facts, pause_open
from changes.services import PINNED_FIELDS
from changes.states import WINDOW_ENDED, State

from . import conf, ical
from .compose import message_id
from .models import CalendarInvite, Delivery, MailThread
from .recipients import approvers_for, auditors, normalize, operators

SEND_TASK = "notifications.tasks.send_delivery"
Kind = Delivery.Kind


def on_event(event: str, **data: Any) -> str | None:
    """The events handler registered by NotificationsConfig.ready()."""
    if event == events.CHANGE_CREATED:
        change = data["change"]
        MailThread.objects.create(change=change)  # the UID and thread root, random, from the start
        if change.state == State.AWAITING_APPROVAL and change.approvals_required > 0:
            _approval_request(change, first=True)
    elif event == events.CHANGE_UPDATED:
        _on_update(data["change"], data.get("diff") or {})
    elif event == events.CHANGE_TRANSITION:
        _on_transition(data["change"], str(data["old"]), str(data["new"]), data.get("reason", ""))
    elif event == events.ALERT_RAISED:
        _on_alert(data.get("change"), data["alert"])
    elif event == events.AUDIT_ANCHORED:
        return _anchor_mail(data["seq"], data["hash"], data["line"])
    return None


def _anchor_mail(seq: int, digest: str, line: str) -> str | None:
    """The auditors get each anchor of the audit chain (the line attached as a file): a copy outside the database
    that only they hold. Returns the sink's name for the anchor's record, or None when no auditor has an address."""
    delivery = _add(None, Delivery.Channel.EMAIL, Kind.AUDIT_ANCHOR, f"audit-anchor:{seq}:{digest[:16]}",
                    {"seq": seq, "hash": digest, "line": line}, recipients=auditors())
    return "email" if delivery is not None else None


def _on_transition(change: Change, old: str, new: str, reason: str) -> None:
    if change.callback_url:
        _callback(change, old, new, reason)
    if old == State.SCHEDULED and new != State.SCHEDULED:
        supersede_reminders(change)
    if new == State.SCHEDULED:
        _announce(change, from_approval=old == State.AWAITING_APPROVAL)
    elif new == State.AWAITING_APPROVAL and _awaits_approvers(change):
        voided: dict[str, Any] = {}
        if old == State.SCHEDULED:
            voided = _last_edit(change)
            _hold_invite(change, voided.get("reason") or reason)
        _approval_request(change, voided)
    elif new in (State.CANCELLED, State.REJECTED):
        _cancel_invite(change, reason)
    elif new == State.RUNNING and old == State.SCHEDULED:
        _add(change, Delivery.Channel.EMAIL, Kind.START, f"change:{change.pk}:start", _summary(change),
             recipients=change.notify, affected=change.notify_affected_mailboxes)
    elif new in WINDOW_ENDED:
        _add(change, Delivery.Channel.EMAIL, Kind.END, f"change:{change.pk}:end",
             {**_summary(change), **_actual_times(change), "outcome": new,
              "reason": _operator_reason(change, new) or reason},
             recipients=change.notify, affected=change.notify_affected_mailboxes)


def _on_update(change: Change, diff: dict[str, Any]) -> None:
    _rearm(change)
    next_update = False  # does an update of the entry (a higher SEQUENCE) follow this edit, or was it just sent?
    if change.state == State.AWAITING_APPROVAL and _awaits_approvers(change) and _INVITE_FIELDS & set(diff):
        # A change already awaiting re-approval edited again: its tentative entry must show what is now proposed
        # (and reach whoever was added to the notify list).
        _hold_invite(change, "edited again while awaiting re-approval")
    elif change.state == State.SCHEDULED and set(PINNED_FIELDS) & set(diff):
        # The transition that follows (back to approval, or straight back to scheduled for a standard change)
        # sends the update, to the notify list as it is now.
        next_update = True
    elif change.state == State.SCHEDULED and _INVITE_FIELDS & set(diff):
        # An edit that keeps the approval (title, notify list): the entry is updated for everyone, the people added
        # included.
        if CalendarInvite.objects.filter(change=change, cancelled=False).exists():
            _announce(change, updated=sorted(_INVITE_FIELDS & set(diff)))
    _uninvite(change, diff, next_update=next_update)


def _rearm(change: Change) -> None:
    """Mails of this change that failed for good because they could not be built or were refused go out again after
    an edit, rebuilt from the edited change (notifications.compose.payload_of); the dispatcher drops those a newer
    update has superseded."""
    now = timezone.now()
    ids = list(Delivery.objects.filter(change=change, channel=Delivery.Channel.EMAIL, status=Delivery.Status.FAILED,
                                       permanent_error=True, batches_sent=0).values_list("pk", flat=True))
    if ids:
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.PENDING, permanent_error=False, attempts=0, first_attempt_at=None,
            next_attempt_at=now, last_error="sent again: the change was edited after it failed", updated_at=now)
        for delivery_id in ids:
            transaction.on_commit(lambda pk=delivery_id: kick(pk))


def _uninvite(change: Change, diff: dict[str, Any], *, next_update: bool) -> None:
    """People taken off the notify list of an announced window get its cancellation (RFC 5546 3.2.5: the organizer
    cancels the event for the attendees it removes), at the SEQUENCE of the update the others get (sent just
    before, or by the transition that follows: ``next_update``)."""
    if "notify" not in diff:
        return
    before, after = (normalize(v or []) for v in diff["notify"])
    kept = {a.casefold() for a in after}
    removed = [a for a in before if a.casefold() not in kept]
    invite = CalendarInvite.objects.filter(change=change, cancelled=False).first()
    if not removed or invite is None:
        return
    sequence = invite.sequence + 1 if next_update else invite.sequence
    _add(change, Delivery.Channel.EMAIL, Kind.CANCELLATION, f"change:{change.pk}:cancellation:{sequence}:removed",
         {**_summary(change), "sequence": sequence, "method": "CANCEL", "removed": True,
          "reason": "you were taken off the notify list of this change",
          "window_start": invite.window_start.isoformat(), "window_end": invite.window_end.isoformat()},
         recipients=removed)


def _awaits_approvers(change: Change) -> bool:
    """Does the change really wait for approvers? A standard change (no approval needed) edited while scheduled
    passes through awaiting_approval and back to scheduled in the same transaction: nobody is to be told it waits."""
    return change.approvals_required > 0


# --- change audience: invite, reminders ---------------------------------------------------------------------------

# What the invite shows of a change: an edit of one of these changes the calendar entry.
_INVITE_FIELDS = frozenset({"window_start", "window_end", "servers", "title", "notify", "notify_affected_mailboxes"})


def _announce(change: Change, *, from_approval: bool = False, updated: list[str] | None = None) -> None:
    """The invite of a scheduled change: created at the first scheduling; re-sent with a higher SEQUENCE when the
    change is scheduled again (``from_approval``: it was awaiting approval, so an announced one is re-approved) or
    edited without losing its approval (``updated``: the fields edited)."""
    invite = CalendarInvite.objects.select_for_update().filter(change=change).first()
    reapproved = False
    if invite is None:
        invite = CalendarInvite.objects.create(change=change, window_start=change.window_start,
                                               window_end=change.window_end)
    else:
        # Re-scheduled (after an edit and a new approval) or scheduled again: the same UID with a higher SEQUENCE
        # makes calendar clients update the existing entry instead of adding a second one; after the tentative
        # update sent on the move back to approval it confirms the entry.
        reapproved = from_approval and not invite.cancelled and _awaits_approvers(change)
        invite.sequence += 1
        invite.window_start, invite.window_end, invite.cancelled = change.window_start, change.window_end, False
        invite.save()
    payload = {**_summary(change), "sequence": invite.sequence, "method": "REQUEST", "status": ical.CONFIRMED,
               "rescheduled": invite.sequence > 0 and not updated, "reapproved": reapproved,
               "updated_fields": updated or []}
    if updated:
        supersede_reminders(change)  # the reminders queued carry the old SEQUENCE; new ones follow
    _add(change, Delivery.Channel.EMAIL, Kind.ANNOUNCEMENT, f"change:{change.pk}:announcement:{invite.sequence}",
         payload, recipients=change.notify, affected=change.notify_affected_mailboxes)
    now = timezone.now()
    for minutes in sorted(set(conf.get("REMINDER_MINUTES")), reverse=True):
        due = change.window_start - timedelta(minutes=minutes)
        if due <= now:
            continue  # announced too late for this reminder: the announcement says it all
        _add(change, Delivery.Channel.EMAIL, Kind.REMINDER,
             f"change:{change.pk}:reminder:{invite.sequence}:{minutes}",
             {**payload, "minutes_before": minutes}, recipients=change.notify,
             affected=change.notify_affected_mailboxes, not_before=due)


def _hold_invite(change: Change, reason: str) -> None:
    """An announced window needs approval again (its window, servers or plan were edited): tell its audience now,
    not at re-approval, that the slot they hold no longer stands.

    Sent as an update of the same entry (METHOD:REQUEST, same UID, higher SEQUENCE, STATUS:TENTATIVE, the proposed
    times, "awaiting re-approval" in the summary and the text), not as a METHOD:CANCEL: the work is not called off,
    only unconfirmed. A CANCEL would make Outlook delete the entry (with the reader's own reminder and notes) and
    tell users there is no maintenance, only to re-create it on re-approval; the update moves the entry off the old
    slot at once and marks it unconfirmed. Re-approval confirms it (CONFIRMED, higher SEQUENCE); a rejection or a
    cancellation takes it back (CANCEL, higher SEQUENCE). No reminders: there is no confirmed time to remind of."""
    invite = CalendarInvite.objects.select_for_update().filter(change=change, cancelled=False).first()
    if invite is None:
        return  # never announced: nobody holds an entry to correct
    previous = {"previous_start": invite.window_start.isoformat(), "previous_end": invite.window_end.isoformat()}
    invite.sequence += 1
    invite.window_start, invite.window_end = change.window_start, change.window_end
    invite.save()
    _add(change, Delivery.Channel.EMAIL, Kind.ANNOUNCEMENT, f"change:{change.pk}:announcement:{invite.sequence}",
         {**_summary(change), **previous, "sequence": invite.sequence, "method": "REQUEST",
          "status": ical.TENTATIVE, "rescheduled": True, "reason": reason},
         recipients=change.notify, affected=change.notify_affected_mailboxes)


def supersede_reminders(change: Change) -> int:
    """Reminders not sent yet are dropped when the window moves, is cancelled or starts (new ones follow a new
    announcement)."""
    return Delivery.objects.filter(change=change, kind=Kind.REMINDER, status=Delivery.Status.PENDING).update(
        status=Delivery.Status.CANCELLED, last_error="superseded: the window moved, started or was cancelled",
        updated_at=timezone.now())


def _cancel_invite(change: Change, reason: str) -> None:
    invite = CalendarInvite.objects.select_for_update().filter(change=change, cancelled=False).first()
    if invite is None:
        return  # never announced: there is no calendar entry to take back
    invite.sequence += 1
    invite.cancelled = True
    invite.save()
    _add(change, Delivery.Channel.EMAIL, Kind.CANCELLATION, f"change:{change.pk}:cancellation:{invite.sequence}",
         {**_summary(change), "sequence": invite.sequence, "method": "CANCEL", "reason": reason,
          "window_start": invite.window_start.isoformat(), "window_end": invite.window_end.isoformat()},
         recipients=change.notify, affected=change.notify_affected_mailboxes)


# --- approvers, operators, the ITSM -------------------------------------------------------------------------------

def _approval_request(change: Change, voided: dict[str, Any] | None = None, *, first: bool = False) -> None:
    """Ask the approvers. ``voided``: an approved change was edited (``_last_edit``): the request says the earlier
    approval no longer stands, what was edited, the window approved before and the requester's reason. ``first``:
    the change was created in this transaction (no earlier round, no row to find)."""
    rounds = 0 if first else Delivery.objects.filter(change=change, kind=Kind.APPROVAL_REQUEST).count()
    _add(change, Delivery.Channel.EMAIL, Kind.APPROVAL_REQUEST, f"change:{change.pk}:approval_request:{rounds + 1}",
         {**_summary(change), **(voided or {}), "approvals_required": change.approvals_required,
          "description": change.description,
          "approve_url": f"{conf.public_url()}/api/v1/changes/{change.pk}/approve/"},
         recipients=approvers_for(change), new=first)


def _change_events(change: Change, *actions: str) -> Any:
    return AuditEvent.objects.filter(object_type="change", object_id=str(change.pk), action__in=actions)


def _last_edit(change: Change) -> dict[str, Any]:
    """The edit that just sent an approved change back for approval, read from its audit event (appended in the
    same transaction): the requester's reason, the fields edited and the window approved before."""
    edit = _change_events(change, "change.updated").order_by("-seq").first()
    if edit is None:
        return {"approval_voided": True}
    diff = edit.changes or {}
    before = {key: diff[key][0] for key in ("window_start", "window_end") if key in diff}
    return {"approval_voided": True, "reason": edit.reason, "edited_fields": sorted(diff),
            "previous_start": before.get("window_start", change.window_start.isoformat()),
            "previous_end": before.get("window_end", change.window_end.isoformat())}


def _actual_times(change: Change) -> dict[str, str]:
    """When the window really started and ended (the run's times), for the end mail."""
    run = WindowRun.objects.filter(change=change).values("started_at", "finished_at").first() or {}
    started, finished = run.get("started_at"), run.get("finished_at") or timezone.now()
    return {"actual_start": started.isoformat(), "actual_end": finished.isoformat()} if started else {}


def _operator_reason(change: Change, new: str) -> str:
    """An aborted window: the reason the operator gave for the abort (the transition's own reason is the engine's)."""
    if new != State.ABORTED:
        return ""
    event = _change_events(change, "window.abort").order_by("-seq").first()
    return f"aborted by {event.actor.split(':', 1)[-1]}: {event.reason}" if event is not None else ""


def _on_alert(change: Change | None, alert: Alert) -> None:
    payload = {**(_summary(change) if change else {}), "alert_kind": alert.kind,
               "alert_title": alert.get_kind_display(), "message": alert.message,
               "server": alert.server.name if alert.server_id else ""}
    if change is not None and change.state == State.PAUSED and (pause := pause_open(change)) is not None:
        payload["pause"] = pause_facts(pause)
    _add(change, Delivery.Channel.EMAIL, Kind.ALERT, f"alert:{alert.pk}", payload, recipients=operators())


def _callback(change: Change, old: str, new: str, reason: str) -> None:
    # The transition's own audit event was appended just before the emit, under the chain lock: it is the head.
    head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first() or (0, "0" * 64)
    body: dict[str, Any] = {
        "event": "change.state_changed", "change": change.number, "change_id": change.pk, "source": change.source,
        "external_ref": change.external_ref, "old_state": old, "new_state": new, "reason": reason,
        "time": (change.updated_at or timezone.now()).isoformat(), "audit_head": {"seq": head[0], "hash": head[1]},
    }
    if new == State.PAUSED and (pause := pause_open(change)) is not None:
        body["pause"] = pause_facts(pause)  # why, as data: the ITSM need not read the reason's prose
    if new == State.CLOSED:
        body["close_code"] = change.close_code
    if new in WINDOW_ENDED or new == State.CLOSED:
        body["report_url"] = f"{conf.public_url()}/api/v1/changes/{change.pk}/report/"
    _add(change, Delivery.Channel.CALLBACK, Kind.STATE_CHANGE, f"change:{change.pk}:callback:{head[0]}",
         {"url": change.callback_url, "body": body, "client_id": _client_id(change)}, recipients=[change.callback_url])


def _client_id(change: Change) -> int | None:
    client = getattr(change.created_by, "api_client", None)
    return client.pk if client is not None else None


# --- rows ---------------------------------------------------------------------------------------------------------

def _summary(change: Change) -> dict[str, Any]:
    return {
        "change_id": change.pk, "number": change.number, "title": change.title, "external_ref": change.external_ref,
        "source": change.source, "servers": sorted(s.name for s in change.servers.all()), "plan": change.plan,
        "window_start": change.window_start.isoformat(), "window_end": change.window_end.isoformat(),
        "requested_by": change.requested_by, "state": change.state,
    }


def _add(change: Change | None, channel: str, kind: str, key: str, payload: dict[str, Any], *,
         recipients: list[str] | tuple[str, ...] = (), affected: bool = False,
         not_before: datetime | None = None, new: bool = False) -> Delivery | None:
    """Write one outbox row (once: the dedupe key is unique) and queue its dispatch on commit. ``new``: the key
    belongs to a change created in this transaction, so it cannot exist yet (an insert, no lookup first)."""
    recipients = normalize(recipients)
    if not recipients and not affected:
        return None
    now = timezone.now()
    due = max(now, not_before or now)
    uid = MailThread.for_change(change).uid if change is not None else str(uuid.uuid4())
    fields = {
        "change": change, "channel": channel, "kind": kind, "payload": {**payload, "affected_mailboxes": affected},
        "recipients": recipients, "recipients_count": len(recipients), "recipients_resolved": not affected,
        "batch_size": int(conf.get("BATCH_SIZE")), "not_before": due, "next_attempt_at": due,
        "message_id": message_id(key, uid),
    }
    if new:
        delivery, created = Delivery.objects.create(dedupe_key=key, **fields), True
    else:
        delivery, created = Delivery.objects.get_or_create(dedupe_key=key, defaults=fields)
    if created and due <= now:
        delivery_id = delivery.pk
        transaction.on_commit(lambda: kick(delivery_id))
    return delivery


def kick(delivery_id: int, *, eta: datetime | None = None) -> None:
    """Queue one dispatch. A broker outage is logged, not raised: the committed row waits for the sweep."""
    send_task_safely(SEND_TASK, [delivery_id], eta)
