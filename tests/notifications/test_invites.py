"""The calendar invite across schedule → move → cancel: one UID, SEQUENCE raised, REQUEST then CANCEL; the move of an
approved window back to approval (tentative at once, confirmed on re-approval, cancelled on rejection); reminders."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from icalendar import Calendar

from changes import services
from changes.models import Change
from notifications.models import Delivery

from .fixtures import Received, SmtpSink, create, deliveries, drain

pytestmark = pytest.mark.django_db


def invite_of(received) -> Calendar:
    [part] = [p for p in received.message.walk() if p.get_content_type() == "text/calendar"]
    return Calendar.from_ical(part.get_payload(decode=True))


def event_of(cal: Calendar):
    [event] = cal.walk("VEVENT")
    return event


@dataclass
class Invite:
    """One received message that carries an invite, as a calendar client reads it."""

    received: Received
    calendar: Calendar

    @property
    def method(self) -> str:
        return str(self.calendar["METHOD"])

    @property
    def event(self):  # noqa: ANN201 - an icalendar Event
        return event_of(self.calendar)

    @property
    def text(self) -> str:
        return self.received.message.get_body(("plain",)).get_content()


def invites(smtp: SmtpSink) -> list[Invite]:
    """Every invite received, in order: whatever the subject, so an unexpected update cannot hide."""
    return [Invite(m, invite_of(m)) for m in smtp.messages
            if any(p.get_content_type() == "text/calendar" for p in m.message.walk())]


def move(change: Change, actor, days: float) -> datetime:
    start = change.window_start + timedelta(days=days)
    services.change_update(change, actor=actor, data={"window_start": start, "window_end": start + timedelta(hours=2)})
    change.refresh_from_db()
    return start


def test_the_invite_keeps_its_uid_raises_its_sequence_and_ends_cancelled(requester, alice, servers, smtp) -> None:
    change = create(requester, change_type="standard")
    drain()
    services.change_update(change, actor=requester, data={
        "window_start": change.window_start + timedelta(days=1), "window_end": change.window_end + timedelta(days=1)})
    drain()
    services.change_cancel(change, actor=requester, reason="vendor pulled the CU")
    drain()
    # A standard change is re-scheduled in the same transaction as its move: no tentative step in between.
    calendars = [i.calendar for i in invites(smtp)]
    assert [str(c["METHOD"]) for c in calendars] == ["REQUEST", "REQUEST", "CANCEL"]
    events = [event_of(c) for c in calendars]
    assert {str(e["UID"]) for e in events} == {change.mail_thread.uid}
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert events[0].decoded("DTSTART") == change.window_start
    assert events[1].decoded("DTSTART") == change.window_start + timedelta(days=1)
    assert [str(e["STATUS"]) for e in events] == ["CONFIRMED", "CONFIRMED", "CANCELLED"]


def test_a_window_moved_back_to_approval_is_tentative_at_once_confirmed_when_approved_again_then_cancelled(
        requester, alice, servers, smtp) -> None:
    change = create(requester)  # normal, low risk: one approval
    services.change_approve(change, actor=alice, comment="CU15 tested in the lab")
    drain()
    first = change.window_start
    moved = move(change, requester, days=1)
    assert change.state == "awaiting_approval"
    drain()
    # Before anyone decides: holders of the invite already know the old slot no longer stands.
    [announced, held] = invites(smtp)
    assert (held.method, str(held.event["STATUS"])) == ("REQUEST", "TENTATIVE")
    assert held.event.decoded("DTSTART") == moved
    assert "awaiting re-approval" in held.received.message["Subject"]
    assert str(held.event["SUMMARY"]).startswith("[Awaiting re-approval]")
    assert "awaits re-approval" in str(held.event["DESCRIPTION"])
    assert f"no longer takes place {first:%a %d %b %Y %H:%M} – " in held.text
    assert sorted(held.received.rcpt_tos) == ["exchange-team@example.com", "helpdesk@example.com"]

    change = services.change_approve(change, actor=alice, comment="the new slot is fine")
    drain()
    services.change_cancel(change, actor=requester, reason="vendor pulled the CU")
    drain()
    received = invites(smtp)
    assert [(i.method, str(i.event["STATUS"])) for i in received] == [
        ("REQUEST", "CONFIRMED"), ("REQUEST", "TENTATIVE"), ("REQUEST", "CONFIRMED"), ("CANCEL", "CANCELLED")]
    assert {str(i.event["UID"]) for i in received} == {change.mail_thread.uid}
    sequences = [int(i.event["SEQUENCE"]) for i in received]
    assert all(a < b for a, b in zip(sequences, sequences[1:], strict=False)), sequences
    assert [i.event.decoded("DTSTART") for i in received] == [first, moved, moved, moved]
    # Outlook acts on the method parameter of the text/calendar part, not on the calendar's body.
    assert [part.get_params(header="content-type")[1] for i in received for part in i.received.message.walk()
            if part.get_content_type() == "text/calendar"] == [("method", i.method) for i in received]
    confirmed = received[2]
    assert "approved again" in confirmed.text and not str(confirmed.event["SUMMARY"]).startswith("[Awaiting")


def test_a_rejection_after_the_move_back_cancels_the_entry_where_it_now_stands(requester, alice, bob, servers,
                                                                               smtp) -> None:
    change = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    moved = move(change, requester, days=2)
    drain()
    services.change_reject(change, actor=bob, comment="not in quarter-end week")
    drain()
    received = invites(smtp)
    assert [(i.method, str(i.event["STATUS"]), int(i.event["SEQUENCE"])) for i in received] == [
        ("REQUEST", "CONFIRMED", 0), ("REQUEST", "TENTATIVE", 1), ("CANCEL", "CANCELLED", 2)]
    assert received[2].event.decoded("DTSTART") == moved
    assert "not in quarter-end week" in received[2].text


def test_a_second_move_while_awaiting_re_approval_moves_the_tentative_entry_again(requester, alice, servers,
                                                                                   smtp) -> None:
    change = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    move(change, requester, days=1)
    drain()
    again = move(change, requester, days=1)
    drain()
    held = invites(smtp)[1:]
    assert [(str(i.event["STATUS"]), int(i.event["SEQUENCE"])) for i in held] == [("TENTATIVE", 1), ("TENTATIVE", 2)]
    assert held[-1].event.decoded("DTSTART") == again


def test_a_tentative_update_still_unsent_when_the_change_is_approved_again_is_dropped(requester, alice, servers,
                                                                                      smtp) -> None:
    change = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    move(change, requester, days=1)
    services.change_approve(change, actor=alice, comment="the new slot is fine")  # before any worker sent it
    drain()
    assert [(str(i.event["STATUS"]), int(i.event["SEQUENCE"])) for i in invites(smtp)] == [
        ("CONFIRMED", 0), ("CONFIRMED", 2)]
    [held] = [d for d in deliveries(change, kind="announcement") if d.payload.get("status") == "TENTATIVE"]
    assert held.status == "cancelled" and "superseded" in held.last_error


def test_a_change_never_scheduled_sends_no_invite_when_its_window_moves(requester, servers, smtp) -> None:
    change = create(requester)
    move(change, requester, days=1)
    drain()
    assert deliveries(change, kind="announcement") == [] and invites(smtp) == []


def test_every_batch_carries_identical_invite_bytes(requester, servers, smtp, notification_settings) -> None:
    notification_settings["BATCH_SIZE"] = 1
    create(requester, change_type="standard")
    drain()
    parts = [p.get_payload(decode=True) for m in smtp.messages if "Scheduled" in m.message["Subject"]
             for p in m.message.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 2 and parts[0] == parts[1]


def test_reminders_default_to_a_day_and_an_hour_before(requester, servers) -> None:
    change = create(requester, change_type="standard")
    reminders = deliveries(change, kind="reminder")
    assert sorted(change.window_start - r.not_before for r in reminders) == [timedelta(hours=1), timedelta(days=1)]


def test_reminders_are_configurable(requester, servers, notification_settings) -> None:
    notification_settings["REMINDER_MINUTES"] = [30]
    change = create(requester, change_type="standard")
    [reminder] = deliveries(change, kind="reminder")
    assert change.window_start - reminder.not_before == timedelta(minutes=30)


def test_a_reminder_waits_for_its_time_then_goes_out(requester, servers, smtp, settings) -> None:
    settings.EXMAINT = {**settings.EXMAINT, "BUSINESS_TIME_ZONE": "Europe/Berlin"}
    change = create(requester, change_type="standard")
    drain()
    assert not [m for m in smtp.messages if "Reminder" in m.message["Subject"]]
    drain(now=change.window_start - timedelta(minutes=59))
    subjects = [m.message["Subject"] for m in smtp.messages if "Reminder" in m.message["Subject"]]
    local = change.window_start.astimezone(ZoneInfo("Europe/Berlin"))
    assert subjects == [f"[{change.number}] Reminder: Exchange maintenance starts {local:%a %d %b %Y %H:%M} "
                        "Europe/Berlin"] * 2


def test_moving_the_window_supersedes_the_old_reminders(requester, servers, smtp) -> None:
    change = create(requester, change_type="standard")
    old = {r.pk for r in deliveries(change, kind="reminder")}
    moved = change.window_start + timedelta(days=2)
    services.change_update(change, actor=requester, data={"window_start": moved,
                                                         "window_end": moved + timedelta(hours=2)})
    assert {r.status for r in Delivery.objects.filter(pk__in=old)} == {"cancelled"}
    fresh = [r for r in deliveries(change, kind="reminder") if r.pk not in old]
    assert sorted(moved - r.not_before for r in fresh) == [timedelta(hours=1), timedelta(days=1)]
    drain(now=moved - timedelta(minutes=1))
    assert len([m for m in smtp.messages if "Reminder" in m.message["Subject"]]) == 2


def test_no_reminder_is_planned_for_a_time_already_past(requester, servers) -> None:
    from changes.models import Change

    change = create(requester, change_type="standard")
    Change.objects.filter(pk=change.pk).update(window_start=timezone.now() + timedelta(minutes=30))
    change.refresh_from_db()
    Delivery.objects.filter(change=change).delete()
    from notifications.outbox import _announce

    _announce(change)
    assert deliveries(change, kind="reminder") == []


def test_a_change_never_announced_sends_no_cancellation(requester, servers, smtp) -> None:
    change = create(requester)
    services.change_cancel(change, actor=requester, reason="not needed")
    assert deliveries(change, kind="cancellation") == []
