"""Sending one delivery: claim it by compare-and-set, send, record, retry with exponential backoff or fail.

Every state change of a Delivery is one short transaction; no transaction is held across SMTP or HTTP.

The guarantee (e-mail): a batch recorded as sent is never sent again. A worker is killed or loses its lease between
the SMTP server's acceptance of a batch and the commit that records it: that one batch is sent again by the worker
that takes over, with the same Message-ID (mail stores and clients that de-duplicate on Message-ID drop it). No
other batch can be repeated, and no two workers hold a delivery at once unless a lease expires under a live worker
(leases are renewed per batch and outlast the SMTP timeout). Callbacks: the same, for the one request, with the
same ``X-Exmaint-Delivery`` id for receivers that de-duplicate.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from changes import audit
from changes.models import Change
from changes.states import State

from . import conf, senders
from .models import CalendarInvite, Delivery

log = logging.getLogger(__name__)
ACTOR = "system:notifications"
Status = Delivery.Status


class LeaseLost(Exception):
    """Another worker took the delivery over (our lease expired): stop without touching it."""


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


def claim(delivery_id: int, *, worker: str, now: datetime) -> Delivery | None:
    """Compare-and-set: only one worker wins a due row; a dead worker's row is taken over once its lease expired."""
    lease = now + timedelta(seconds=int(conf.get("LEASE_SECONDS")))
    won = Delivery.objects.filter(pk=delivery_id).filter(
        Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(status=Status.SENDING, lease_expires_at__lt=now)
    ).update(status=Status.SENDING, lease_owner=worker, lease_expires_at=lease, attempts=F("attempts") + 1,
             updated_at=now)
    if not won:
        return None
    Delivery.objects.filter(pk=delivery_id, first_attempt_at__isnull=True).update(first_attempt_at=now)
    return Delivery.objects.select_related("change").get(pk=delivery_id)


def deliver(delivery_id: int, *, worker: str = "", now: datetime | None = None, sessions_factory: Any = None,
            after_batch: Callable[[Delivery, int], None] | None = None) -> str:
    """Claim and send one delivery; returns its status afterwards ('' when another worker has it or it is not due).
    ``now`` and ``after_batch`` are for tests (a controllable clock; a crash between batches)."""
    now = now or timezone.now()
    worker = f"{worker or 'worker'}:{uuid.uuid4().hex[:8]}"  # unique per claim: a restarted worker is another owner
    delivery = claim(delivery_id, worker=worker, now=now)
    if delivery is None:
        return ""
    try:
        return _attempt(delivery, worker, now, sessions_factory, after_batch)
    except LeaseLost:
        log.warning("delivery %s: lease lost to another worker; stopping", delivery_id)
        return ""


def _attempt(delivery: Delivery, worker: str, now: datetime, sessions_factory: Any,
             after_batch: Callable[[Delivery, int], None] | None) -> str:
    stale = _stale(delivery)
    if stale:
        _finish(delivery, worker, status=Status.CANCELLED, now=now, last_error=f"not sent: {stale}")
        return Status.CANCELLED
    try:
        if delivery.channel == Delivery.Channel.CALLBACK:
            code = senders.send_callback(delivery)
            _record(delivery, worker, now, 0, [delivery.payload["url"]], delivery.message_id, http_status=code)
        else:
            _resolve(delivery, worker, now, sessions_factory)
            senders.send_email(
                delivery,
                record=lambda index, batch, mid: _after(delivery, worker, now, index, batch, mid, after_batch),
                before_batch=lambda index: _check_lease(delivery, worker, now))
    except senders.SendError as exc:
        return _failed_attempt(delivery, worker, now, exc)
    _finish(delivery, worker, status=Status.SENT, now=now, sent_at=now)
    return Status.SENT


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
    return ""


def _resolve(delivery: Delivery, worker: str, now: datetime, sessions_factory: Any) -> None:
    """Freeze the recipient list (affected mailboxes read from Exchange) before batch 1, so batches never shift."""
    if delivery.recipients_resolved:
        return
    recipients, problems = senders.resolve_recipients(delivery, sessions_factory=sessions_factory)
    updated = Delivery.objects.filter(pk=delivery.pk, lease_owner=worker, recipients_resolved=False).update(
        recipients=recipients, recipients_count=len(recipients), recipients_resolved=True, last_error=problems,
        updated_at=now)
    if not updated:
        raise LeaseLost
    delivery.recipients, delivery.recipients_count, delivery.recipients_resolved = recipients, len(recipients), True


