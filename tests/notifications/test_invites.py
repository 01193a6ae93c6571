"""The calendar invite across schedule → move → cancel: one UID, SEQUENCE raised, REQUEST then CANCEL; reminders."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from icalendar import Calendar

from changes import services
from notifications.models import Delivery

from .fixtures import create, deliveries, drain

pytestmark = pytest.mark.django_db


def invite_of(received) -> Calendar:
    [part] = [p for p in received.message.walk() if p.get_content_type() == "text/calendar"]
    return Calendar.from_ical(part.get_payload(decode=True))


def event_of(cal: Calendar):
    [event] = cal.walk("VEVENT")
    return event


def test_the_invite_keeps_its_uid_raises_its_sequence_and_ends_cancelled(requester, alice, servers, smtp) -> None:
    change = create(requester, change_type="standard")
    drain()
    services.change_update(change, actor=requester, data={
        "window_start": change.window_start + timedelta(days=1), "window_end": change.window_end + timedelta(days=1)})
    drain()
    services.change_cancel(change, actor=requester, reason="vendor pulled the CU")
    drain()
    invites = [invite_of(m) for m in smtp.messages if m.message["Subject"].split("] ")[1].startswith(
        ("Scheduled", "Rescheduled", "Cancelled"))]
    assert [str(c["METHOD"]) for c in invites] == ["REQUEST", "REQUEST", "CANCEL"]
    events = [event_of(c) for c in invites]
    assert {str(e["UID"]) for e in events} == {f"change-{change.pk}@example.com"}
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert events[0].decoded("DTSTART") == change.window_start
    assert events[1].decoded("DTSTART") == change.window_start + timedelta(days=1)
    assert str(events[2]["STATUS"]) == "CANCELLED"


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


def test_a_reminder_waits_for_its_time_then_goes_out(requester, servers, smtp) -> None:
    change = create(requester, change_type="standard")
    drain()
    assert not [m for m in smtp.messages if "Reminder" in m.message["Subject"]]
    drain(now=change.window_start - timedelta(minutes=59))
    subjects = [m.message["Subject"] for m in smtp.messages if "Reminder" in m.message["Subject"]]
    assert len(subjects) == 2


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
