"""E-mail composition: subject, text and HTML bodies from templates, the iCalendar invite, the thread headers.

The message is built with the standard library's ``email.message.EmailMessage`` and an SMTP policy, not by hand:
headers are folded and RFC 2047-encoded by the library (encoded words of at most 75 characters), and every body
part is quoted-printable (text) or base64 (the invite), so the message is 7-bit clean and needs no BODY=8BITMIME
from the server. Every header value that comes from data (a title, a number) goes through ``header_text`` first:
a CR or LF in a header is refused by the library (and by Django before it, as BadHeaderError) and would otherwise
stop every mail of the change.

What a mail says is built from the change as it is now (``payload_of``): the payload keeps the facts of the event
(the window announced, the SEQUENCE, the reason), the change gives its current title, so an edit of a title that
could not be sent fixes the mails sent after it.
"""
from __future__ import annotations

import base64
import email.header
import email.message
import email.policy
import email.utils
import hashlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.mail import EmailMessage as DjangoEmailMessage
from django.template.loader import render_to_string

from . import conf, ical
from .models import Delivery, MailThread
from .text import one_line as header_text

Kind = Delivery.Kind
_OUTCOMES = {"completed": "completed", "aborted": "aborted"}
# 7-bit clean on the wire (quoted-printable/base64 bodies, encoded-word headers), CRLF line ends, strict on defects.
POLICY = email.policy.SMTP.clone(cte_type="7bit", raise_on_defect=True)
# What the change gives a mail at send time (the rest is the event's, fixed when it happened).
_LIVE_FIELDS = ("title", "external_ref", "source", "requested_by")


def message_id(dedupe_key: str, uid: str = "") -> str:
    """The delivery's Message-ID, stored with the row: a digest of the change's random UID and the delivery's key,
    so it is the same on every retry and never the same on another installation."""
    digest = hashlib.sha256(f"{uid}\n{dedupe_key}".encode()).hexdigest()[:32]
    return f"<exmaint.{digest}@{conf.mail_domain()}>"


def batch_message_id(stored: str, batch: int) -> str:
    """Each batch of a delivery is a message of its own: ``<exmaint.X.bN@domain>`` from the stored ``<exmaint.X@…>``."""
    left, _, right = stored.strip("<>").partition("@")
    return f"<{left}.b{batch + 1}@{right}>"


def payload_of(delivery: Delivery) -> dict[str, Any]:
    """The payload with the change's current descriptive fields (see the module docstring)."""
    payload = dict(delivery.payload)
    change = delivery.change if delivery.change_id else None
    if change is not None:
        payload.update({name: getattr(change, name) for name in _LIVE_FIELDS}, number=change.number)
    return payload


