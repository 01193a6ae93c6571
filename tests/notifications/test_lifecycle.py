"""A change's whole life as its readers' mail clients see it, through the real SMTP server on loopback: every message
parsed with ``email.policy.strict``, every calendar object with three independent parsers (icalendar, vobject, ics),
hostile titles; the iTIP facts (METHOD, UID, SEQUENCE, STATUS, ATTENDEE/RSVP, DTSTAMP) and what the text says."""
from __future__ import annotations

import base64
import email
import email.policy
import importlib
import re
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import ics
import pytest
import vobject
from django.apps import apps
from django.utils import timezone
from icalendar import Calendar

from changes import run_services, services
from changes.models import Alert, Change, WindowRun
from changes.states import State
from notifications import compose
from notifications.models import CalendarInvite, Delivery, MailThread

from .fixtures import Received, SmtpSink, create, deliveries, drain

pytestmark = pytest.mark.django_db

HOSTILE = 'Patch "CU15"; café, naïve \\ back\\slash, 日本語 <b>bold</b>\r\nBcc: evil@example.com\nX-Injected: 1'
HOSTILE = (HOSTILE + " " + "long " * 40)[:200]
TEAM = ("exchange-team@example.com", "helpdesk@example.com")
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


@dataclass
class Mail:
    """One received message, re-parsed strictly from the bytes that crossed SMTP."""

    received: Received
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()

    @property
    def calendar_parts(self) -> list[EmailMessage]:
        return [p for p in self.message.walk() if p.get_content_type() == "text/calendar"]


def strict(received: Received) -> Mail:
    """Parse as a strict reader would, and check what a header-level reader checks."""
    raw = received.raw
    assert raw and max(raw) < 128, "7-bit clean: no 8-bit body without BODY=8BITMIME"
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    for part in message.walk():
        if not part.is_multipart():
            part.get_content()  # decodes (quoted-printable, base64, charset) or raises
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
    for word in ENCODED_WORD.findall(head):
        assert len(word) <= 75, word  # RFC 2047 2
    assert len(message.get_all("Subject")) == 1 and "X-Injected" not in message and not message.get_all("Bcc")
    assert message["X-Auto-Response-Suppress"] == "All" and message["Auto-Submitted"] == "auto-generated"
    return Mail(received, message)


def mails(smtp: SmtpSink) -> list[Mail]:
    return [strict(r) for r in smtp.messages]


@dataclass
class Parsed:
    """One calendar object read by three parsers that share no code."""

    ical: Calendar
    vobj: Any
    ics: Any

    @property
    def event(self):  # noqa: ANN201 - an icalendar Event
        [event] = self.ical.walk("VEVENT")
        return event


def parse3(text: str) -> Parsed:
    parsed = Parsed(Calendar.from_ical(text), vobject.readOne(text), ics.Calendar(text))
    events = parsed.ical.walk("VEVENT")
    assert len(parsed.vobj.contents.get("vevent", [])) == len(events) == len(parsed.ics.events)
    for event in events:
        [v] = [v for v in parsed.vobj.vevent_list if v.uid.value == str(event["UID"])]
        [i] = [i for i in parsed.ics.events if i.uid == str(event["UID"])]
        assert v.summary.value == i.name == str(event["SUMMARY"])
    return parsed


def invite(mail: Mail) -> Parsed:
    [part] = mail.calendar_parts
    parsed = parse3(part.get_content())
    assert part.get_param("charset") == "utf-8"
    assert part.get_param("method") == str(parsed.ical["METHOD"]) == parsed.vobj.method.value
    assert not [p for p in mail.message.walk() if p.get_filename()], "the invite is not attached a second time"
    return parsed


def thread_of(mail: Mail) -> tuple[str, bytes]:
    index = base64.b64decode(str(mail.message["Thread-Index"]))
    assert len(index) == 27 and index[0] == 1
    assert mail.message["In-Reply-To"] == mail.message["References"]
    return str(mail.message["References"]), index[:22]


def admin_url(change: Change) -> str:
    return f"https://exmaint.example.com/admin/changes/change/{change.pk}/change/"


@pytest.fixture
def berlin(settings) -> None:
    settings.EXMAINT = {**settings.EXMAINT, "BUSINESS_TIME_ZONE": "Europe/Berlin"}


