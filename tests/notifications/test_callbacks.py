"""Signed callbacks to a real HTTP receiver on 127.0.0.1; retries with backoff; the callback URL rules."""
from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from changes import audit, services
from changes.callback_urls import CallbackUrlRefused, check_callback_url
from changes.errors import InvalidRequest
from changes.models import Pause, StepRun
from changes.run_services import change_pause
from changes.services import change_transition
from changes.states import State
from notifications import signing
from notifications.secrets import callback_secret_rotate

from .fixtures import create, deliveries, drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def secret(requester) -> str:
    return callback_secret_rotate(requester.api_client, actor="system:test")


def callbacks(change):
    return deliveries(change, channel="callback")


def test_a_callback_is_signed_and_verifies_with_the_clients_secret(requester, servers, receiver, secret) -> None:
    change = create(requester, change_type="standard", callback_url=receiver.url)
    drain()
    [(headers, body)] = receiver.requests
    assert signing.verify(secret, headers, body)
    assert not signing.verify("another-secret", headers, body)
    assert headers["Content-Type"] == "application/json"
    sent = receiver.bodies()[0]
    assert sent["change"] == change.number and sent["external_ref"] == "CHG0040001"
    assert (sent["old_state"], sent["new_state"]) == ("awaiting_approval", "scheduled")
    head = audit.AuditEvent.objects.get(seq=sent["audit_head"]["seq"])
    assert sent["audit_head"]["hash"] == head.hash
    # The head it carries is this transition's own event (the create's events are appended in one batch).
    assert (head.action, head.object_id, head.changes["state"]) == (
        "change.transition", str(change.pk), ["awaiting_approval", "scheduled"])
    assert headers["X-Exmaint-Delivery"] in callbacks(change)[0].message_id


def test_a_replayed_or_altered_callback_does_not_verify(requester, servers, receiver, secret) -> None:
    create(requester, change_type="standard", callback_url=receiver.url)
    drain()
    [(headers, body)] = receiver.requests
    assert not signing.verify(secret, headers, body.replace(b"scheduled", b"cancelled"))
    later = int(headers[signing.TIMESTAMP_HEADER]) + 600
    assert not signing.verify(secret, headers, body, now=later)


def test_the_receiver_fails_twice_then_accepts_on_the_backoff_schedule(requester, servers, receiver, secret) -> None:
    receiver.statuses = [500, 503]
    change = create(requester, change_type="standard", callback_url=receiver.url)
    [row] = callbacks(change)
    t0 = timezone.now()
    assert drain(now=t0)[row.pk] == "pending"
    row.refresh_from_db()
    assert (row.response_status, row.next_attempt_at) == (500, t0 + timedelta(seconds=30))
    assert drain(now=t0 + timedelta(seconds=29)) == {}
    assert drain(now=t0 + timedelta(seconds=30))[row.pk] == "pending"
    row.refresh_from_db()
    assert row.next_attempt_at == t0 + timedelta(seconds=30 + 60)
    assert drain(now=t0 + timedelta(seconds=90))[row.pk] == "sent"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.response_status) == ("sent", 3, 200)
    assert len(receiver.requests) == 3
    assert len({body for _, body in receiver.requests}) == 1  # the same body every time, freshly signed
    assert all(signing.verify(secret, h, b, now=int(h[signing.TIMESTAMP_HEADER])) for h, b in receiver.requests)
    sent = audit.AuditEvent.objects.filter(action="notification.sent", object_id=str(change.pk))
    assert [e.changes["channel"][1] for e in sent].count("callback") == 1


def test_a_callback_that_keeps_failing_is_marked_failed_and_visible(requester, servers, receiver, secret,
                                                                    notification_settings, api, operator) -> None:
    notification_settings["CALLBACK_RETRY_HOURS"] = 0.02  # 72 s
    receiver.statuses = [500] * 10
    change = create(requester, change_type="standard", callback_url=receiver.url)
    t0 = timezone.now()
    drain(now=t0)
    # The next retry (60 s later) would fall after the 72 s period: this attempt is the last.
    assert drain(now=t0 + timedelta(seconds=30))[callbacks(change)[0].pk] == "failed"
    rows = api(operator).get(f"/api/v1/changes/{change.pk}/deliveries/").json()
    [row] = [r for r in rows if r["channel"] == "callback"]
    assert (row["status"], row["attempts"], row["response_status"]) == ("failed", 2, 500)
    assert row["target"] == receiver.url
    assert "HTTP 500" in row["last_error"]


def test_a_client_error_is_not_retried(requester, servers, receiver, secret) -> None:
    receiver.statuses = [401]
    change = create(requester, change_type="standard", callback_url=receiver.url)
    drain()
    assert callbacks(change)[0].status == "failed" and len(receiver.requests) == 1


