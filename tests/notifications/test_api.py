"""GET /api/v1/changes/{id}/deliveries/, the calendar feed (token or secret URL), the report's section, the command."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from icalendar import Calendar

from changes import audit, services
from changes.models import FreezeWindow
from notifications import signing
from notifications.models import CalendarKey, CallbackSecret
from notifications.secrets import callback_secret_for
from reports.context import build_report_data
from reports.render import render_html
from tests.conftest import make_user, window

from .fixtures import create, drain

pytestmark = pytest.mark.django_db


def test_deliveries_list_each_email_and_callback_with_attempts_and_status(requester, alice, servers, api,
                                                                          receiver, smtp) -> None:
    change = create(requester, callback_url=receiver.url)
    services.change_approve(change, actor=alice, comment="ok")
    rows = api(requester).get(f"/api/v1/changes/{change.pk}/deliveries/").json()
    kinds = [(r["channel"], r["kind"], r["status"]) for r in rows]
    assert ("email", "approval_request", "pending") in kinds
    assert ("email", "announcement", "pending") in kinds and ("callback", "state_change", "pending") in kinds
    assert {"attempts", "recipients_count", "next_attempt_at", "last_error", "message_id"} <= set(rows[0])


def test_deliveries_follow_the_visibility_of_the_change(requester, servers, api) -> None:
    change = create(requester)
    other = make_user("jira", "requester", source="jira", client=True)
    assert api(other).get(f"/api/v1/changes/{change.pk}/deliveries/").status_code == 404
    assert api(make_user("nobody")).get(f"/api/v1/changes/{change.pk}/deliveries/").status_code == 403
    assert api(None).get(f"/api/v1/changes/{change.pk}/deliveries/").status_code == 401


def test_the_calendar_feed_lists_scheduled_windows_and_freezes_for_a_token(requester, alice, operator, servers,
                                                                          api) -> None:
    scheduled = create(requester, change_type="standard")
    waiting = create(requester, ref="CHG2", hours=5)
    start, end = window(48, 6)
    FreezeWindow.objects.create(start=start, end=end, reason="year-end close", created_by=alice)
    response = api(operator).get("/api/v1/calendar.ics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    cal = Calendar.from_ical(response.content)
    uids = {str(e["UID"]) for e in cal.walk("VEVENT")}
    assert scheduled.mail_thread.uid in uids and waiting.mail_thread.uid not in uids
    assert any(str(e["SUMMARY"]).startswith("Change freeze") for e in cal.walk("VEVENT"))


def test_the_calendar_feed_works_from_a_secret_url_and_only_the_newest_one(operator, servers, api) -> None:
    url = api(operator).post("/api/v1/calendar/key/").json()["url"]
    key = url.split("key=", 1)[1]
    assert url.startswith("https://exmaint.example.com/api/v1/calendar.ics?key=")
    anonymous = api(None)
    assert anonymous.get(f"/api/v1/calendar.ics?key={key}").status_code == 200
    api(operator).post("/api/v1/calendar/key/")
    assert anonymous.get(f"/api/v1/calendar.ics?key={key}").status_code == 401
    assert anonymous.get("/api/v1/calendar.ics").status_code == 401
    assert anonymous.get("/api/v1/calendar.ics?key=guess").status_code == 401


def test_the_report_lists_the_notifications_sent(requester, alice, servers, smtp, receiver) -> None:
    from notifications.secrets import callback_secret_rotate

    callback_secret_rotate(requester.api_client, actor="system:test")
    change = create(requester, change_type="standard", callback_url=receiver.url)
    drain()
    head = audit.AuditEvent.objects.order_by("-seq").first()
    data = build_report_data(change.pk, head_seq=head.seq, head_hash=head.hash)
    assert {(n.kind, n.channel, n.status) for n in data.notifications} == {
        ("Announcement (invite)", "e-mail", "sent"), ("State change", "callback", "sent")}
    announcement = next(n for n in data.notifications if n.channel == "e-mail")
    assert announcement.recipients == "2" and announcement.message_id.startswith("<exmaint.")
    html = render_html(data).replace("<wbr>", "")  # long values carry break opportunities in the PDF
    assert "Announcement (invite)" in html and announcement.message_id.replace("<", "&lt;").replace(">", "&gt;") in html


def test_rotate_callback_secret_prints_a_new_secret_that_signs_callbacks(requester, capsys) -> None:
    call_command("rotate_callback_secret", "servicenow")
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert callback_secret_for(requester.api_client.pk) == secret
    assert secret not in CallbackSecret.objects.get().secret_encrypted  # stored encrypted
    headers = signing.sign(secret, b"{}")
    assert signing.verify(secret, headers, b"{}")
    assert audit.AuditEvent.objects.filter(action="callback_secret.created").exists()


def test_making_and_rotating_the_calendar_key_is_audited_without_the_key(operator, api) -> None:
    first = api(operator).post("/api/v1/calendar/key/").json()["url"].split("key=", 1)[1]
    second = api(operator).post("/api/v1/calendar/key/").json()["url"].split("key=", 1)[1]
    events = list(audit.AuditEvent.objects.filter(action__startswith="calendar_key.").order_by("seq"))
    assert [e.action for e in events] == ["calendar_key.created", "calendar_key.rotated"]
    assert all(e.object_type == "user" and e.object_id == str(operator.pk) for e in events)
    assert events[0].actor == events[1].actor != ""
    stored = " ".join(f"{e.changes} {e.reason}" for e in events)
    assert first not in stored and second not in stored and CalendarKey.hash(second) not in stored


def test_the_calendar_feed_does_not_query_the_servers_once_per_change_or_freeze(requester, alice, operator, servers,
                                                                               api) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def freeze(hours: float, *names: str) -> None:
        start, end = window(hours, 2)
        FreezeWindow.objects.create(start=start, end=end, reason="freeze", created_by=alice).servers.set(
            [servers[n] for n in names])

    create(requester, change_type="standard", servers=("EX01",))
    freeze(100, "EX01")
    client = api(operator)
    client.get("/api/v1/calendar.ics")  # the token is made on first use
    with CaptureQueriesContext(connection) as one:
        assert client.get("/api/v1/calendar.ics").status_code == 200
    create(requester, ref="CHG2", change_type="standard", servers=("EX02", "EX03"), hours=30)
    create(requester, ref="CHG3", change_type="standard", servers=("EX05",), hours=60)
    freeze(120, "EX02")
    freeze(140, "EX03", "EX04")
    with CaptureQueriesContext(connection) as three:
        response = client.get("/api/v1/calendar.ics")
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert len(events) == 6 and len(three) == len(one)
    assert {str(e["LOCATION"]) for e in events if "LOCATION" in e} == {"EX01", "EX02, EX03", "EX05"}