def new_mails(smtp: SmtpSink, seen: list[Mail]) -> list[Mail]:
    drain()
    fresh = [strict(r) for r in smtp.messages[len(seen):]]
    seen.extend(fresh)
    return fresh


def test_a_change_from_request_to_cancellation_with_a_hostile_title(requester, alice, bob, servers, smtp,
                                                                    berlin) -> None:
    seen: list[Mail] = []
    change = create(requester, notify=TEAM)
    Change.objects.filter(pk=change.pk).update(title=HOSTILE)
    change.refresh_from_db()
    first_start, first_end = change.window_start, change.window_end

    # Created: the approvers are asked, with the admin page to act on.
    [request] = new_mails(smtp, seen)
    assert sorted(request.received.rcpt_tos) == ["alice@example.com", "bob@example.com"]
    assert request.subject.startswith(f"[{change.number}] Approval requested: Patch \"CU15\"; café")
    assert "\r" not in request.subject and "\n" not in request.subject and "日本語" in request.subject
    assert admin_url(change) in request.text and f"/api/v1/changes/{change.pk}/" in request.text
    assert "Europe/Berlin" in request.text and "UTC" in request.text

    # Approved: the invite.
    change = services.change_approve(change, actor=alice, comment="ok")
    [announced] = new_mails(smtp, seen)
    assert announced.subject.startswith(f"[{change.number}] Scheduled Exchange maintenance")
    assert sorted(announced.received.rcpt_tos) == sorted(TEAM)

    # Rescheduled: the approval is void, the entry goes tentative, the approvers are asked again with the facts.
    moved = first_start + timedelta(days=1)
    services.change_update(change, actor=requester, reason="vendor moved the CU; see KB 123",
                           data={"window_start": moved, "window_end": moved + timedelta(hours=3)})
    change.refresh_from_db()
    fresh = new_mails(smtp, seen)
    [held] = [m for m in fresh if m.calendar_parts]
    [again] = [m for m in fresh if not m.calendar_parts]
    assert "awaiting re-approval" in held.subject and "NOT CONFIRMED" in held.text
    assert "vendor moved the CU; see KB 123" in held.text
    assert again.subject.startswith(f"[{change.number}] Re-approval requested")
    assert "the earlier approval is VOID" in again.text
    assert f"Window approved before: {compose.span(first_start, first_end)}" in again.text
    assert f"Window proposed now:    {compose.span(change.window_start, change.window_end)}" in again.text
    assert "The requester's reason: vendor moved the CU; see KB 123" in again.text
    assert "window_end, window_start" in again.text and "void" in again.html

    # Re-approved: confirmed.
    change = services.change_approve(change, actor=bob, comment="ok again")
    [confirmed] = new_mails(smtp, seen)
    assert confirmed.subject.startswith(f"[{change.number}] Re-approved Exchange maintenance")

    # Title edited while scheduled: an update to everyone (no approval needed again).
    services.change_update(change, actor=requester, data={"title": "Install CU15; then reboot, \"fast\" ✓"})
    [retitled] = new_mails(smtp, seen)
    assert retitled.subject == f"[{change.number}] Updated Exchange maintenance: Install CU15; then reboot, " \
                               f"\"fast\" ✓"
    assert "updated (title)" in retitled.text and sorted(retitled.received.rcpt_tos) == sorted(TEAM)

    # Notify list extended: an update to everyone, the person added included.
    services.change_update(change, actor=requester, data={"notify": [*TEAM, "late@example.com"]})
    [extended] = new_mails(smtp, seen)
    assert sorted(extended.received.rcpt_tos) == sorted([*TEAM, "late@example.com"])

    # Cancelled: everyone's entry is taken back, with the reason.
    change.refresh_from_db()
    services.change_cancel(change, actor=requester, reason='CU withdrawn; "urgent", see \\\\kb')
    [cancelled] = new_mails(smtp, seen)
    assert sorted(cancelled.received.rcpt_tos) == sorted([*TEAM, "late@example.com"])
    assert 'Reason: CU withdrawn; "urgent", see \\\\kb' in cancelled.text

    invites = [announced, held, confirmed, retitled, extended, cancelled]
    parsed = [invite(m) for m in invites]
    events = [p.event for p in parsed]
    assert [str(p.ical["METHOD"]) for p in parsed] == ["REQUEST"] * 5 + ["CANCEL"]
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2, 3, 4, 5]
    assert [str(e["STATUS"]) for e in events] == ["CONFIRMED", "TENTATIVE", "CONFIRMED", "CONFIRMED", "CONFIRMED",
                                                  "CANCELLED"]
    assert [p.vobj.vevent.status.value for p in parsed] == [str(e["STATUS"]) for e in events]
    uid = change.mail_thread.uid
    assert {str(e["UID"]) for e in events} == {uid} and not uid.startswith("change-")
    assert {p.vobj.vevent.uid.value for p in parsed} == {uid}
    stamps = [e.decoded("DTSTAMP") for e in events]
    assert stamps == sorted(stamps)
    assert events[0].decoded("DTSTART") == first_start and events[-1].decoded("DTSTART") == moved
    for p in parsed:
        [attendee] = p.vobj.vevent.attendee_list
        assert attendee.params["RSVP"] == ["FALSE"] and attendee.params["CUTYPE"] == ["GROUP"]
        assert str(p.event["X-MICROSOFT-CDO-BUSYSTATUS"]) == "FREE" and str(p.event["TRANSP"]) == "TRANSPARENT"
        assert str(p.event["ORGANIZER"]) == "mailto:exmaint@example.com"
    summaries = [str(e["SUMMARY"]) for e in events]
    assert summaries[0] == " ".join(f"Exchange maintenance {change.number}: {HOSTILE}".split())
    assert summaries[3] == f"Exchange maintenance {change.number}: Install CU15; then reboot, \"fast\" ✓"
    assert [p.ics.events.copy().pop().name for p in parsed][3] == summaries[3]

    # One thread: every mail of the change refers to the same root and shares Outlook's conversation header.
    threads = {thread_of(m) for m in seen}
    assert len(threads) == 1
    assert len({m.message["Message-ID"] for m in seen}) == len(seen)


