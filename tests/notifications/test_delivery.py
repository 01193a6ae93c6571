"""Affected mailboxes from the simulator in Bcc batches; SMTP down → retried later; a crash mid-send resumes after
the last recorded batch, so nothing is sent twice."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from changes.models import AuditEvent, Server
from exchange_sim.databases import Mailbox
from exchange_sim.endpoint import RunningEndpoint, start_endpoint
from exchange_sim.model import SimulatedExchange
from notifications import dispatch
from notifications.models import Delivery
from runner.exchange.pypsrp_session import EndpointConfig, PypsrpSession
from runner.exchange.session import Endpoint

from .fixtures import SmtpSink, announcement, create, deliveries, drain, sim_factory

pytestmark = pytest.mark.django_db


def test_affected_mailbox_users_get_the_announcement_in_bcc_batches(requester, servers, smtp, sim) -> None:
    change = create(requester, change_type="standard", affected=True)
    drain(sessions_factory=sim_factory(sim))
    sent = [m for m in smtp.messages if "Scheduled" in m.message["Subject"]]
    assert [len(m.rcpt_tos) for m in sent] == [10, 10, 6]  # 2 notify + 24 mailboxes, batches of 10
    everyone = [r for m in sent for r in m.rcpt_tos]
    assert len(everyone) == len(set(everyone)) == 26
    assert "user001@contoso.com" in everyone and "exchange-team@example.com" in everyone
    assert len({m.message_id for m in sent}) == 3
    row = announcement(change)
    assert (row.status, row.recipients_count, row.batches_sent, row.batches_total) == ("sent", 26, 3, 3)
    reads = [c for c in sim.commands if c.cmdlet == "Get-Mailbox"]
    assert reads and all(dict(c.parameters).get("Server") == "EX01" for c in reads)


def test_the_mailbox_read_is_capped_and_says_so(requester, servers, smtp, sim,
                                                 notification_settings) -> None:
    notification_settings["MAILBOX_LIMIT"] = 5
    change = create(requester, change_type="standard", affected=True)
    drain(sessions_factory=sim_factory(sim))
    row = announcement(change)
    assert row.recipients_count == 7 and "more than 5 mailboxes" in row.last_error


def mailbox_pages(sim: SimulatedExchange) -> list[dict[str, object]]:
    """The Get-Mailbox calls the simulated Exchange received, with their outcome."""
    return [{**dict(c.parameters), "outcome": c.outcome} for c in sim.commands if c.cmdlet == "Get-Mailbox"]


def add_mailbox(sim: SimulatedExchange, server: str, name: str, alias: str) -> None:
    """A mailbox created late: it sits last in the directory, whatever its alias."""
    db = [d for d in sim.databases.values() if d.active == server][-1]
    db.mailboxes.append(Mailbox(name, alias, db.name))


def test_a_server_with_more_mailboxes_than_a_page_is_read_page_by_page_and_everyone_is_told_once(
        requester, servers, smtp, sim, notification_settings) -> None:
    notification_settings["MAILBOX_PAGE_SIZE"] = 10
    notification_settings["BATCH_SIZE"] = 7
    add_mailbox(sim, "EX01", "Aaron Able", "aaron")  # first by alias, last in the directory: the pages must sort
    change = create(requester, change_type="standard", affected=True)
    drain(sessions_factory=sim_factory(sim))
    sent = [m for m in smtp.messages if "Scheduled" in m.message["Subject"]]
    everyone = [r for m in sent for r in m.rcpt_tos]
    users = {f"user{n:03d}@contoso.com" for n in range(1, 25)} | {"aaron@contoso.com"}
    assert sorted(everyone) == sorted(users | {"exchange-team@example.com", "helpdesk@example.com"})  # each once
    assert [len(m.rcpt_tos) for m in sent] == [7, 7, 7, 6]  # 27 in Bcc batches of 7
    assert all(m.message["To"] == "undisclosed-recipients:;" for m in sent)
    page = {"Server": "EX01", "SortBy": "Alias", "ResultSize": 10, "outcome": "ok"}
    # aaron, user001…user009 | user009…user018 | user018…user024 (short: the last page)
    assert mailbox_pages(sim) == [page, {**page, "Filter": "Alias -ge 'user009'"},
                                  {**page, "Filter": "Alias -ge 'user018'"}]
    row = announcement(change)
    assert (row.recipients_count, row.batches_sent, row.recipients_problems) == (27, 4, "")


def test_an_alias_with_a_quote_at_a_page_boundary_is_quoted_in_the_filter(requester, servers, smtp,
                                                                          notification_settings) -> None:
    notification_settings["MAILBOX_PAGE_SIZE"] = 2
    sim = SimulatedExchange()
    sim.add_standalone("EX01")  # user001…user008
    add_mailbox(sim, "EX01", "Aaron Able", "aaron")
    add_mailbox(sim, "EX01", "Sean O'Brien", "o'brien")  # apostrophes are legal in an alias
    change = create(requester, change_type="standard", affected=True)
    drain(sessions_factory=sim_factory(sim))
    pages = mailbox_pages(sim)
    assert pages[1]["Filter"] == "Alias -ge 'o''brien'"
    assert {p["outcome"] for p in pages} == {"ok"} and len(pages) == 10  # 10 mailboxes, one new per page after #1
    everyone = [r for m in smtp.messages if "Scheduled" in m.message["Subject"] for r in m.rcpt_tos]
    assert len(everyone) == len(set(everyone)) == 12 and "o'brien@contoso.com" in everyone
    assert announcement(change).recipients_problems == ""


class PsrpSessions:
    """``runner.sessions.open_sessions`` over real WinRM/PSRP: the pypsrp adapter against the simulator's endpoint."""

    def __init__(self, running: RunningEndpoint, server: str) -> None:
        config = EndpointConfig(url=running.url_for(server, Endpoint.EXCHANGE.value),
                                configuration_name=Endpoint.EXCHANGE.value, auth="basic", username="exmaint-svc",
                                password="Sim-Passw0rd-42", encryption="never", connection_timeout=5,
                                operation_timeout=20, read_timeout=30)
        self.session = PypsrpSession(server, {Endpoint.EXCHANGE: config})

    def __call__(self, endpoint: Endpoint) -> PypsrpSession:
        return self.session

    def close(self) -> None:
        self.session.close()


