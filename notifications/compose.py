"""E-mail composition: subject, text and HTML bodies from templates, the iCalendar invite, and a Message-ID that
is derived from the delivery's dedupe key (so the same batch always carries the same Message-ID)."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from . import conf, ical
from .models import Delivery

Kind = Delivery.Kind
_OUTCOMES = {"completed": "completed", "aborted": "aborted"}


def message_id(dedupe_key: str, batch: int | None = None) -> str:
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    suffix = f".b{batch + 1}" if batch is not None else ""
    return f"<exmaint.{digest}{suffix}@{conf.mail_domain()}>"


def _fmt(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%a %d %b %Y %H:%M UTC")


def _tentative(delivery: Delivery) -> bool:
    """The invite update sent when an announced window goes back for approval (notifications.outbox._hold_invite)."""
    return delivery.kind == Kind.ANNOUNCEMENT and delivery.payload.get("status") == ical.TENTATIVE


def subject(delivery: Delivery) -> str:
    p = delivery.payload
    head = f"[{p.get('number', 'exmaint')}]"
    title = p.get("title", "")
    if _tentative(delivery):
        return f"{head} Exchange maintenance awaiting re-approval (not confirmed): {title}"
    return {
        Kind.ANNOUNCEMENT: f"{head} {'Rescheduled' if p.get('rescheduled') else 'Scheduled'} Exchange maintenance: "
                           f"{title}",
        Kind.CANCELLATION: f"{head} Cancelled: {title}",
        Kind.REMINDER: f"{head} Reminder: Exchange maintenance starts {_fmt(p.get('window_start'))}",
        Kind.START: f"{head} Exchange maintenance started: {title}",
        Kind.END: f"{head} Exchange maintenance {_OUTCOMES.get(p.get('outcome', ''), p.get('outcome', 'ended'))}: "
                  f"{title}",
        Kind.APPROVAL_REQUEST: f"{head} Approval requested: {title}",
        # The details are in the body: a subject line stays readable in a mail client's list.
        Kind.ALERT: f"{head} ALERT: {p.get('alert_title', '')}",
    }.get(delivery.kind, f"{head} {title}")


def context(delivery: Delivery) -> dict[str, Any]:
    p = delivery.payload
    before = int(p.get("minutes_before") or 0)
    return {
        "p": p, "kind": delivery.kind, "subject": subject(delivery),
        "start": _fmt(p.get("window_start")), "end": _fmt(p.get("window_end")),
        "tentative": _tentative(delivery),
        "previous": _previous(p),
        "servers": ", ".join(p.get("servers", [])),
        "before": f"{before // 60} hours" if before >= 120 else f"{before} minutes" if before else "",
        "outcome": _OUTCOMES.get(p.get("outcome", ""), p.get("outcome", "")),
        "change_url": f"{conf.public_url()}/api/v1/changes/{p['change_id']}/" if p.get("change_id") else "",
    }


def _previous(p: dict[str, Any]) -> str:
    """The slot an update takes back, when it differs from the one proposed now ('' otherwise)."""
    if not p.get("previous_start") or (p["previous_start"], p.get("previous_end")) == (p.get("window_start"),
                                                                                       p.get("window_end")):
        return ""
    return f"{_fmt(p['previous_start'])} – {_fmt(p.get('previous_end'))}"


def build(delivery: Delivery, batch: int, recipients: list[str], *, connection: Any = None) -> EmailMultiAlternatives:
    """One message of one batch: everyone in Bcc (people on a notify list must not see each other's addresses)."""
    ctx = context(delivery)
    text = render_to_string(f"notifications/email/{delivery.kind}.txt", ctx)
    html = render_to_string(f"notifications/email/{delivery.kind}.html", ctx)
    sender = settings.DEFAULT_FROM_EMAIL
    msg = EmailMultiAlternatives(
        subject=ctx["subject"], body=text, from_email=sender, to=[], bcc=recipients, connection=connection,
        headers={"To": "undisclosed-recipients:;", "Message-ID": message_id(delivery.dedupe_key, batch),
                 "Auto-Submitted": "auto-generated", "X-Exmaint-Change": str(delivery.payload.get("number", ""))},
    )
    msg.attach_alternative(html, "text/html")
    if delivery.kind in (Kind.ANNOUNCEMENT, Kind.CANCELLATION):
        method = delivery.payload["method"]
        invite = ical.invite(delivery.payload, organizer=_address(sender), stamp=delivery.created_at).decode()
        # Outlook treats a text/calendar alternative with a method parameter as a meeting request/cancellation;
        # the .ics attachment serves clients that only look at attachments.
        msg.attach_alternative(invite, f"text/calendar; method={method}")
        msg.attach("invite.ics", invite, "application/ics")
    return msg


def _address(sender: str) -> str:
    return sender.rsplit("<", 1)[-1].rstrip(">").strip() if "<" in sender else sender
