"""Issue 13 D12: a title is whatever the ITSM sent. CR/LF in it made every e-mail of the change fail with
BadHeaderError; every outgoing channel must carry hostile titles intact (bodies) or safely flattened (headers)."""
from __future__ import annotations

import json

import pytest
from icalendar import Calendar

from changes import services
from notifications.models import Delivery
from notifications.secrets import callback_secret_rotate
from tests.conftest import window

from .fixtures import drain

pytestmark = pytest.mark.django_db

HOSTILE = {
    "crlf": "Patch EX01\r\nBcc: victim@evil.example\r\n\r\nInjected body",
    "lf": "Patch EX01\nX-Injected: yes",
    "cr": "Patch EX01\rSubject: forged",
    "unicode_breaks": "Patch EX01\u2028line\u2029para\x85next\x0bvt\x0cff",
    "non_ascii": "Mise à jour d’Exchange – Größe 日本語 ✓",
    "long": "Exchange 2019 CU15 " + "x" * 181,  # 200 characters, the longest title the API takes
    "quotes": "\"Quoted\" 'single' =?utf-8?q?not-an-encoded-word?= <tag> & ; , :",
}


def create(requester, title: str, **extra):
    start, end = window(0)
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": f"CHG-{abs(hash(title)) % 10**8}", "title": title,
        "description": "", "change_type": "normal", "risk": "low", "impact": "medium", "servers": ["EX01"],
        "plan": "maintenance", "window_start": start, "window_end": end, "requested_by": "carol@example.com",
        "notify": ["exchange-team@example.com"], "callback_url": "", "notify_affected_mailboxes": False, **extra})
    return change


def flat(text: str) -> str:
    """What a header may show of a title: its words, whitespace runs as one space."""
    return " ".join(text.split())


@pytest.mark.parametrize("name", list(HOSTILE))
def test_every_e_mail_of_a_change_with_a_hostile_title_goes_out_with_one_subject_line(
        name, requester, alice, bob, servers, smtp) -> None:
    title = HOSTILE[name]
    change = create(requester, title)
    drain()
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    change.refresh_from_db()
    services.change_cancel(change, actor=requester, reason="moved to next week")
    drain()
    emails = Delivery.objects.filter(change=change, channel="email")
    stuck = emails.exclude(status__in=("sent", "cancelled"))  # cancelled: reminders of the cancelled window
    assert not stuck.exists(), [(d.kind, d.status, d.last_error) for d in stuck]
    sent = {d.kind for d in emails.filter(status="sent")}
    assert {"approval_request", "announcement", "cancellation"} <= sent
    assert len(smtp.messages) >= 3
    for received in smtp.messages:
        message = received.message
        subject = str(message["Subject"])
        assert "\n" not in subject and "\r" not in subject
        assert flat(title)[:60] in flat(subject)
        # Nothing from the title became a header of its own, nor a recipient.
        assert message["Bcc"] is None and message["X-Injected"] is None
        assert [k for k in message.keys() if k.lower() == "subject"] == ["Subject"]
        assert "victim@evil.example" not in received.rcpt_tos
        assert change.number in message.get_body(("plain",)).get_content()
    # The body shows the title as given, line breaks and all (escaped in HTML).
    html = smtp.messages[0].message.get_body(("html",)).get_content()
    assert "<tag>" not in html


@pytest.mark.parametrize("name", ["crlf", "non_ascii", "quotes", "long"])
def test_the_invite_and_the_calendar_feed_carry_the_title_as_one_summary(name, requester, alice, servers, smtp,
                                                                        auditor, api) -> None:
    title = HOSTILE[name]
    change = create(requester, title)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    [announcement] = [m for m in smtp.messages if "Scheduled" in str(m.message["Subject"])]
    [part] = [p for p in announcement.message.walk() if p.get_content_type() == "text/calendar"]
    [event] = Calendar.from_ical(part.get_payload(decode=True)).walk("VEVENT")
    assert str(event["SUMMARY"]).endswith(title.replace("\r\n", "\n").replace("\r", "\n")) or \
        flat(title) in flat(str(event["SUMMARY"]))
    feed = api(auditor).get("/api/v1/calendar.ics")
    assert feed.status_code == 200
    [entry] = [e for e in Calendar.from_ical(feed.content).walk("VEVENT") if change.number in str(e["SUMMARY"])]
    assert flat(title) in flat(str(entry["SUMMARY"]))
    for line in feed.content.split(b"\r\n"):
        assert b"\n" not in line and b"\r" not in line  # every content line stays one (folded) line


@pytest.mark.parametrize("name", ["crlf", "non_ascii", "quotes", "long"])
def test_the_callback_carries_the_title_exactly_and_its_headers_stay_clean(name, requester, servers, receiver,
                                                                          alice) -> None:
    callback_secret_rotate(requester.api_client, actor="system:test")
    change = create(requester, HOSTILE[name], callback_url=receiver.url)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    assert receiver.requests, Delivery.objects.filter(change=change, channel="callback").values_list("last_error")
    for headers, body in receiver.requests:
        assert all("\n" not in v and "\r" not in v for v in headers.values())
        assert "X-Injected" not in headers
        sent = json.loads(body)
        assert sent.get("title", HOSTILE[name]) == HOSTILE[name]