def test_the_pages_travel_over_real_psrp_as_plain_parameters(requester, servers, smtp, sim,
                                                              notification_settings) -> None:
    notification_settings["MAILBOX_PAGE_SIZE"] = 10
    with start_endpoint(sim, users={"exmaint-svc": "Sim-Passw0rd-42"}) as running:
        change = create(requester, change_type="standard", affected=True)
        drain(sessions_factory=lambda server: PsrpSessions(running, server.name))
    everyone = [r for m in smtp.messages if "Scheduled" in m.message["Subject"] for r in m.rcpt_tos]
    assert len(everyone) == len(set(everyone)) == 26
    pages = mailbox_pages(sim)
    assert [p.get("Filter") for p in pages] == [None, "Alias -ge 'user010'", "Alias -ge 'user019'"]
    assert all(p["ResultSize"] == 10 and p["SortBy"] == "Alias" and p["outcome"] == "ok" for p in pages)
    assert not [c for c in sim.commands if c.is_script]  # cmdlets and parameters, never script text
    assert announcement(change).recipients_problems == ""


def test_the_paged_read_stops_at_the_cap_and_the_delivery_and_audit_say_so(requester, servers, smtp, sim,
                                                                           notification_settings) -> None:
    notification_settings["MAILBOX_LIMIT"] = 12
    notification_settings["MAILBOX_PAGE_SIZE"] = 5
    change = create(requester, change_type="standard", affected=True)
    drain(sessions_factory=sim_factory(sim))
    assert len(mailbox_pages(sim)) == 3  # 5 + 4 + 4 new: past the cap of 12; the other 11 mailboxes are not read
    row = announcement(change)
    note = "EX01: more than 12 mailboxes; only the first 12 were notified"
    assert (row.status, row.recipients_count, row.recipients_problems) == ("sent", 14, note)
    everyone = [r for m in smtp.messages if "Scheduled" in m.message["Subject"] for r in m.rcpt_tos]
    assert sorted(a for a in everyone if a.endswith("@contoso.com")) == [
        f"user{n:03d}@contoso.com" for n in range(1, 13)]
    sent_events = AuditEvent.objects.filter(action="notification.sent", object_id=str(change.pk))
    assert sent_events.count() == 2 and all(e.reason == note for e in sent_events)