def start_window(change: Change, *, minutes_late: int = 3) -> None:
    """What the scheduler does at window_start (the run record, the transition), without waiting for 2030."""
    WindowRun.objects.create(change=change, plan=change.plan,
                             started_at=change.window_start + timedelta(minutes=minutes_late))
    services.change_transition(change.pk, State.RUNNING, actor="system:runner", reason="window started")


def finish_window(change: Change, new: State, *, minutes: int, reason: str) -> None:
    WindowRun.objects.filter(change=change).update(finished_at=change.window_start + timedelta(minutes=minutes))
    services.change_transition(change.pk, new, actor="system:runner", reason=reason)


def test_end_mails_show_the_actual_times_and_an_abort_the_operators_reason(requester, operator, servers, smtp,
                                                                           berlin) -> None:
    done = create(requester, change_type="standard", notify=TEAM)
    start_window(done)
    finish_window(done, State.COMPLETED, minutes=77, reason="all steps done")
    aborted = create(requester, ref="CHG0040002", hours=6, change_type="standard", notify=TEAM)
    start_window(aborted)
    services.change_transition(aborted.pk, State.PAUSED, actor="system:runner", reason="step 2 failed")
    run_services.change_resume(aborted, actor=operator, action="abort", reason="DAG copy queue too long; retry Sunday")
    finish_window(aborted, State.ABORTED, minutes=50, reason="exit and verification done after an abort")
    drain()
    ended = {m.message["X-Exmaint-Change"]: m for m in mails(smtp) if "maintenance completed" in m.subject
             or "maintenance aborted" in m.subject}
    completed, stopped = ended[done.number], ended[aborted.number]
    actual = compose.span(done.window_start + timedelta(minutes=3), done.window_start + timedelta(minutes=77))
    assert f"It ran {actual} (planned: {compose.span(done.window_start, done.window_end)})" in completed.text
    assert "Europe/Berlin" in actual and "UTC" in actual
    assert "Why: aborted by olga: DAG copy queue too long; retry Sunday" in stopped.text
    assert "retry Sunday" in stopped.html and admin_url(aborted) in stopped.html
    started = [m for m in mails(smtp) if "maintenance started" in m.subject]
    assert len(started) == 2 and not any(m.calendar_parts for m in started)


