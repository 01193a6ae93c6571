"""Sending one delivery: claim it by compare-and-set, send, record, retry with exponential backoff or fail.

Every state change of a Delivery is one short transaction; no transaction is held across SMTP or HTTP.

The guarantee (e-mail): a batch recorded as sent is never sent again. A worker is killed or loses its lease between
the SMTP server's acceptance of a batch and the commit that records it: that one batch is sent again by the worker
that takes over, with the same Message-ID (mail stores and clients that de-duplicate on Message-ID drop it). No
other batch can be repeated, and no two workers hold a delivery at once unless a lease expires under a live worker
(leases are renewed per batch and outlast the SMTP timeout). Callbacks: the same, for the one request, with the
same ``X-Exmaint-Delivery`` id for receivers that de-duplicate.

SMTP offers no way to ask whether a message was accepted, so that one batch can only be sent again (never lost) or
dropped (maybe lost). It is sent again, and never silently: each batch is marked in flight in the lease renewal
before it goes out (no extra write), so the worker that takes over knows it is in doubt, and its audit event and
the report say it may have arrived twice.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from changes import audit
from changes.leases import Lease
from changes.models import Alert, Change
from changes.states import State

from . import conf, ical, senders
from .models import CalendarInvite, Delivery

log = logging.getLogger(__name__)
ACTOR = "system:notifications"
Status = Delivery.Status


class LeaseLost(Exception):
    """Another worker took the delivery over (our lease expired): stop without touching it."""


IN_DOUBT = ("sent again: the worker sending it stopped after handing it over and before recording it, so it may "
            "have arrived twice (same Message-ID / X-Exmaint-Delivery, for receivers that de-duplicate)")


def backoff(attempt: int) -> timedelta:
    """30 s, 60 s, 120 s, … capped (defaults; see conf)."""
    base, cap = int(conf.get("BACKOFF_SECONDS")), int(conf.get("BACKOFF_MAX_SECONDS"))
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempt - 1)))


def due_ids(now: datetime | None = None, limit: int = 500) -> list[int]:
    """Deliveries a worker may take now: pending and due, or sending with an expired lease (a dead worker's)."""
    now = now or timezone.now()
    return list(Delivery.objects.filter(
        Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(status=Status.SENDING, lease_expires_at__lt=now)
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def claim(delivery_id: int, *, worker: str, now: datetime) -> tuple[Delivery, Lease] | None:
    """Compare-and-set (changes.leases): only one worker wins a due row; a dead worker's row is taken over once its
    lease expired."""
    lease = Lease.take(
        Delivery, delivery_id, worker=worker, seconds=int(conf.get("LEASE_SECONDS")), now=now,
        claimable=Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(status=Status.SENDING,
                                                                         lease_expires_at__lt=now),
        status=Status.SENDING, attempts=F("attempts") + 1, first_attempt_at=Coalesce("first_attempt_at", Value(now)),
        updated_at=now)
    if lease is None:
        return None
    return Delivery.objects.select_related("change").get(pk=delivery_id), lease


Clock = Callable[[], datetime]


def _clock_from(now: datetime | None) -> Clock:
    """The current time while sending: ``timezone.now``, or — when a test fixed the claim's ``now`` — that time
    plus the real time elapsed since, so leases stay consistent with the test's clock."""
    if now is None:
        return timezone.now
    offset = now - timezone.now()
    return lambda: timezone.now() + offset


@dataclass
class _Run:
    """One attempt: the claimed row, the claim's lease, the claim's time and the current time."""

    delivery: Delivery
    lease: Lease
    now: datetime
    clock: Clock
    # The batch a previous owner handed over and never recorded: sending it again may duplicate it.
    in_doubt: int | None = None


def deliver(delivery_id: int, *, worker: str = "", now: datetime | None = None, sessions_factory: Any = None,
            after_batch: Callable[[Delivery, int], None] | None = None) -> str:
    """Claim and send one delivery; returns its status afterwards ('' when another worker has it, it is not due,
    or our lease ran out before we were done). ``now`` and ``after_batch`` are for tests (a controllable clock; a
    crash between batches)."""
    clock = _clock_from(now)
    now = now or clock()
    # The lease token is unique per claim: a restarted worker is another owner.
    claimed = claim(delivery_id, worker=worker, now=now)
    if claimed is None:
        return ""
    delivery, lease = claimed
    in_doubt = delivery.batch_in_flight if delivery.batch_in_flight == delivery.batches_sent else None
    try:
        return _attempt(_Run(delivery, lease, now, clock, in_doubt), sessions_factory, after_batch)
    except LeaseLost:
        log.warning("delivery %s: lease lost (expired or taken over); stopping", delivery_id)
        return ""


def _attempt(run: _Run, sessions_factory: Any, after_batch: Callable[[Delivery, int], None] | None) -> str:
    delivery = run.delivery
    try:
        stale = _stale(delivery)
        if stale:
            _finish(run, status=Status.CANCELLED, last_error=f"not sent: {stale}")
            return Status.CANCELLED
        if delivery.channel == Delivery.Channel.CALLBACK:
            if not delivery.batches_sent:  # recorded by a worker that died before finishing: never POST twice
                _check_lease(run, 0)
                code = senders.send_callback(delivery)
                _record(run, 0, [delivery.payload["url"]], delivery.message_id, http_status=code)
        else:
            _resolve(run, sessions_factory)
            senders.send_email(
                delivery,
                record=lambda index, batch, mid: _after(run, index, batch, mid, after_batch),
                before_batch=lambda index: _check_lease(run, index))
        _finish(run, status=Status.SENT, sent_at=run.now)
        return Status.SENT
    except LeaseLost:
        raise
    except senders.SendError as exc:
        return _failed_attempt(run, exc)
    except Exception as exc:  # noqa: BLE001 - anything else (a template, a secret that cannot be decrypted, a bug)
        # Left uncaught, the row would stay 'sending': taken again every lease period, attempts rising, never
        # failed nor audited. It is a failed attempt like any other: retried with backoff, then failed.
        log.exception("delivery %s: attempt %s raised", delivery.pk, delivery.attempts)
        return _failed_attempt(run, senders.SendError(f"{type(exc).__name__}: {exc}"))


def _stale(delivery: Delivery) -> str:
    """Why a not-yet-started delivery no longer makes sense ('' if it does)."""
    change: Change | None = delivery.change
    if change is None or delivery.batches_sent:
        return ""
    if delivery.kind == Delivery.Kind.REMINDER:
        invite = CalendarInvite.objects.filter(change=change).first()
        if change.state != State.SCHEDULED or invite is None or invite.sequence != delivery.payload.get("sequence"):
            return "superseded: the window moved, started or was cancelled"
    if delivery.kind == Delivery.Kind.APPROVAL_REQUEST and change.state != State.AWAITING_APPROVAL:
        return f"{change.number} no longer awaits approval"
    if delivery.kind in (Delivery.Kind.ANNOUNCEMENT, Delivery.Kind.CANCELLATION) and not delivery.payload.get(
            "removed"):
        # An invite older than the entry's current SEQUENCE (one re-armed after a failure, or queued behind a
        # quick second edit): calendar clients ignore it, and the newer update carries the whole entry (not to
        # people taken off the list: their cancellation stands).
        invite = CalendarInvite.objects.filter(change=change).first()
        if invite is not None and invite.sequence > int(delivery.payload.get("sequence", invite.sequence)):
            return "superseded: a later update of the calendar entry carries it"
    if delivery.kind == Delivery.Kind.ANNOUNCEMENT and delivery.payload.get("status") == ical.TENTATIVE:
        # "Awaiting re-approval" read after the decision would mislead; the decision's own invite (a higher
        # SEQUENCE: confirmed or cancelled) carries the whole entry, so nobody misses the update itself.
        invite = CalendarInvite.objects.filter(change=change).first()
        if change.state != State.AWAITING_APPROVAL or invite is None or invite.sequence != delivery.payload.get(
                "sequence"):
            return "superseded: the change was decided or edited again before this update went out"
    return ""


def _resolve(run: _Run, sessions_factory: Any) -> None:
    """Freeze the recipient list (affected mailboxes read from Exchange) before batch 1, so batches never shift."""
    delivery = run.delivery
    if delivery.recipients_resolved:
        return
    recipients, found = senders.resolve_recipients(delivery, sessions_factory=sessions_factory)
    problems = list(found.problems)
    if found.unreadable:
        # A server whose mailboxes cannot be read (Exchange down, credentials refused, ...) is a failed attempt of
        # the whole delivery, retried with backoff like SMTP being down: freezing the list now would drop those
        # users for good, and they are the people the maintenance affects most. Once the retry period is over,
        # waiting longer would cost everyone else the notice too, so it goes to whoever could be resolved, and the
        # delivery and its audit events say whose users were not told.
        unread = "; ".join(f"{name}: {why}" for name, why in found.unreadable.items())
        if _retry_fits(run):
            raise senders.SendError(f"the affected mailboxes could not be read (retrying): {unread}")
        problems = [f"the affected users of {name} could not be read: {why}"
                    for name, why in found.unreadable.items()] + problems
        if not recipients:
            raise senders.SendError("nobody to send to: " + "; ".join(problems), retryable=False)
    note = "; ".join(problems)[:2000]
    updated = run.lease.mine().filter(recipients_resolved=False).update(
        recipients=recipients, recipients_count=len(recipients), recipients_resolved=True, last_error=note,
        recipients_problems=note, updated_at=run.clock())
    if not updated:
        raise LeaseLost
    delivery.recipients, delivery.recipients_count, delivery.recipients_resolved = recipients, len(recipients), True
    delivery.recipients_problems = note


def _check_lease(run: _Run, index: int) -> None:
    """Before each batch (and the callback): go on only while the lease is ours and not expired — once it expired,
    the sweep may hand the row to another worker at any moment — and renew it, so the batch has a whole lease
    (which outlasts the SMTP timeout) rather than what was left; and mark the batch in flight. One compare-and-set."""
    current = run.clock()
    if not run.lease.renew(current, live=True, where=Q(status=Status.SENDING), updated_at=current,
                           batch_in_flight=index):
        raise LeaseLost
    run.delivery.batch_in_flight = index


def _after(run: _Run, index: int, batch: list[str], mid: str, hook: Callable[[Delivery, int], None] | None) -> None:
    _record(run, index, batch, mid)
    if hook is not None:
        hook(run.delivery, index)


def _record(run: _Run, index: int, batch: list[str], mid: str, http_status: int | None = None) -> None:
    """One batch (or the callback) is out: record it and audit it in one transaction, renewing the lease from the
    current time (compare-and-set on the owner: the batch went out under our lease, so it is ours to record)."""
    delivery = run.delivery
    current = run.clock()
    with transaction.atomic():
        updated = run.lease.renew(current, where=Q(batches_sent=index), batches_sent=index + 1, batch_in_flight=None,
                                  response_status=http_status, updated_at=current)
        if not updated:
            raise LeaseLost
        total = delivery.batches_total
        changes: dict[str, Any] = {
            "delivery": [None, delivery.pk], "channel": [None, delivery.channel], "kind": [None, delivery.kind],
            "recipients": [None, len(batch)], "message_id": [None, mid], "batch": [None, f"{index + 1}/{total}"],
            "sent_at": [None, current]}
        if http_status is not None:
            changes["http_status"] = [None, http_status]
        reason = delivery.recipients_problems
        if delivery.recipients_problems:
            changes["recipients_problems"] = [None, delivery.recipients_problems]
        if index == run.in_doubt:
            changes["sent_again_in_doubt"] = [None, True]
            reason = "; ".join(filter(None, [IN_DOUBT, reason]))
        _audit("notification.sent", delivery, changes, reason=reason)
    delivery.batches_sent, delivery.batch_in_flight = index + 1, None


def _audit(action: str, delivery: Delivery, changes: dict[str, Any], reason: str = "") -> None:
    if delivery.change_id:
        audit.append(actor=ACTOR, action=action, object_type="change", object_id=delivery.change_id,
                     changes=changes, reason=reason)
    else:
        audit.append(actor=ACTOR, action=action, object_type="delivery", object_id=delivery.pk, changes=changes,
                     reason=reason)


def _retry_fits(run: _Run) -> bool:
    """Does another attempt, after the backoff, still fall within the delivery's retry period?"""
    delivery = run.delivery
    hours = conf.get("CALLBACK_RETRY_HOURS" if delivery.channel == Delivery.Channel.CALLBACK else "EMAIL_RETRY_HOURS")
    started = delivery.first_attempt_at or run.now
    return run.now + backoff(delivery.attempts) <= started + timedelta(hours=float(hours))


def _failed_attempt(run: _Run, exc: senders.SendError) -> str:
    delivery = run.delivery
    if not exc.retryable or not _retry_fits(run):
        # Not retried: a deterministic failure (the message cannot be built, a 5xx) fails the same way every time,
        # and retrying it for a day would only hide it. Either way the operators are alerted now.
        with transaction.atomic():
            _finish(run, status=Status.FAILED, last_error=str(exc)[:2000], response_status=exc.status,
                    batch_in_flight=None, permanent_error=not exc.retryable)
            _audit("notification.failed", delivery, {
                "delivery": [None, delivery.pk], "channel": [None, delivery.channel], "kind": [None, delivery.kind],
                "recipients": [None, delivery.recipients_count], "message_id": [None, delivery.message_id],
                "attempts": [None, delivery.attempts]}, reason=str(exc)[:2000])
            _alert(delivery, exc)
        log.error("delivery %s failed for good after %s attempt(s): %s", delivery.pk, delivery.attempts, exc)
        return Status.FAILED
    retry_at = run.now + backoff(delivery.attempts)
    # The send raised. Refused outright, the retry sends it as a first try; timed out or cut off while the other
    # end answered, it stays marked in flight, so the retry says it may have arrived twice.
    _finish(run, status=Status.PENDING, next_attempt_at=retry_at, last_error=str(exc)[:2000],
            response_status=exc.status, batch_in_flight=run.delivery.batch_in_flight if exc.in_doubt else None)
    from .outbox import kick

    kick(delivery.pk, eta=retry_at)
    return Status.PENDING


def _alert(delivery: Delivery, exc: senders.SendError) -> None:
    """An operator alert for a delivery that failed for good (changes' Alert, mailed to the operators and shown on
    the change; one open alert per change, so a failing alert mail cannot raise alerts in a loop)."""
    from changes.run_services import alert_raise

    change = delivery.change if delivery.change_id else None
    what = f"the {delivery.get_kind_display().lower()} {delivery.channel}"
    if not exc.retryable:
        hint = (" Not retried: it fails the same way each time. Fix the change (an edit sends it again, rebuilt "
                "from the edited change) or the mail settings.")
    else:
        hint = " Retried until the retry period ended."
    alert_raise(Alert.Kind.NOTIFICATION_FAILED, f"{change.number + ': ' if change else ''}{what} could not be sent "
                f"(delivery {delivery.pk}, {delivery.attempts} attempt(s)): {str(exc)[:500]}.{hint}",
                actor=ACTOR, change=change)


def _finish(run: _Run, *, status: str, **fields: Any) -> None:
    """Release the lease with the new status — only if the lease is still ours (compare-and-set)."""
    if not run.lease.release(status=status, updated_at=run.clock(), **fields):
        raise LeaseLost
    run.delivery.status = status
