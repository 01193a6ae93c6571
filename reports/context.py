"""The report as a plain data object: everything the PDF shows, built from the database and nothing else.

``build_report_data(change_id, head_seq=..., head_hash=...)`` only reads. Its output depends on the rows and on the
audit chain head it is given (events after that head are left out), never on the clock, so the same rows and the same
head always give the same object, hence the same HTML and the same PDF bytes. Every string is already formatted for
display, so the template has no logic beyond loops, and every string is scrubbed of the servers' passwords.

The sections live beside it: ``data`` (the dataclasses), ``issues`` (failures from the engine's pause records,
anomalies, alerts), ``tables`` (findings as tables, the server's state before and after), ``appendix`` (command logs,
notifications, the audit trail). This module reads the rows once and puts them together.
"""
from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from changes.anchors import anchors_covering
from changes.models import AuditEvent, Change, Server, StepRun, WindowRun
from changes.selectors import audit_events_for
from changes.states import WINDOW_ENDED

from .appendix import audit_rows, clock_note, command_blocks, notification_rows
from .data import AnchorNote, ApprovalRow, PrecheckRow, ReportData, ServerRow, StepRow
from .evidence import build_evidence, dumps, summary
from .formatting import REDACTED, clip, command_text, fmt_dt, fmt_duration, person, span, status_words
from .install import install_tables
from .issues import issue_rows, step_outcome
from .standard import standard_template_text
from .tables import precheck_tables, server_state

# Re-exported: callers and tests read these from here.
__all__ = ["ReportData", "build_report_data", "command_text", "fmt_duration", "window_end"]

_SERVER_FACTS = ("fqdn", "dag_name", "version", "build")


def _server_facts(server: Server, head_seq: int) -> dict[str, str]:
    """The server's fqdn, DAG, version and build as they were at the audit head, not as the row reads now (operators
    edit them after a CU). Each comes from the inventory's audit events (``server.created``/``server.updated`` carry
    [before, after]): the last value set up to the head, else the value before the first edit after it; the current
    row only for a field no event ever recorded (a server created outside the services)."""
    facts = {f: getattr(server, f) or "" for f in _SERVER_FACTS}
    known: set[str] = set()
    trail = AuditEvent.objects.filter(object_type="server", object_id=str(server.pk),
                                      action__in=("server.created", "server.updated")).order_by("seq")
    for ev in trail.only("seq", "changes"):
        for f in _SERVER_FACTS:
            pair = (ev.changes or {}).get(f)
            if f in known or not (isinstance(pair, list) and len(pair) == 2):
                continue
            if ev.seq <= head_seq:
                facts[f] = str(pair[1] or "")
            else:  # the first edit after the head: what it replaced is the value at the head
                facts[f] = str(pair[0] or "")
                known.add(f)
    return facts


# --- sections -------------------------------------------------------------------------------------------------------


def _approvals(change: Change) -> list[ApprovalRow]:
    rows = []
    for a in change.approvals.select_related("approver").order_by("created_at", "id"):
        rows.append(ApprovalRow(
            approver=person(a.approver), decision=a.decision, at=fmt_dt(a.created_at), comment=a.comment,
            fingerprint=a.fingerprint, status=f"voided {fmt_dt(a.voided_at)}" if a.voided_at else "valid"))
    return rows


def window_end(change: Change, events: list[AuditEvent], run: WindowRun | None) -> datetime:
    """When the window ended: the audit event that moved the change to completed or aborted (else the run's end,
    else the change's last update). It dates the report, so a regenerated report carries the same date."""
    for ev in reversed(events):
        if ev.action == "change.transition" and (ev.changes or {}).get("state", [None, None])[1] in WINDOW_ENDED:
            return ev.created_at
    if run is not None and run.finished_at:
        return run.finished_at
    return change.updated_at


def _secrets(change: Change) -> list[str]:
    found = []
    for server in change.servers.all():
        try:
            password = server.get_password()
        except Exception:  # noqa: BLE001, S112 - an undecryptable password cannot leak either
            continue
        if len(password) >= 3:
            found.append(password)
        try:
            install_password = server.get_install_password()
        except Exception:  # noqa: BLE001 - an undecryptable password cannot leak either
            install_password = ""
        if len(install_password) >= 3:
            found.append(install_password)
    return found


def _scrub(obj: Any, secrets: list[str]) -> Any:
    """Replace every secret in every string of the object tree (defence in depth: commands are redacted when
    recorded, but error messages and notes are free text)."""
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
        return obj
    if isinstance(obj, list):
        return [_scrub(item, secrets) for item in obj]
    if is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            setattr(obj, f.name, _scrub(getattr(obj, f.name), secrets))
    return obj


def _anchor_note(last_seq: int, head_seq: int) -> AnchorNote | None:
    """The nearest external anchor at or after the change's last event, up to the report's head (so a report
    regenerated later names the same one)."""
    covering = anchors_covering(last_seq, upto=head_seq) if last_seq else []
    if not covering:
        return None
    a = covering[0]
    return AnchorNote(a.seq, a.hash, fmt_dt(a.created_at), ", ".join(a.sinks) or "none (database only)",
                      f"RFC 3161 token, TSA time {fmt_dt(a.tsa_time)}" if a.tsa_time else "no time-stamp token")


