"""The report's data object for completed and aborted windows: what it says, and what it never shows."""
from __future__ import annotations

import dataclasses

import pytest

from changes import audit
from changes.models import AuditEvent, AuditHead
from reports.context import build_report_data, command_text, fmt_duration

from .support import ABORT_REASON, DRAIN_FAILURE, EXIT_FAILURE, RETRY_REASON, SECRET, SKIP_REASON

pytestmark = pytest.mark.django_db


def data_of(change):
    head = AuditHead.objects.get(id=1)
    return build_report_data(change.pk, head_seq=head.seq, head_hash=head.hash)


def all_text(obj) -> str:
    """Every string in the data object, joined (what the template can show)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, list):
        return "\n".join(all_text(i) for i in obj)
    if dataclasses.is_dataclass(obj):
        return "\n".join(all_text(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return str(obj)


def test_a_completed_window_has_its_summary_approvals_and_counts(completed) -> None:
    data = data_of(completed)
    assert (data.number, data.external_ref, data.server_names) == (completed.number, "CHG0030012", "EX01")
    assert data.outcome == "completed"
    assert data.planned_start == "2030-01-05 22:00:00 UTC" and data.planned_duration == "4 h 00 min 00 s"
    assert data.actual_start == "2030-01-05 22:01:00 UTC"
    assert [a.approver for a in data.approvals] == ["alice", "bob"]
    assert all(len(a.fingerprint) == 64 and a.status == "valid" for a in data.approvals)
    assert data.step_count == len(data.timeline) == 14
    assert data.decision_count == 1
    assert "CU15 installed" in data.work_done


def test_a_completed_window_lists_the_skipped_step_with_the_operators_name_and_reason(completed) -> None:
    data = data_of(completed)
    failure = next(i for i in data.issues if i.kind == "failure")
    assert DRAIN_FAILURE in failure.seen
    assert failure.decision == f"skip by olga: {SKIP_REASON}"
    assert failure.operator == "olga"
    assert failure.outcome == "step skipped"
    drain = next(s for s in data.timeline if s.key == "enter.drain_queues")
    assert drain.outcome == f"skipped by olga: {SKIP_REASON}"


def test_anomalies_say_whether_the_engine_resolved_them_itself(completed) -> None:
    anomalies = {i.seen: i for i in data_of(completed).issues if i.kind == "anomaly"}
    restart = anomalies["Get-Queue did not answer for 20 s after the restart"]
    assert (restart.decision, restart.outcome) == ("automatic", "answered on the 3rd poll")
    foreign = anomalies["OwaProxy is held Inactive by requester Sidelined (held-by-other-requester)"]
    assert foreign.decision.startswith("none needed") and "will not be cleared" in foreign.outcome


def test_pre_checks_keep_the_backup_ages_and_component_states_found_before_the_window(completed) -> None:
    prechecks = {p.key: p for p in data_of(completed).prechecks}
    backups = prechecks["precheck.backups"].tables[0]
    assert backups.columns[:3] == ["Database", "Newest backup", "Age (h)"]
    assert [row[0] for row in backups.rows] == ["DB01", "DB02"] and backups.rows[1][2] == "7.2"
    states = {row[0]: row for row in prechecks["precheck.server_state"].tables[0].rows}
    assert states["OwaProxy"][1:] == ["Inactive", "Sidelined (Inactive)"]


def test_server_state_compares_the_snapshot_with_the_verification(completed) -> None:
    state = data_of(completed).server_states[0]
    rows = {row[0]: row for row in state.components.rows}
    assert rows["HubTransport"][1] == "Active" and rows["HubTransport"][3] == "Active"
    assert rows["OwaProxy"][2] == "Sidelined: Inactive"
    assert "Sidelined on OwaProxy" in rows["OwaProxy"][4]


def test_failures_come_from_the_pause_records_as_of_the_head(completed) -> None:
    from changes.models import Pause

    pause = Pause.objects.get(change=completed)
    pause.message = "the engine's own words, not re-parsed"
    pause.save()
    before_decision = AuditEvent.objects.get(seq=pause.decided_seq - 1)
    data = build_report_data(completed.pk, head_seq=before_decision.seq, head_hash=before_decision.hash)
    [failure] = [i for i in data.issues if i.kind == "failure"]
    assert failure.seen == "the engine's own words, not re-parsed"
    assert failure.step.startswith("6. Wait for the local queues to drain")
    assert (failure.decision, failure.operator, data.decision_count) == ("no decision yet", "", 0)


def test_a_retried_exit_shows_both_failures_the_decision_and_the_open_alert(exit_retried) -> None:
    data = data_of(exit_retried)
    assert data.outcome == "completed"
    kinds = [i.kind for i in data.issues]
    assert kinds.count("failure") == 2 and "alert" in kinds
    exit_failure = [i for i in data.issues if i.kind == "failure"][-1]
    assert EXIT_FAILURE in exit_failure.seen
    assert exit_failure.decision == f"retry by olga: {RETRY_REASON}"
    assert exit_failure.outcome == "step passed after 4 attempt(s)"
    assert any("still open" in i.outcome for i in data.issues if i.kind == "alert")
    assert data.decision_count == 2


def test_a_server_never_verified_says_so() -> None:
    from reports.tables import server_state

    state = server_state("EX01", {}, {}, standalone=True)
    assert state.note == "After: not verified (the verification did not run)."


def test_an_aborted_window_records_the_abort_and_the_steps_it_left_out(aborted) -> None:
    data = data_of(aborted)
    assert data.outcome == "aborted"
    failure = next(i for i in data.issues if i.kind == "failure")
    assert failure.decision == f"abort by olga: {ABORT_REASON}"
    assert "exit path ran" in failure.outcome
    skipped = [s for s in data.timeline if s.status == "skipped"]
    assert [s.key for s in skipped] == ["enter.restart_transport", "enter.drain_queues"]
    assert all("aborted" in s.outcome for s in skipped)


@pytest.mark.parametrize("window", ["completed", "exit_retried", "aborted"])
def test_the_server_password_appears_nowhere_in_the_data(window, request) -> None:
    text = all_text(data_of(request.getfixturevalue(window)))
    assert SECRET not in text
    assert "***" in text


def test_events_after_the_head_are_left_out_and_the_state_is_read_as_of_the_head(completed, operator) -> None:
    head = AuditHead.objects.get(id=1)
    audit.append(actor=operator, action="report.downloaded", obj=completed)
    data = build_report_data(completed.pk, head_seq=head.seq, head_hash=head.hash)
    assert "report.downloaded" not in [e.action for e in data.audit_events]
    assert data.audit_events[-1].seq == head.seq
    assert data.verify_command == f"python manage.py verify_audit --head {head.hash}"
    assert data.ended_at == AuditEvent.objects.get(seq=head.seq).created_at


def test_long_command_logs_are_truncated_with_a_note(completed) -> None:
    from changes.models import StepRun

    step = StepRun.objects.get(change=completed, key="enter.snapshot")
    step.commands = [{"cmdlet": "Get-Queue", "parameters": {"Server": "EX01", "Filter": "x" * 2000},
                      "outcome": "ok"}] * 80
    step.save()
    block = next(b for b in data_of(completed).commands if "Save component votes" in b.step)
    assert len(block.lines) == 50 and "30 more command(s)" in block.note
    assert "more characters not shown" in block.lines[0].text


def test_commands_read_as_powershell_lines() -> None:
    assert command_text("Set-ServerComponentState", {"Identity": "EX01", "State": "Draining", "Confirm": False}) \
        == "Set-ServerComponentState -Identity EX01 -State Draining -Confirm:$false"
    assert command_text("Get-MailboxDatabase", {"Server": "EX01", "Status": True, "Credential": "***"}) \
        == "Get-MailboxDatabase -Server EX01 -Status -Credential ***"
    assert command_text("Get-Queue", {"Filter": "Status -eq 'Retry'"}) == "Get-Queue -Filter 'Status -eq ''Retry'''"


def test_durations_read_as_people_write_them() -> None:
    assert [fmt_duration(s) for s in (0.2, 5, 65, 3725)] == ["200 ms", "5 s", "1 min 05 s", "1 h 02 min 05 s"]


def test_server_facts_and_alerts_are_read_as_of_the_head(exit_retried, operator) -> None:
    from django.utils import timezone

    from changes import services
    from changes.models import Alert, Server

    server = Server.objects.get(name="EX01")
    # Recorded before the head (an event): the report shows it; edited after the head: the report does not.
    services.server_save(server, actor=operator, data={"version": "Exchange Server 2019 CU14", "build": "15.2.1544.4"})
    head = AuditHead.objects.get(id=1)
    before = build_report_data(exit_retried.pk, head_seq=head.seq, head_hash=head.hash)
    assert before.servers[0].version == "Exchange Server 2019 CU14 15.2.1544.4"
    services.server_save(server, actor=operator, data={"build": "15.2.1748.10", "fqdn": "ex01-new.corp.example"})
    Alert.objects.filter(change=exit_retried).update(cleared_at=timezone.now())
    Alert.objects.create(kind=Alert.Kind.OVERRUN, change=exit_retried, server=server, message="raised after the head")
    after = build_report_data(exit_retried.pk, head_seq=head.seq, head_hash=head.hash)
    assert after.servers == before.servers
    assert after.servers[0].fqdn == "ex01.corp.example"
    alerts = [i for i in after.issues if i.kind == "alert"]
    assert [a.outcome for a in alerts] == ["still open"]
    assert "raised after the head" not in all_text(after)


def test_readable_tables_names_and_notes(completed, operator) -> None:
    from changes.models import StepRun
    from reports.formatting import actor as _actor
    from reports.templatetags.report_text import breakable

    step = StepRun.objects.get(change=completed, key="precheck.server_state")
    step.key, step.findings = "precheck.transport_and_services", {
        "queues": [{"identity": "EX01\\Submission", "delivery_type": "Undefined", "next_hop": "Submission",
                    "message_count": 2, "last_error": None}],
        "services": [{"role": "Mailbox", "required_running": True, "not_running": []}]}
    step.save()
    data = data_of(completed)
    tables = next(p for p in data.prechecks if p.key == "precheck.transport_and_services").tables
    assert tables[0].columns == ["Identity", "Delivery type", "Next hop", "Messages", "Last error"]
    assert tables[0].rows[0][4] == "—" and tables[1].rows[0] == ["Mailbox", "yes", "—"]
    assert all(w.endswith("%") for w in tables[0].widths)
    # A standalone server: no empty copies table, a sentence instead.
    assert data.server_states[0].copies is None
    assert data.server_states[0].copies_note == "Standalone server: no replicated database copies."
    # The operator's decision names the person, whatever kind of actor decided.
    assert any(i.decision.startswith(f"skip by {operator.username}:") for i in data.issues)
    assert "user:" not in "".join(i.decision for i in data.issues)
    assert [_actor(a) for a in ("client:olga", "user:olga", "system:runner")] == ["olga", "olga", "system:runner"]
    assert data.clock_note == ""  # the fixtures' command times fall inside the window
    assert str(breakable("client:servicenow")) == "client:<wbr>servicenow"
    assert str(breakable("HttpProxyAvailabilityGroup")) == "Http<wbr>Proxy<wbr>Availability<wbr>Group"
    assert str(breakable("4.4.0 <b>")) == "4.4.0 &lt;b&gt;"


def test_a_scaled_engine_clock_is_noted_in_the_command_appendix(completed) -> None:
    from datetime import timedelta

    from changes.models import StepRun

    step = StepRun.objects.filter(change=completed).order_by("-order").first()
    late = (completed.run.finished_at + timedelta(minutes=30)).isoformat()
    step.commands = [{**step.commands[0], "started_at": late}]
    step.save()
    assert "faster than real time" in data_of(completed).clock_note


def test_a_notification_sent_again_in_doubt_says_it_may_have_arrived_twice(completed) -> None:
    for batch, doubt in (("1/2", False), ("2/2", True)):
        changes = {"channel": [None, "email"], "kind": [None, "announcement"], "recipients": [None, 10],
                   "message_id": [None, "<n1@contoso.com>"], "batch": [None, batch]}
        if doubt:
            changes["sent_again_in_doubt"] = [None, True]
        audit.append(actor=None, action="notification.sent", object_type="change", object_id=completed.pk,
                     changes=changes)
    head = AuditHead.objects.get(id=1)
    rows = build_report_data(completed.pk, head_seq=head.seq, head_hash=head.hash).notifications[-2:]
    assert [(r.recipients, r.status) for r in rows] == [
        ("10 (batch 1/2)", "sent"),
        ("10 (batch 2/2)", "sent again after a worker stopped mid-send: may have arrived twice")]


def test_commands_of_an_interrupted_attempt_read_sent_outcome_unknown_in_the_appendix_and_the_issues(
        completed) -> None:
    """Issue 24 item 3: a command recorded before it was sent whose answer never was (the worker died) is shown as
    such, not dropped and not shown as done."""
    from changes.models import StepRun

    step = StepRun.objects.get(change=completed, key="enter.restart_transport")
    step.commands = [
        {"cmdlet": "Restart-Service", "parameters": {"Name": "MSExchangeTransport"}, "endpoint": "default",
         "outcome": "sent, outcome unknown", "step_attempt": 1, "duration_ms": 0},
        {"cmdlet": "Get-Service", "parameters": {"Name": "MSExchangeTransport"}, "endpoint": "default",
         "outcome": "ok", "objects": 1, "step_attempt": 2, "duration_ms": 30},
    ]
    step.save()
    data = data_of(completed)
    block = next(b for b in data.commands if "Restart MSExchangeTransport" in b.step)
    assert block.lines[0].outcome.startswith("SENT, OUTCOME UNKNOWN: the attempt was interrupted")
    assert "SENT, OUTCOME UNKNOWN" in block.log and "1 command(s) of this step were sent by an interrupted" in (
        block.note)
    assert block.lines[1].outcome == "ok, 1 object(s)"
    [row] = [r for r in data.issues if "outcome unknown" in r.seen]
    assert row.seen == "sent by an interrupted attempt, outcome unknown: Restart-Service -Name MSExchangeTransport"
    assert (row.kind, row.decision) == ("anomaly", "automatic: the step ran again and re-verified the server")
