"""E-mail through a real SMTP server on 127.0.0.1: who gets what, text + HTML, Bcc, audit events."""
from __future__ import annotations

import pytest

from changes import services
from changes.models import Alert, AuditEvent, Pause
from changes.run_services import alert_raise, change_pause
from changes.services import change_transition
from changes.states import State
from notifications.models import Delivery
from tests.conftest import make_user

from .fixtures import create, deliveries, drain

pytestmark = pytest.mark.django_db


def test_the_announcement_reaches_the_notify_list_in_bcc_with_text_and_html(requester, alice, servers, smtp) -> None:
    change = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    [announcement] = [m for m in smtp.messages if "Scheduled" in m.message["Subject"]]
    assert sorted(announcement.rcpt_tos) == ["exchange-team@example.com", "helpdesk@example.com"]
    assert announcement.message["To"] == "undisclosed-recipients:;"
    assert "exchange-team@example.com" not in str(announcement.message)  # Bcc never shows in the headers
    types = {part.get_content_type() for part in announcement.message.walk()}
    assert {"text/plain", "text/html", "text/calendar"} <= types
    text = announcement.message.get_body(("plain",)).get_content()
    assert change.number in text and "EX01" in text


def test_approvers_are_asked_but_never_the_requester(requester, alice, bob, carol, servers, smtp) -> None:
    make_user("ops-superuser", email="root@example.com", superuser=True)
    make_user("nomail", "approver")
    change = create(requester)  # requested_by carol@example.com, an approver herself
    drain()
    [request] = [m for m in smtp.messages if "Approval requested" in m.message["Subject"]]
    assert sorted(request.rcpt_tos) == ["alice@example.com", "bob@example.com", "root@example.com"]
    assert "carol@example.com" not in request.rcpt_tos
    assert deliveries(change, kind="approval_request")[0].status == "sent"


def test_the_requester_by_user_name_is_not_asked_either(requester, alice, servers, smtp) -> None:
    make_user("dave", "approver", email="dave@example.com")
    change = create(requester, requested_by="DAVE")
    [request] = deliveries(change, kind="approval_request")
    assert request.recipients == ["alice@example.com"]


def test_a_standard_change_asks_nobody_for_approval(requester, alice, servers, smtp) -> None:
    change = create(requester, change_type="standard")
    assert not deliveries(change, kind="approval_request")
    assert deliveries(change, kind="announcement")


def test_operators_are_alerted_when_a_window_pauses(requester, operator, servers, smtp) -> None:
    operator.email = "olga@example.com"
    operator.save()
    change = create(requester, change_type="standard")
    alert_raise(Alert.Kind.PAUSED, f"{change.number}: step 3 failed", actor="system:runner", change=change)
    alert_raise(Alert.Kind.PAUSED, f"{change.number}: step 3 failed", actor="system:runner", change=change)
    drain()
    alerts = [m for m in smtp.messages if "ALERT" in m.message["Subject"]]
    assert len(alerts) == 1 and alerts[0].rcpt_tos == ["olga@example.com"]
    assert "step 3 failed" in alerts[0].message.get_body(("html",)).get_content()


def test_the_pause_alert_says_why_from_the_pause_record(requester, operator, servers, smtp) -> None:
    operator.email = "olga@example.com"
    operator.save()
    change = create(requester, change_type="standard")
    change_transition(change.pk, State.RUNNING, actor="system:runner", reason="window started")
    change_pause(change.pk, actor="system:runner", code=Pause.Reason.GATE_REFUSED, server=servers["EX01"],
                 message="step 1 (Backups) failed: DB02 has no backup", alert_kind=Alert.Kind.PRECHECK_BLOCKED)
    drain()
    [alert] = [m for m in smtp.messages if "ALERT" in m.message["Subject"]]
    assert "Why it paused: A pre-check refused the window" in alert.message.get_body(("plain",)).get_content()


def test_a_server_alert_without_a_change_still_reaches_operators(operator, servers, smtp) -> None:
    operator.email = "olga@example.com"
    operator.save()
    alert_raise(Alert.Kind.LEFT_IN_MAINTENANCE, "EX01 left in maintenance", actor="system:watchdog",
                server=servers["EX01"])
    drain()
    [alert] = smtp.messages
    assert "Server in maintenance" in alert.message["Subject"]
    assert Delivery.objects.get(kind="alert").status == "sent"


def test_every_message_sent_is_an_audit_event_with_kind_count_and_message_id(requester, alice, servers,
                                                                              smtp) -> None:
    change = create(requester)
    drain()
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    events = AuditEvent.objects.filter(object_type="change", object_id=str(change.pk), action="notification.sent")
    by_kind = {e.changes["kind"][1]: e.changes for e in events}
    assert set(by_kind) == {"approval_request", "announcement"}
    announcement = by_kind["announcement"]
    assert announcement["recipients"][1] == 2 and announcement["channel"][1] == "email"
    sent = [m for m in smtp.messages if "Scheduled" in m.message["Subject"]][0]
    assert announcement["message_id"][1] == sent.message_id
    assert events.first().actor == "system:notifications"


def test_an_approval_request_no_longer_pending_is_not_sent(requester, alice, servers, smtp) -> None:
    change = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    drain()
    [request] = deliveries(change, kind="approval_request")
    assert request.status == "cancelled" and "no longer awaits approval" in request.last_error
    assert not [m for m in smtp.messages if "Approval requested" in m.message["Subject"]]


def test_the_same_event_never_creates_two_deliveries(requester, alice, servers, smtp) -> None:
    from notifications.outbox import _add

    change = create(requester)
    before = Delivery.objects.count()
    again = _add(change, "email", "start", f"change:{change.pk}:start", {}, recipients=["a@example.com"])
    same = _add(change, "email", "start", f"change:{change.pk}:start", {}, recipients=["b@example.com"])
    assert again.pk == same.pk and Delivery.objects.count() == before + 1


def test_the_dispatch_is_queued_only_when_the_transaction_commits(requester, servers, monkeypatch,
                                                                  django_capture_on_commit_callbacks) -> None:
    queued: list[int] = []
    monkeypatch.setattr("notifications.outbox.kick", lambda pk, eta=None: queued.append(pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        change = create(requester)
        assert queued == []
    for callback in callbacks:
        callback()
    assert queued == [d.pk for d in deliveries(change)]


def test_start_and_end_messages_carry_the_outcome(requester, servers, smtp) -> None:
    from changes.services import change_transition
    from changes.states import State

    change = create(requester, change_type="standard")
    change_transition(change.pk, State.RUNNING, actor="system:runner", reason="window started")
    change_transition(change.pk, State.ABORTED, actor="system:runner",
                      reason="exit and verification done after an abort")
    drain()
    subjects = [m.message["Subject"] for m in smtp.messages]
    assert any("maintenance started" in s for s in subjects)
    [end] = [m for m in smtp.messages if "maintenance aborted" in m.message["Subject"]]
    assert "exit and verification done after an abort" in end.message.get_body(("plain",)).get_content()
    assert deliveries(change, kind="reminder", status="cancelled")  # superseded once the window started
