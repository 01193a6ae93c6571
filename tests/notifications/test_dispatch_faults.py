"""The dispatcher under slow servers and unexpected errors: the lease is renewed per batch and checked before each
one; any exception is a failed attempt (retried, then failed and audited); an unreadable Exchange server is retried
before its users are given up on, and the delivery says so."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.template import TemplateDoesNotExist
from django.utils import timezone

from changes.models import Alert, AuditEvent
from notifications import compose, dispatch
from notifications.models import CallbackSecret, Delivery
from notifications.secrets import callback_secret_rotate

from .fixtures import announcement, create, deliveries, drain, sim_factory

pytestmark = pytest.mark.django_db
NOTIFY = tuple(f"user{n:02d}@example.com" for n in range(25))  # batches of 10, 10, 5


class FakeClock:
    """Stands in for ``django.utils.timezone.now``: time moves only when the test says so."""

    def __init__(self) -> None:
        self.t = timezone.now()

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timezone, "now", fake)
    return fake


def announced_to(smtp) -> list[str]:
    return [r for m in smtp.messages if "Scheduled" in m.message["Subject"] for r in m.rcpt_tos]


def slow_smtp(monkeypatch, clock: FakeClock, seconds: float, during: Any = None) -> None:
    """Every message takes ``seconds`` to be accepted; ``during(batch)`` runs while batch ``batch`` is accepted."""
    build = compose.build
    busy = []

    def slow_build(delivery: Delivery, batch: int, recipients: list[str], **kwargs: Any):
        message = build(delivery, batch, recipients, **kwargs)
        send = message.send

        def slow_send(*args: Any, **kw: Any) -> int:
            sent = send(*args, **kw)
            if not busy:  # the slow worker only, not the one the sweep starts meanwhile
                busy.append(1)
                try:
                    clock.advance(seconds)
                    if during is not None:
                        during(batch)
                finally:
                    busy.clear()
            return sent

        message.send = slow_send
        return message

    monkeypatch.setattr(compose, "build", slow_build)


def failing_send(monkeypatch, batch: int, error: BaseException, *, after_sending: bool) -> None:
    """The first attempt at batch ``batch`` raises ``error``: before reaching the SMTP server (refused) or after
    it took the message in (``after_sending``: the answer was lost). Later attempts send normally."""
    build = compose.build
    failed: list[int] = []

    def failing_build(delivery: Delivery, index: int, recipients: list[str], **kwargs: Any):
        message = build(delivery, index, recipients, **kwargs)
        if index == batch and not failed:
            send = message.send

            def fail(*args: Any, **kw: Any) -> int:
                failed.append(index)
                if after_sending:
                    send(*args, **kw)
                raise error
            message.send = fail
        return message

    monkeypatch.setattr(compose, "build", failing_build)


# --- 1. the lease -------------------------------------------------------------------------------------------------

def test_a_send_longer_than_the_lease_keeps_it_and_no_batch_is_sent_twice(requester, servers, smtp, clock,
                                                                           monkeypatch) -> None:
    change = create(requester, change_type="standard", notify=NOTIFY)
    row = announcement(change)
    swept: list[dict[int, str]] = []
    # 200 s per batch against a 300 s lease: the whole send (600 s) outlasts one lease, each batch does not.
    slow_smtp(monkeypatch, clock, 200, during=lambda batch: swept.append(drain()) if batch == 1 else None)
    assert dispatch.deliver(row.pk, worker="w1") == "sent"
    assert swept == [{}]  # the periodic sweep, 400 s into the send, found nothing to take over
    assert sorted(announced_to(smtp)) == sorted(NOTIFY)  # each recipient once
    row.refresh_from_db()
    assert (row.status, row.batches_sent, row.attempts) == ("sent", 3, 1)


def test_the_lease_is_renewed_from_the_current_time_after_each_batch(requester, servers, smtp, clock) -> None:
    change = create(requester, change_type="standard", notify=NOTIFY)
    row = announcement(change)
    leases: list[datetime] = []

    def later(delivery: Delivery, index: int) -> None:
        leases.append(Delivery.objects.get(pk=delivery.pk).lease_expires_at - clock())
        clock.advance(100)

    dispatch.deliver(row.pk, worker="w1", after_batch=later)
    assert leases == [timedelta(seconds=300)] * 3


def test_a_worker_whose_lease_expired_between_batches_stops_without_sending(requester, servers, smtp,
                                                                            clock) -> None:
    change = create(requester, change_type="standard", notify=NOTIFY)
    row = announcement(change)

    def stall(delivery: Delivery, index: int) -> None:
        if index == 0:
            clock.advance(301)  # stalled (a paused VM, a long GC) past its lease: the sweep may take over any time

    assert dispatch.deliver(row.pk, worker="w1", after_batch=stall) == ""
    row.refresh_from_db()
    assert (row.status, row.batches_sent) == ("sending", 1)
    assert len(announced_to(smtp)) == 10  # the second batch was not sent
    assert drain()[row.pk] == "sent"  # the sweep takes it over and finishes
    assert sorted(announced_to(smtp)) == sorted(NOTIFY)


class Killed(BaseException):
    """A worker killed between the SMTP server's acceptance and the commit recording it (escapes every handler)."""