def test_a_message_that_cannot_be_built_alerts_at_once_and_an_edit_of_the_change_sends_it_rebuilt(
        requester, operator, alice, servers, smtp, monkeypatch) -> None:
    operator.email = "olga@example.com"
    operator.save()
    # The old composition (no header sanitising): a CR/LF title breaks the Subject every time.
    monkeypatch.setattr(compose, "header_text", lambda value: str(value or ""))
    change = create(requester, notify=TEAM)
    Change.objects.filter(pk=change.pk).update(title="Install CU15\r\nBcc: evil@example.com")
    [request] = deliveries(change, kind="approval_request")
    now = timezone.now()
    assert drain(now=now)[request.pk] == "failed"
    request.refresh_from_db()
    assert (request.attempts, request.permanent_error) == (1, True)
    assert "linefeed" in request.last_error or "newline" in request.last_error
    [alert] = Alert.objects.filter(change=change, kind=Alert.Kind.NOTIFICATION_FAILED, cleared_at__isnull=True)
    assert change.number in alert.message and "Not retried" in alert.message
    # Within the same delivery interval (the alert's delivery is queued on commit): out to the operators.
    assert [d.status for d in deliveries(change, kind="alert")] == ["pending"]
    drain()
    [alert_mail] = mails(smtp)
    assert alert_mail.received.rcpt_tos == ["olga@example.com"] and "could not be sent" in alert_mail.text
    assert drain(now=now + timedelta(hours=2)).get(request.pk) is None  # not retried as if transient

    # Fixing the title (an edit, as PATCH does) sends the same delivery again, rebuilt from the change as it is now.
    services.change_update(change, actor=requester, data={"title": "Install CU15"})
    assert drain()[request.pk] == "sent"
    [asked] = [m for m in mails(smtp) if "Approval requested" in m.subject]
    assert asked.subject == f"[{change.number}] Approval requested: Install CU15"
    assert sorted(asked.received.rcpt_tos) == ["alice@example.com"]


@pytest.mark.parametrize(("reply", "status", "alerted"), [("554 5.6.0 message content rejected", "failed", True),
                                                          ("451 4.3.0 try again later", "pending", False)])
def test_an_smtp_refusal_for_good_is_not_retried_and_alerts_a_temporary_one_is_retried(
        requester, servers, smtp, reply, status, alerted) -> None:
    change = create(requester, change_type="standard", notify=TEAM)
    smtp.refuse = reply
    [row] = deliveries(change, kind="announcement")
    assert drain()[row.pk] == status
    row.refresh_from_db()
    assert row.permanent_error is alerted and reply.split()[0] in row.last_error
    assert Alert.objects.filter(change=change, kind=Alert.Kind.NOTIFICATION_FAILED).exists() is alerted


def test_uid_and_message_id_are_random_stored_and_do_not_follow_the_sender_address(requester, servers, smtp,
                                                                                    settings) -> None:
    change = create(requester, change_type="standard", notify=TEAM)
    drain()
    settings.DEFAULT_FROM_EMAIL = "Wartung <wartung@other.example>"
    services.change_update(change, actor=requester, data={"title": "Install CU16"})
    drain()
    uids = {str(invite(m).event["UID"]) for m in mails(smtp)}
    assert uids == {change.mail_thread.uid}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", change.mail_thread.uid)
    # Another installation (or a restored database) numbers its changes the same way; its ids differ anyway.
    key = f"change:{change.pk}:announcement:0"
    assert compose.message_id(key, change.mail_thread.uid) != compose.message_id(key, "another-installation")
    stored = Delivery.objects.get(dedupe_key=key).message_id
    assert stored == compose.message_id(key, change.mail_thread.uid).replace("other.example", "example.com")
    assert str(mails(smtp)[1].message["From"]) == "Wartung <wartung@other.example>"