def _when(value: str | datetime | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def business_zone() -> ZoneInfo:
    return ZoneInfo(getattr(settings, "EXMAINT", {}).get("BUSINESS_TIME_ZONE", "UTC") or "UTC")


def _fmt(value: str | datetime | None) -> str:
    when = _when(value)
    return when.astimezone(UTC).strftime("%a %d %b %Y %H:%M UTC") if when else ""


def _local(value: str | datetime | None) -> str:
    """One time in the organisation's zone, short (a subject line)."""
    when, zone = _when(value), business_zone()
    return f"{when.astimezone(zone):%a %d %b %Y %H:%M} {zone.key}" if when else ""


def span(start: str | datetime | None, end: str | datetime | None) -> str:
    """A window in the organisation's time zone and in UTC: 'Tue 08 Dec 2026 22:00 – 23:30 Europe/Berlin (Tue 08
    Dec 2026 21:00 – 22:30 UTC)' (the end's date is repeated only when it differs)."""
    first, last = _when(start), _when(end)
    if first is None:
        return ""

    def one(zone: Any, label: str) -> str:
        a = first.astimezone(zone)
        if last is None:
            return f"{a:%a %d %b %Y %H:%M} {label}"
        b = last.astimezone(zone)
        tail = f"{b:%H:%M}" if b.date() == a.date() else f"{b:%a %d %b %Y %H:%M}"
        return f"{a:%a %d %b %Y %H:%M} – {tail} {label}"

    zone = business_zone()
    if zone.key == "UTC":
        return one(UTC, "UTC")
    return f"{one(zone, zone.key)} ({one(UTC, 'UTC')})"


def _tentative(delivery: Delivery) -> bool:
    """The invite update sent when an announced window goes back for approval (notifications.outbox._hold_invite)."""
    return delivery.kind == Kind.ANNOUNCEMENT and delivery.payload.get("status") == ical.TENTATIVE


def subject(delivery: Delivery, p: dict[str, Any] | None = None) -> str:
    p = payload_of(delivery) if p is None else p
    head = f"[{p.get('number', 'exmaint')}]"
    title = p.get("title", "")
    if _tentative(delivery):
        text = f"{head} Exchange maintenance awaiting re-approval (not confirmed): {title}"
    elif delivery.kind == Kind.ANNOUNCEMENT:
        verb = ("Re-approved" if p.get("reapproved") else "Updated" if p.get("updated_fields")
                else "Rescheduled" if p.get("rescheduled") else "Scheduled")
        text = f"{head} {verb} Exchange maintenance: {title}"
    else:
        text = {
            Kind.CANCELLATION: f"{head} Cancelled: {title}",
            Kind.REMINDER: f"{head} Reminder: Exchange maintenance starts {_local(p.get('window_start'))}",
            Kind.START: f"{head} Exchange maintenance started: {title}",
            Kind.END: f"{head} Exchange maintenance {_OUTCOMES.get(p.get('outcome', ''), p.get('outcome', 'ended'))}"
                      f": {title}",
            Kind.APPROVAL_REQUEST: f"{head} {'Re-approval' if p.get('approval_voided') else 'Approval'} requested: "
                                   f"{title}",
            # The details are in the body: a subject line stays readable in a mail client's list.
            Kind.ALERT: f"{head} ALERT: {p.get('alert_title', '')}",
            Kind.AUDIT_ANCHOR: f"{head} Audit chain anchor: event #{p.get('seq', '')}",
        }.get(delivery.kind, f"{head} {title}")
    return header_text(text)


def context(delivery: Delivery) -> dict[str, Any]:
    p = payload_of(delivery)
    before = int(p.get("minutes_before") or 0)
    change_id = p.get("change_id")
    base = conf.public_url()
    return {
        "p": p, "kind": delivery.kind, "subject": subject(delivery, p),
        "start": _fmt(p.get("window_start")), "end": _fmt(p.get("window_end")),
        "window": span(p.get("window_start"), p.get("window_end")),
        "starts": span(p.get("window_start"), None),
        "actual": span(p.get("actual_start"), p.get("actual_end")) if p.get("actual_start") else "",
        "tentative": _tentative(delivery),
        "previous": _previous(p),
        "servers": ", ".join(p.get("servers", [])),
        "updated": ", ".join(p.get("updated_fields", [])),
        "before": f"{before // 60} hours" if before >= 120 else f"{before} minutes" if before else "",
        "outcome": _OUTCOMES.get(p.get("outcome", ""), p.get("outcome", "")),
        # People open the admin page (the API answers 401 in a browser); machines use the API URL.
        "change_url": f"{base}/admin/changes/change/{change_id}/change/" if change_id else "",
        "api_url": f"{base}/api/v1/changes/{change_id}/" if change_id else "",
    }


def _previous(p: dict[str, Any]) -> str:
    """The slot an update takes back, when it differs from the one proposed now ('' otherwise)."""
    if not p.get("previous_start") or (p["previous_start"], p.get("previous_end")) == (p.get("window_start"),
                                                                                       p.get("window_end")):
        return ""
    return span(p["previous_start"], p.get("previous_end"))


# --- threading ----------------------------------------------------------------------------------------------------

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def _filetime(when: datetime) -> int:
    return int((when - _FILETIME_EPOCH).total_seconds() * 10_000_000)


def thread_index(uid: str, root_time: datetime, when: datetime) -> str:
    """Outlook's Thread-Index (MS-OXOMSG 2.2.1.3, PidTagConversationIndex): a 22-byte header block — 0x01, the
    high 40 bits of the thread's FILETIME, a 16-byte GUID (here from the change's UID) — that every mail of the
    change shares, so Outlook files them in one conversation, and one 5-byte child block ordering this mail."""
    stamp = ((_filetime(root_time) >> 16) & 0xFF_FFFF_FFFF).to_bytes(5, "big")  # bits 55..16 (63..56 are 0x01)
    header = b"\x01" + stamp + hashlib.sha256(uid.encode()).digest()[:16]
    delta = max(0, _filetime(when) - _filetime(root_time))
    # The child block: 1 bit (0: the delta is in units of 2^18 FILETIME ticks; 1: 2^23), 31 bits of delta, 8 bits of
    # random/sequence (zero: deterministic, so a retried batch carries the same header).
    code, units = (0, delta >> 18) if delta < (1 << 49) else (1, delta >> 23)
    child = ((code << 39) | ((units & 0x7FFFFFFF) << 8)).to_bytes(5, "big")
    return base64.b64encode(header + child).decode()


def thread_root(uid: str) -> str:
    """The Message-ID every mail of a change refers to (References/In-Reply-To): mail clients thread on it."""
    return f"<exmaint.thread.{hashlib.sha256(uid.encode()).hexdigest()[:32]}@{conf.mail_domain()}>"


# --- the message --------------------------------------------------------------------------------------------------

class _Message(email.message.EmailMessage):
    """Django's SMTP backend calls ``as_bytes(linesep=...)`` (its own MIME classes take it); the library's doesn't."""

    def as_bytes(self, unixfrom: bool = False, policy: Any = None, linesep: str | None = None) -> bytes:
        policy = policy or self.policy
        return super().as_bytes(unixfrom, policy.clone(linesep=linesep) if linesep else policy)


class _EncodedText(str):
    """An unstructured header value written as RFC 2047 encoded words whatever it holds. The library decodes
    anything shaped like an encoded word when a header is set and writes ASCII text as it is, so a title holding
    a literal ``=?utf-8?q?…?=`` would reach the reader decoded (another text than the title). Encoded here, the
    literal survives: a reader decodes the words once and gets the text back. Words of at most 75 characters."""

    name: str

    def __new__(cls, name: str, text: str) -> _EncodedText:
        value = super().__new__(cls, text)
        value.name = name
        return value

    def fold(self, *, policy: Any) -> str:
        # maxlinelen 76: a folded line is a space and one word, so a word has at most 75 characters (RFC 2047 2).
        words = email.header.Header(str(self), "utf-8", header_name=self.name).encode(
            linesep=policy.linesep, maxlinelen=76)
        return f"{self.name}: {words}{policy.linesep}"


def _text_header(name: str, text: str) -> str:
    """A header value from data: as it is, unless it holds something a reader would decode as an encoded word."""
    return _EncodedText(name, text) if "=?" in text else text


class Mail(DjangoEmailMessage):
    """A message built once by ``build`` and handed to Django's mail backend as it is (``message()``), so sending
    goes through the configured connection and backend (SMTP, the test outbox) like any Django mail."""

    built: _Message

    def message(self) -> _Message:  # type: ignore[override]
        return self.built


def _thread(delivery: Delivery) -> MailThread | None:
    return MailThread.for_change(delivery.change) if delivery.change_id else None


def build(delivery: Delivery, batch: int, recipients: list[str], *, connection: Any = None) -> Mail:
    """One message of one batch: everyone in Bcc (people on a notify list must not see each other's addresses).
    Raises ValueError (and its kin) when the message cannot be built: a deterministic failure, never retried."""
    ctx = context(delivery)
    p = ctx["p"]
    text = render_to_string(f"notifications/email/{delivery.kind}.txt", ctx)
    html = render_to_string(f"notifications/email/{delivery.kind}.html", ctx)
    sender = header_text(settings.DEFAULT_FROM_EMAIL)
    mid = batch_message_id(delivery.message_id or message_id(delivery.dedupe_key), batch)
    msg = _Message(policy=POLICY)
    msg["Subject"] = _text_header("Subject", ctx["subject"])
    msg["From"] = sender
    msg["To"] = "undisclosed-recipients:;"
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
    msg["Message-ID"] = mid
    thread = _thread(delivery)
    if thread is not None:
        root = thread_root(thread.uid)
        msg["In-Reply-To"] = root
        msg["References"] = root
        msg["Thread-Topic"] = header_text(f"Exchange maintenance {p.get('number', '')}")
        msg["Thread-Index"] = thread_index(thread.uid, thread.created_at, delivery.created_at)
    msg["Auto-Submitted"] = "auto-generated"
    # Exchange and Outlook send no out-of-office or other automatic replies to this message (MS-OXCMAIL 2.2.3.2.20).
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Exmaint-Change"] = header_text(p.get("number", ""))
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    if delivery.kind in (Kind.ANNOUNCEMENT, Kind.CANCELLATION):
        method = p["method"]
        organizer = email.utils.parseaddr(sender)[1] or "exmaint@" + conf.mail_domain()
        invite = ical.invite(p, uid=thread.uid if thread else ical.change_uid(p["change_id"]), organizer=organizer,
                             stamp=delivery.created_at)
        # Outlook (and Apple Mail, Thunderbird, Gmail) treat a text/calendar alternative with a method parameter as
        # a meeting request/cancellation (RFC 6047). No second copy as an attachment: a client that reads both
        # may process the invite twice, and the copy once went out corrupted.
        msg.add_alternative(invite, maintype="text", subtype="calendar", params={"method": method, "charset": "utf-8"},
                            cte="base64")
    if delivery.kind == Kind.AUDIT_ANCHOR:
        # The line as a file: a mail client may wrap the body; the auditor saves the attachments and runs
        # verify_audit --anchors over them (docs/audit-trail.md).
        msg.add_attachment(p["line"] + "\n", subtype="plain", filename=f"audit-anchor-{p['seq']}.jsonl",
                           cte="base64")
    mail = Mail(subject=ctx["subject"], body="", from_email=sender, to=[], bcc=recipients, connection=connection,
                headers={"Message-ID": mid})
    mail.built = msg
    return mail