def test_a_batch_accepted_but_never_recorded_is_sent_again_and_marked_in_doubt(requester, servers, smtp, clock,
                                                                              monkeypatch) -> None:
    change = create(requester, change_type="standard", notify=NOTIFY)
    row = announcement(change)
    record = dispatch._record

    def killed_before_recording_batch_two(run, index, *args: Any, **kwargs: Any) -> None:
        if index == 1:
            raise Killed
        record(run, index, *args, **kwargs)

    monkeypatch.setattr(dispatch, "_record", killed_before_recording_batch_two)
    with pytest.raises(Killed):
        dispatch.deliver(row.pk, worker="w1")
    monkeypatch.setattr(dispatch, "_record", record)
    row.refresh_from_db()
    assert (row.status, row.batches_sent, row.batch_in_flight) == ("sending", 1, 1)
    assert len(announced_to(smtp)) == 20  # the SMTP server has batches 1 and 2
    clock.advance(301)  # the dead worker's lease runs out
    assert drain()[row.pk] == "sent"
    received = announced_to(smtp)
    assert sorted(set(received)) == sorted(NOTIFY)
    twice = sorted(r for r in set(received) if received.count(r) > 1)
    assert twice == sorted(NOTIFY[10:20])  # batch 2 only, with the same Message-ID both times
    ids = [m.message["Message-ID"] for m in smtp.messages if "user10@example.com" in m.rcpt_tos]
    assert len(ids) == 2 and ids[0] == ids[1]
    sent = [e.changes for e in AuditEvent.objects.filter(action="notification.sent", object_id=str(change.pk))]
    flagged = [c["batch"][1] for c in sent if c.get("sent_again_in_doubt")]
    assert flagged == ["2/3"]  # batch 3 went out once, as a first try: not flagged
    row.refresh_from_db()
    assert row.batch_in_flight is None


def test_a_send_that_failed_outright_is_retried_without_being_marked_in_doubt(requester, servers, smtp, clock,
                                                                              monkeypatch) -> None:
    change = create(requester, change_type="standard", notify=NOTIFY)
    row = announcement(change)
    failing_send(monkeypatch, 1, ConnectionRefusedError(111, "Connection refused"), after_sending=False)
    assert dispatch.deliver(row.pk, worker="w1") == "pending"
    row.refresh_from_db()
    assert (row.batches_sent, row.batch_in_flight) == (1, None)
    clock.advance(3600)
    assert drain()[row.pk] == "sent"
    sent = AuditEvent.objects.filter(action="notification.sent", object_id=str(change.pk))
    assert not any(e.changes.get("sent_again_in_doubt") for e in sent)
    assert sorted(announced_to(smtp)) == sorted(NOTIFY)  # each once


# --- 2. any exception is a failed attempt ---------------------------------------------------------------------------

def test_a_template_error_is_not_retried_it_fails_at_once_audited_and_alerted(requester, operator, servers, smtp,
                                                                             monkeypatch, caplog) -> None:
    operator.email = "olga@example.com"
    operator.save()
    change = create(requester, change_type="standard")
    row = announcement(change)

    def broken(*args: Any, **kwargs: Any):
        raise TemplateDoesNotExist("notifications/email/announcement.txt")

    monkeypatch.setattr(compose, "build", broken)
    now = timezone.now()
    with caplog.at_level(logging.ERROR, logger="notifications.dispatch"):
        assert drain(now=now)[row.pk] == "failed"
    assert any("failed for good" in r.getMessage() for r in caplog.records)
    row.refresh_from_db()
    # The same data fails the same way: no retry for a day, no lease left, flagged for an edit to send it again.
    assert (row.status, row.lease_owner, row.attempts, row.permanent_error) == ("failed", "", 1, True)
    assert "TemplateDoesNotExist" in row.last_error
    [event] = AuditEvent.objects.filter(action="notification.failed", object_id=str(change.pk))
    assert "TemplateDoesNotExist" in event.reason
    [alert] = Alert.objects.filter(change=change, kind="notification_failed")
    assert "could not be built" in alert.message and "Not retried" in alert.message
    assert [d.recipients for d in deliveries(change, kind="alert")] == [["olga@example.com"]]
    assert not announced_to(smtp)
    assert drain(now=now + timedelta(hours=1)).get(row.pk) is None  # never taken again


def test_a_callback_secret_that_cannot_be_decrypted_is_retried_then_failed(requester, servers, receiver,
                                                                            notification_settings) -> None:
    notification_settings["CALLBACK_RETRY_HOURS"] = 0.01
    callback_secret_rotate(requester.api_client, actor="system:test")
    CallbackSecret.objects.update(secret_encrypted="not-a-fernet-token")
    change = create(requester, change_type="standard", callback_url=receiver.url)
    [row] = deliveries(change, channel="callback")
    now = timezone.now()
    assert drain(now=now)[row.pk] == "pending"
    row.refresh_from_db()
    assert "cannot be decrypted" in row.last_error and row.status == "pending"
    assert drain(now=now + timedelta(seconds=31))[row.pk] == "failed"
    assert AuditEvent.objects.filter(action="notification.failed", object_id=str(change.pk)).count() == 1
    assert receiver.requests == []