@pytest.mark.parametrize("moved", [False, True], ids=["notify only", "with the window"])
def test_people_taken_off_the_notify_list_get_the_cancellation_the_others_the_update(requester, servers, smtp,
                                                                                     moved) -> None:
    change = create(requester, change_type="standard", notify=(*TEAM, "leaver@example.com"))
    drain()
    later = {"window_start": change.window_start + timedelta(hours=1),
             "window_end": change.window_end + timedelta(hours=1)} if moved else {}
    services.change_update(change, actor=requester, data={"notify": list(TEAM), **later})
    drain()
    sent = mails(smtp)[1:]  # after the announcement
    [removed] = [m for m in sent if m.received.rcpt_tos == ["leaver@example.com"]]
    [update] = [m for m in sent if m.received.rcpt_tos != ["leaver@example.com"]]
    assert sorted(update.received.rcpt_tos) == sorted(TEAM) and removed.received.rcpt_tos == ["leaver@example.com"]
    assert (str(invite(update).ical["METHOD"]), int(invite(update).event["SEQUENCE"])) == ("REQUEST", 1)
    assert (str(invite(removed).ical["METHOD"]), int(invite(removed).event["SEQUENCE"])) == ("CANCEL", 1)
    assert "taken off the notify list" in removed.text


# --- the subscription feed ----------------------------------------------------------------------------------------

def feed(api, user) -> Parsed:
    response = api(user).get("/api/v1/calendar.ics")
    assert response.status_code == 200 and response["Content-Type"] == "text/calendar; charset=utf-8"
    return parse3(response.content.decode())


def test_the_feed_keeps_tentative_and_recent_past_windows_with_status_and_is_valid_when_empty(
        requester, alice, operator, servers, api, settings, notification_settings, berlin) -> None:
    empty = feed(api, operator)
    assert not empty.ical.walk("VEVENT") and [str(z["TZID"]) for z in empty.ical.walk("VTIMEZONE")] == [
        "Europe/Berlin"]  # RFC 5545 3.6: a calendar has at least one component
    assert str(empty.vobj.contents["refresh-interval"][0].value) == "PT15M"
    assert empty.ical["X-PUBLISHED-TTL"].to_ical() == b"PT15M"

    scheduled = create(requester, change_type="standard")
    tentative = create(requester, ref="CHG2", hours=5)
    tentative = services.change_approve(tentative, actor=alice, comment="ok")
    services.change_update(tentative, actor=requester, data={"window_start": tentative.window_start + timedelta(
        days=1), "window_end": tentative.window_end + timedelta(days=1)})
    waiting = create(requester, ref="CHG3", hours=10)  # never approved, never announced: not in anyone's calendar
    recent, old = (create(requester, ref=ref, hours=hours, change_type="standard") for ref, hours in
                   (("CHG4", 15), ("CHG5", 20)))
    for change, state, days_ago in ((recent, State.COMPLETED, 2), (old, State.ABORTED, 40)):
        start_window(change)
        services.change_transition(change.pk, state, actor="system:runner", reason="done")
        end = timezone.now() - timedelta(days=days_ago)
        Change.objects.filter(pk=change.pk).update(window_start=end - timedelta(hours=2), window_end=end)
    uids = {c.pk: c.mail_thread.uid for c in (scheduled, tentative, waiting, recent, old)}

    def listed() -> dict[str, tuple[str, str]]:
        parsed = feed(api, operator)
        return {str(e["UID"]): (str(e["STATUS"]), str(e["SUMMARY"])) for e in parsed.ical.walk("VEVENT")}

    events = listed()
    assert events[uids[scheduled.pk]][0] == "CONFIRMED"
    assert events[uids[tentative.pk]] == ("TENTATIVE", f"[awaiting re-approval] {tentative.number}: Install CU15")
    assert events[uids[recent.pk]] == ("CONFIRMED", f"[completed] {recent.number}: Install CU15")
    assert uids[waiting.pk] not in events and uids[old.pk] not in events
    notification_settings["CALENDAR_PAST_DAYS"] = 60
    assert listed()[uids[old.pk]] == ("CONFIRMED", f"[aborted] {old.number}: Install CU15")


def test_the_migration_keeps_the_uid_of_changes_already_announced_and_gives_the_others_a_random_one(
        requester, servers) -> None:
    forwards = importlib.import_module("notifications.migrations.0005_mail_threads_of_existing_changes").forwards
    announced = create(requester, change_type="standard")
    waiting = create(requester, ref="CHG2", hours=5)
    assert CalendarInvite.objects.filter(change=announced).exists()
    MailThread.objects.all().delete()  # as before the migration
    forwards(apps, None)
    assert MailThread.objects.get(change=announced).uid == f"change-{announced.pk}@example.com"
    assert re.fullmatch(r"[0-9a-f-]{36}", MailThread.objects.get(change=waiting).uid)