# --- the builder ----------------------------------------------------------------------------------------------------


def build_report_data(change_id: int, *, head_seq: int, head_hash: str) -> ReportData:
    """The report of ``change_id`` as of the audit chain head ``head_seq``/``head_hash``. Reads only."""
    change = Change.objects.select_related("created_by").get(pk=change_id)
    run = WindowRun.objects.filter(change=change).select_related("work_done_by").first()
    servers = list(change.servers.order_by("name"))
    facts = {sv.pk: _server_facts(sv, head_seq) for sv in servers}
    steps = list(StepRun.objects.filter(change=change).select_related("server", "decided_by").order_by("order"))
    events = list(audit_events_for(change).filter(seq__lte=head_seq))
    ended = window_end(change, events, run)
    state = change.state
    for ev in events:  # the state as of the head: a later close must not change a regenerated report
        if ev.action == "change.transition":
            state = (ev.changes or {}).get("state", [None, state])[1]
    head_event = AuditEvent.objects.filter(seq=head_seq).only("created_at").first()
    issues, decisions = issue_rows(change, steps, state, head_seq, head_event.created_at if head_event else None)
    actual_start = run.started_at if run else None
    actual_end = (run.finished_at if run and run.finished_at else ended) if run else None

    per_server: dict[str, dict[str, StepRun]] = {}
    for s in steps:
        per_server.setdefault(s.server.name if s.server_id else (servers[0].name if servers else ""), {})[s.key] = s
    context = run.context if run else {}
    states = [server_state(sv.name, (context or {}).get(sv.name) or {}, per_server.get(sv.name, {}),
                           not facts[sv.pk]["dag_name"]) for sv in servers]

    work = "not reported"
    if run and run.work_done_at:
        work = f"{fmt_dt(run.work_done_at)} by {person(run.work_done_by)}: {clip(run.work_notes, 600)}"
    close = dict(Change.CloseCode.choices).get(change.close_code, "") if state == "closed" else ""
    data = ReportData(
        change_id=change.pk, number=change.number, external_ref=change.external_ref, source=change.source,
        title=change.title, description=clip(change.description), change_type=change.get_change_type_display(),
        risk=change.get_risk_display(), impact=change.get_impact_display(), requested_by=change.requested_by,
        posted_by=change.created_by.username,
        servers=[ServerRow(s.name, facts[s.pk]["fqdn"], facts[s.pk]["dag_name"] or "standalone",
                           " ".join(p for p in (facts[s.pk]["version"], facts[s.pk]["build"]) if p)) for s in servers],
        server_names=", ".join(s.name for s in servers), plan=(run.plan if run else change.plan)
        + (f" ({run.variant})" if run and run.variant else ""),
        planned_start=fmt_dt(change.window_start), planned_end=fmt_dt(change.window_end),
        planned_duration=span(change.window_start, change.window_end),
        actual_start=fmt_dt(actual_start), actual_end=fmt_dt(actual_end),
        actual_duration=span(actual_start, actual_end),
        outcome=status_words(state), close_code=close or "not closed yet (set by the post-implementation review)",
        work_done=work, step_count=len(steps), issue_count=len(issues), decision_count=decisions,
        approvals_required=change.approvals_required, approvals=_approvals(change),
        prechecks=[PrecheckRow(s.order, s.server.name if s.server_id else "", s.key, s.name, status_words(s.status),
                               clip(s.error or s.output_summary, 600), precheck_tables(s.key, s.findings or {}))
                   for s in steps if s.phase == StepRun.Phase.PRECHECK],
        timeline=[StepRow(s.order, s.phase, s.key, s.name, s.server.name if s.server_id else "", fmt_dt(s.started_at),
                          span(s.started_at, s.finished_at), s.attempts, s.status, step_outcome(s)) for s in steps],
        issues=issues, server_states=states, notify=list(change.notify or []),
        notifications=notification_rows(events),
        audit_events=audit_rows(events), head_seq=head_seq, head_hash=head_hash,
        verify_command=f"python manage.py verify_audit --head {head_hash}",
        verify_api=f"GET /api/v1/audit/verify/?head={head_hash}",
        commands=command_blocks(change.pk, steps), ended_at=ended.astimezone(UTC), ended_at_text=fmt_dt(ended),
        clock_note=clock_note(steps, actual_end), standard_template=standard_template_text(change, head_seq),
        anchor=_anchor_note(events[-1].seq if events else 0, head_seq),
    )
    data.work, data.install = install_tables(change.work, context)
    secrets = _secrets(change)
    data = _scrub(data, secrets)
    data.approval_count = len(data.approvals)
    evidence = build_evidence(data, secrets=secrets, redacted=REDACTED)
    data.change_events = evidence["change_head"]["events"]
    data.change_head_seq, data.change_head_hash = evidence["change_head"]["seq"], evidence["change_head"]["hash"]
    data.offline_verify_command = f"exmaint-verify {data.number}.pdf --trust <CA certificate(s).pem>"
    data.evidence_json = dumps(evidence)
    data.summary_json = json.dumps(summary(data, evidence), sort_keys=True, separators=(",", ":"))
    return data