def test_a_paused_window_tells_the_itsm_why_as_data(requester, servers, receiver, secret) -> None:
    change = create(requester, change_type="standard", callback_url=receiver.url)
    change_transition(change.pk, State.RUNNING, actor="system:runner", reason="window started")
    step = StepRun.objects.create(change=change, order=4, phase="enter", key="enter.drain_queues", name="Drain",
                                  status="failed", server=servers["EX01"])
    change_pause(change.pk, actor="system:runner", code=Pause.Reason.UNREACHABLE, step=step,
                 message="step 4 (Drain) failed: EndpointUnreachable")
    drain()
    paused = next(b for b in receiver.bodies() if b["new_state"] == "paused")
    assert paused["pause"] == {"code": "unreachable", "title": "The server could not be reached",
                               "step": "enter.drain_queues", "step_order": 4, "server": "EX01"}
    assert paused["reason"] == "step 4 (Drain) failed: EndpointUnreachable"
    assert not any("pause" in b for b in receiver.bodies() if b["new_state"] != "paused")


def test_a_closed_change_reports_its_close_code_and_report_url(requester, operator, servers, receiver,
                                                              secret) -> None:
    change = create(requester, change_type="standard", callback_url=receiver.url)
    change_transition(change.pk, State.RUNNING, actor="system:runner", reason="window started")
    change_transition(change.pk, State.COMPLETED, actor="system:runner", reason="done")
    change.refresh_from_db()
    services.change_close(change, actor=operator, close_code="successful", close_notes="all good")
    drain()
    by_state = {b["new_state"]: b for b in receiver.bodies()}
    assert set(by_state) == {"scheduled", "running", "completed", "closed"}
    assert by_state["closed"]["close_code"] == "successful"
    report = f"https://exmaint.example.com/api/v1/changes/{change.pk}/report/"
    assert by_state["closed"]["report_url"] == by_state["completed"]["report_url"] == report
    assert "report_url" not in by_state["running"]


def test_without_a_secret_the_callback_waits_rather_than_going_unsigned(requester, servers, receiver) -> None:
    change = create(requester, change_type="standard", callback_url=receiver.url)
    drain()
    row = callbacks(change)[0]
    assert row.status == "pending" and "no callback secret" in row.last_error and receiver.requests == []


def test_rotating_the_secret_makes_the_old_one_stop_verifying(requester, servers, receiver, secret) -> None:
    new = callback_secret_rotate(requester.api_client, actor="system:test")
    create(requester, change_type="standard", callback_url=receiver.url)
    drain()
    [(headers, body)] = receiver.requests
    assert new != secret and signing.verify(new, headers, body) and not signing.verify(secret, headers, body)


# --- the URL rules ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "ftp://itsm.example.com/cb", "file:///etc/passwd", "http://user:pw@itsm.example.com/cb", "http:///nohost",
])
def test_only_http_urls_with_a_host_and_no_credentials_are_accepted(url) -> None:
    with pytest.raises(CallbackUrlRefused):
        check_callback_url(url)


@pytest.mark.parametrize("host", ["10.1.2.3", "192.168.0.10", "172.16.5.5", "169.254.169.254", "[::1]", "[fe80::1]",
                                  "0.0.0.0",  # noqa: S104 - a URL to refuse, not a bind address
                                   "[::ffff:127.0.0.1]", "127.0.0.2", "100.64.0.1"])
def test_private_loopback_and_link_local_addresses_are_refused(host) -> None:
    with pytest.raises(CallbackUrlRefused, match="callbacks may only go to public addresses"):
        check_callback_url(f"http://{host}/cb")


def test_loopback_is_refused_unless_a_setting_allows_it(notification_settings) -> None:
    assert check_callback_url("http://127.0.0.1:8080/cb")  # the tests allow 127.0.0.1/32
    notification_settings["CALLBACK_ALLOWED_NETWORKS"] = []
    with pytest.raises(CallbackUrlRefused):
        check_callback_url("http://127.0.0.1:8080/cb")


def test_every_address_a_name_resolves_to_is_checked(monkeypatch) -> None:
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(CallbackUrlRefused, match="10.0.0.7"):
        check_callback_url("https://itsm.example.com/cb")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers[:1])
    assert [str(a) for a in check_callback_url("https://itsm.example.com/cb")] == ["93.184.215.14"]


def test_a_refused_url_is_a_400_with_a_clear_message() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_callback_url("http://192.168.1.1/cb")
    assert caught.value.status == 400 and caught.value.code == "callback_url_refused"
    assert caught.value.extra == {"field": "callback_url"}


def test_the_url_is_checked_again_at_send_time(requester, servers, receiver, secret, notification_settings) -> None:
    change = create(requester, change_type="standard", callback_url=receiver.url)
    notification_settings["CALLBACK_ALLOWED_NETWORKS"] = []  # as if DNS now pointed somewhere private
    drain()
    row = callbacks(change)[0]
    assert row.status == "pending" and "public addresses" in row.last_error and receiver.requests == []


def test_the_api_refuses_a_private_callback_url_at_create_and_patch(requester, servers, api) -> None:
    from tests.conftest import payload

    client = api(requester)
    response = client.post("/api/v1/changes/", payload(callback_url="http://10.0.0.5/cb"), format="json")
    assert response.status_code == 400 and response.json()["code"] == "callback_url_refused"
    assert "10.0.0.5" in response.json()["detail"]
    created = client.post("/api/v1/changes/", payload(), format="json").json()
    response = client.patch(f"/api/v1/changes/{created['id']}/", {"callback_url": "http://169.254.169.254/"},
                            format="json")
    assert response.status_code == 400 and response.json()["code"] == "callback_url_refused"