def test_an_unreadable_server_is_retried_then_the_notice_reaches_the_notify_list(requester, servers, smtp, sim,
                                                                                notification_settings) -> None:
    notification_settings["EMAIL_RETRY_HOURS"] = 0.01  # 36 s: one retry fits
    sim.inject("unreachable", "EX01", times=-1)
    change = create(requester, change_type="standard", affected=True)
    now = timezone.now()
    drain(now=now, sessions_factory=sim_factory(sim))
    row = announcement(change)
    assert (row.status, row.recipients_resolved) == ("pending", False)  # not frozen without EX01's users
    assert "EX01" in row.last_error and row.next_attempt_at == now + timedelta(seconds=30)
    assert not [m for m in smtp.messages if "Scheduled" in m.message["Subject"]]

    drain(now=now + timedelta(seconds=31), sessions_factory=sim_factory(sim))  # the last attempt of the period
    row = announcement(change)
    assert row.status == "sent" and row.recipients_count == 2
    assert "the affected users of EX01 could not be read" in row.last_error
    assert "the affected users of EX01 could not be read" in row.recipients_problems


def test_smtp_down_is_retried_later_and_one_message_arrives_in_the_end(requester, servers, smtp_port) -> None:
    change = create(requester, change_type="standard")
    now = timezone.now()
    assert drain(now=now)[announcement(change).pk] == "pending"
    row = announcement(change)
    assert row.attempts == 1 and "SMTP server unreachable" in row.last_error
    assert row.next_attempt_at == now + timedelta(seconds=30)
    assert drain(now=now + timedelta(seconds=10)) == {}  # not due yet
    assert drain(now=now + timedelta(seconds=31))[row.pk] == "pending"
    assert announcement(change).next_attempt_at == now + timedelta(seconds=31 + 60)

    sink = SmtpSink(smtp_port)
    sink.start()
    try:
        drain(now=now + timedelta(minutes=5))
    finally:
        sink.stop()
    row = announcement(change)
    assert (row.status, row.attempts) == ("sent", 3)
    assert len([m for m in sink.messages if "Scheduled" in m.message["Subject"]]) == 1


def test_an_email_that_cannot_go_out_within_the_retry_period_is_failed_and_audited(requester, servers,
                                                                                   smtp_port,
                                                                                   notification_settings) -> None:
    notification_settings["EMAIL_RETRY_HOURS"] = 0.01  # 36 s
    change = create(requester, change_type="standard")
    now = timezone.now()
    drain(now=now)
    assert drain(now=now + timedelta(seconds=31))[announcement(change).pk] == "failed"
    row = announcement(change)
    assert row.status == "failed" and row.attempts == 2
    from changes.models import AuditEvent

    assert AuditEvent.objects.filter(action="notification.failed", object_id=str(change.pk)).count() == 1


class Crash(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way catches it."""


def test_a_worker_killed_between_batches_is_resumed_after_the_last_batch_sent(requester, servers, smtp, sim) -> None:
    change = create(requester, change_type="standard", affected=True)
    row = announcement(change)

    def crash_after_first(delivery: Delivery, index: int) -> None:
        if index == 0:
            raise Crash

    with pytest.raises(Crash):
        dispatch.deliver(row.pk, worker="w1", sessions_factory=sim_factory(sim), after_batch=crash_after_first)
    row.refresh_from_db()
    assert (row.status, row.batches_sent) == ("sending", 1)
    assert dispatch.deliver(row.pk, worker="w2") == ""  # the dead worker's lease still holds
    later = timezone.now() + timedelta(seconds=301)
    assert dispatch.deliver(row.pk, worker="w2", now=later) == "sent"
    everyone = [r for m in smtp.messages if "Scheduled" in m.message["Subject"] for r in m.rcpt_tos]
    assert len(everyone) == len(set(everyone)) == 26  # nobody twice, nobody missed
    row.refresh_from_db()
    assert (row.attempts, row.batches_sent) == (2, 3)


def test_two_workers_cannot_both_claim_a_delivery(requester, servers) -> None:
    change = create(requester, change_type="standard")
    row = announcement(change)
    now = timezone.now()
    assert dispatch.claim(row.pk, worker="a", now=now) is not None
    assert dispatch.claim(row.pk, worker="b", now=now) is None


def test_the_sweep_finds_due_rows_and_dead_workers_rows(requester, servers) -> None:
    change = create(requester, change_type="standard")
    row = announcement(change)
    now = timezone.now()
    dispatch.claim(row.pk, worker="dead", now=now)
    assert row.pk not in dispatch.due_ids(now)
    assert row.pk in dispatch.due_ids(now + timedelta(seconds=301))


def test_a_delivery_without_recipients_is_not_written(requester, servers) -> None:
    change = create(requester, change_type="standard", notify=())
    assert deliveries(change, channel="email", kind="announcement") == []
    assert Server.objects.count() == 5