def test_a_callback_recorded_by_a_worker_that_died_is_not_posted_again(requester, servers, receiver) -> None:
    callback_secret_rotate(requester.api_client, actor="system:test")
    change = create(requester, change_type="standard", callback_url=receiver.url)
    [row] = deliveries(change, channel="callback")
    now = timezone.now()
    dispatch.claim(row.pk, worker="dead", now=now)
    Delivery.objects.filter(pk=row.pk).update(batches_sent=1)  # POSTed and recorded, then killed
    assert dispatch.deliver(row.pk, worker="w2", now=now + timedelta(seconds=301)) == "sent"
    assert receiver.requests == []


# --- 3. an Exchange server that cannot be read ----------------------------------------------------------------------

def test_an_unreadable_server_is_retried_and_its_users_get_the_notice_once_it_answers(requester, servers, smtp,
                                                                                     sim) -> None:
    calls: list[str] = []
    readable = sim_factory(sim)

    def flaky(server: Any) -> Any:
        calls.append(server.name)
        if len(calls) == 1:
            raise RuntimeError("open_sessions: WinRM listener not reachable")  # not only ExchangeSessionError
        return readable(server)

    change = create(requester, change_type="standard", affected=True)
    row = announcement(change)
    now = timezone.now()
    assert drain(now=now, sessions_factory=flaky)[row.pk] == "pending"
    row.refresh_from_db()
    assert not row.recipients_resolved and "EX01" in row.last_error and "WinRM listener" in row.last_error
    assert not announced_to(smtp)
    assert drain(now=now + timedelta(seconds=31), sessions_factory=flaky)[row.pk] == "sent"
    assert len(set(announced_to(smtp))) == len(announced_to(smtp)) == 26  # 2 notify + 24 mailboxes
    row.refresh_from_db()
    assert row.recipients_problems == ""


def test_when_the_retry_period_ends_the_others_get_it_and_the_audit_says_whose_users_did_not(
        requester, servers, smtp, sim, notification_settings) -> None:
    notification_settings["EMAIL_RETRY_HOURS"] = 0.01  # 36 s
    sim.inject("unreachable", "EX01", times=-1)
    change = create(requester, change_type="standard", affected=True)
    row = announcement(change)
    now = timezone.now()
    drain(now=now, sessions_factory=sim_factory(sim))
    assert drain(now=now + timedelta(seconds=31), sessions_factory=sim_factory(sim))[row.pk] == "sent"
    assert sorted(announced_to(smtp)) == ["exchange-team@example.com", "helpdesk@example.com"]
    row.refresh_from_db()
    assert "the affected users of EX01 could not be read" in row.recipients_problems
    [event] = AuditEvent.objects.filter(action="notification.sent", object_id=str(change.pk),
                                        changes__kind__1="announcement")
    assert "the affected users of EX01 could not be read" in event.changes["recipients_problems"][1]
    assert "the affected users of EX01 could not be read" in event.reason


def test_a_notice_for_affected_users_only_fails_and_is_audited_when_none_can_be_read(
        requester, servers, smtp, sim, notification_settings) -> None:
    notification_settings["EMAIL_RETRY_HOURS"] = 0.01
    sim.inject("unreachable", "EX01", times=-1)
    change = create(requester, change_type="standard", affected=True, notify=())
    row = announcement(change)
    now = timezone.now()
    drain(now=now, sessions_factory=sim_factory(sim))
    assert drain(now=now + timedelta(seconds=31), sessions_factory=sim_factory(sim))[row.pk] == "failed"
    [event] = AuditEvent.objects.filter(action="notification.failed", object_id=str(change.pk))
    assert "the affected users of EX01 could not be read" in event.reason
    assert not announced_to(smtp)


def test_a_batch_whose_send_timed_out_is_retried_and_marked_in_doubt(requester, servers, smtp, clock,
                                                                     monkeypatch) -> None:
    # The SMTP server may have taken the message in before the answer was lost: the retry says so.
    change = create(requester, change_type="standard", notify=NOTIFY)
    row = announcement(change)
    failing_send(monkeypatch, 0, TimeoutError("timed out"), after_sending=True)
    assert dispatch.deliver(row.pk, worker="w1") == "pending"
    row.refresh_from_db()
    assert (row.batches_sent, row.batch_in_flight) == (0, 0)
    clock.advance(3600)
    assert drain()[row.pk] == "sent"
    sent = AuditEvent.objects.filter(action="notification.sent", object_id=str(change.pk)).order_by("seq")
    assert [bool(e.changes.get("sent_again_in_doubt")) for e in sent] == [True, False, False]
    assert sorted(set(announced_to(smtp))) == sorted(NOTIFY)