def _check_lease(delivery: Delivery, worker: str, now: datetime) -> None:
    if not Delivery.objects.filter(pk=delivery.pk, lease_owner=worker, status=Status.SENDING).exists():
        raise LeaseLost


def _after(delivery: Delivery, worker: str, now: datetime, index: int, batch: list[str], mid: str,
           hook: Callable[[Delivery, int], None] | None) -> None:
    _record(delivery, worker, now, index, batch, mid)
    if hook is not None:
        hook(delivery, index)


def _record(delivery: Delivery, worker: str, now: datetime, index: int, batch: list[str], mid: str,
            http_status: int | None = None) -> None:
    """One batch (or the callback) is out: record it and audit it in one transaction, renewing the lease."""
    lease = now + timedelta(seconds=int(conf.get("LEASE_SECONDS")))
    with transaction.atomic():
        updated = Delivery.objects.filter(pk=delivery.pk, lease_owner=worker, batches_sent=index).update(
            batches_sent=index + 1, lease_expires_at=lease, response_status=http_status, updated_at=now)
        if not updated:
            raise LeaseLost
        total = delivery.batches_total
        changes: dict[str, Any] = {
            "delivery": [None, delivery.pk], "channel": [None, delivery.channel], "kind": [None, delivery.kind],
            "recipients": [None, len(batch)], "message_id": [None, mid], "batch": [None, f"{index + 1}/{total}"],
            "sent_at": [None, timezone.now()]}
        if http_status is not None:
            changes["http_status"] = [None, http_status]
        _audit("notification.sent", delivery, changes)
    delivery.batches_sent = index + 1


def _audit(action: str, delivery: Delivery, changes: dict[str, Any], reason: str = "") -> None:
    if delivery.change_id:
        audit.append(actor=ACTOR, action=action, object_type="change", object_id=delivery.change_id,
                     changes=changes, reason=reason)
    else:
        audit.append(actor=ACTOR, action=action, object_type="delivery", object_id=delivery.pk, changes=changes,
                     reason=reason)


def _failed_attempt(delivery: Delivery, worker: str, now: datetime, exc: senders.SendError) -> str:
    hours = conf.get("CALLBACK_RETRY_HOURS" if delivery.channel == Delivery.Channel.CALLBACK else "EMAIL_RETRY_HOURS")
    started = delivery.first_attempt_at or now
    wait = backoff(delivery.attempts)
    if not exc.retryable or now + wait > started + timedelta(hours=float(hours)):
        with transaction.atomic():
            _finish(delivery, worker, status=Status.FAILED, now=now, last_error=str(exc)[:2000],
                    response_status=exc.status)
            _audit("notification.failed", delivery, {
                "delivery": [None, delivery.pk], "channel": [None, delivery.channel], "kind": [None, delivery.kind],
                "recipients": [None, delivery.recipients_count], "message_id": [None, delivery.message_id],
                "attempts": [None, delivery.attempts]}, reason=str(exc)[:2000])
        log.error("delivery %s failed for good after %s attempt(s): %s", delivery.pk, delivery.attempts, exc)
        return Status.FAILED
    _finish(delivery, worker, status=Status.PENDING, now=now, next_attempt_at=now + wait,
            last_error=str(exc)[:2000], response_status=exc.status)
    from .outbox import kick

    kick(delivery.pk, eta=now + wait)
    return Status.PENDING


def _finish(delivery: Delivery, worker: str, *, status: str, now: datetime, **fields: Any) -> None:
    """Release the lease with the new status — only if the lease is still ours (compare-and-set)."""
    updated = Delivery.objects.filter(pk=delivery.pk, lease_owner=worker).update(
        status=status, lease_owner="", lease_expires_at=None, updated_at=now, **fields)
    if not updated:
        raise LeaseLost
    delivery.status = status
