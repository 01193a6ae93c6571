"""The report as a plain data object: everything the PDF shows, built from the database and nothing else.

``build_report_data(change_id, head_seq=..., head_hash=...)`` only reads. Its output depends on the rows and on the
audit chain head it is given (events after that head are left out), never on the clock, so the same rows and the same
head always give the same object, hence the same HTML and the same PDF bytes. Every string is already formatted for
display, so the template has no logic beyond loops, and every string is scrubbed of the servers' passwords.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from changes.models import Alert, AuditEvent, Change, Server, StepRun, WindowRun
from changes.selectors import audit_events_for
from changes.states import WINDOW_ENDED

from .formatting import REDACTED, clip, command_text, fmt_dt, fmt_duration, fmt_time, heading, show, span

# What the appendix keeps of a step's command log; the rest is counted in a note (the API has the full log).
MAX_COMMANDS_PER_STEP = 50
MAX_AUDIT_DETAIL_CHARS = 400
_PAUSED_STEP = re.compile(r"^step (\d+) \(")
_DECISIONS = ("window.retry", "window.skip", "window.abort")
_DONE_STATES = {"passed", "skipped", "rolled_back"}


# --- the data object ------------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A small table: a title, column headings and rows of display strings."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    widths: list[str] = field(default_factory=list)  # CSS widths of the columns ("12.5%"), from their content

    def __post_init__(self) -> None:
        if not self.widths and self.columns:
            self.widths = _column_widths(self.columns, self.rows)


def _column_widths(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Share of the page width per column: enough for its longest word (a long identifier should not split), more
    for long text. Deterministic: it only depends on the strings."""
    weights = []
    for i, title in enumerate(columns):
        cells = [str(r[i]) for r in rows if i < len(r)]
        words = [1.2 * len(w) for w in title.split()] + [len(w) for text in cells for w in text.split()]  # bold head
        longest_word = max(words, default=4)
        longest_text = max((len(text) for text in cells), default=0)
        weights.append(max(min(longest_word, 26) + 3, min(longest_text, 150) / 5, 6))
    # The percentages leave 2% per column for the cells' padding and borders, which they do not count.
    share = (100 - 2 * len(weights)) / sum(weights)
    return [f"{w * share:.1f}%" for w in weights]


@dataclass
class ServerRow:
    name: str
    fqdn: str
    dag: str
    version: str


@dataclass
class ApprovalRow:
    approver: str
    decision: str
    at: str
    comment: str
    fingerprint: str
    status: str  # "valid" or "voided <when>"


@dataclass
class PrecheckRow:
    order: int
    server: str
    key: str
    name: str
    status: str
    summary: str
    tables: list[Table] = field(default_factory=list)


@dataclass
class StepRow:
    order: int
    phase: str
    key: str
    name: str
    server: str
    started: str
    duration: str
    attempts: int
    status: str
    outcome: str  # the status in words: passed, "skipped: <reason>", "failed: <error>", rolled back


@dataclass
class IssueRow:
    """One failure or anomaly: what the engine saw, what was decided (by whom, why) and how it ended."""

    number: int
    kind: str  # "failure" | "anomaly" | "alert"
    step: str
    seen: str
    decision: str
    outcome: str
    operator: str = ""  # the operator who decided, empty when automatic or none


@dataclass
class ServerState:
    server: str
    snapshot_at: str
    components: Table
    activation: Table | None
    copies: Table | None
    note: str = ""
    copies_note: str = ""  # shown instead of the copies table (a standalone server, or copies not checked)


@dataclass
class AuditRow:
    seq: int
    at: str
    actor: str
    action: str
    detail: str
    hash: str


@dataclass
class CommandLine:
    at: str
    text: str
    endpoint: str
    duration: str
    outcome: str
    detail: str


@dataclass
class CommandBlock:
    step: str
    summary: str
    lines: list[CommandLine]
    note: str = ""
    log: str = ""  # the lines as the appendix prints them: one preformatted block (cheap to lay out)


@dataclass
class ReportData:
    """Everything the report shows, in its order. Strings are display-ready and secret-free."""

    change_id: int
    number: str
    external_ref: str
    source: str
    title: str
    description: str
    change_type: str
    risk: str
    impact: str
    requested_by: str
    posted_by: str
    servers: list[ServerRow]
    server_names: str
    plan: str
    planned_start: str
    planned_end: str
    planned_duration: str
    actual_start: str
    actual_end: str
    actual_duration: str
    outcome: str
    close_code: str
    work_done: str
    step_count: int
    issue_count: int
    decision_count: int
    approvals_required: int
    approvals: list[ApprovalRow]
    prechecks: list[PrecheckRow]
    timeline: list[StepRow]
    issues: list[IssueRow]
    server_states: list[ServerState]
    notify: list[str]
    notifications: list[NotificationRow]
    audit_events: list[AuditRow]
    head_seq: int
    head_hash: str
    verify_command: str
    verify_api: str
    commands: list[CommandBlock]
    ended_at: datetime  # the window's end: also the PDF's fixed creation date
    ended_at_text: str
    clock_note: str = ""  # Appendix B: the command times run ahead of the window (the engine's clock was scaled)


@dataclass
class NotificationRow:
    """One notification sent (or given up) for the change, from its ``notification.*`` audit event."""

    time: str
    kind: str
    channel: str
    recipients: str
    message_id: str
    status: str


# --- small helpers ------------------------------------------------------------------------------------------------


def _person(user: Any) -> str:
    if user is None:
        return ""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return f"{full} ({user.username})" if full else user.username


def _actor(label: str) -> str:
    """The person behind an audit actor label: ``user:olga`` and ``client:olga`` both read ``olga``."""
    kind, _, name = label.partition(":")
    return name if kind in ("user", "client") and name else label


def _status_words(status: str) -> str:
    return status.replace("_", " ")


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
            approver=_person(a.approver), decision=a.decision, at=fmt_dt(a.created_at), comment=a.comment,
            fingerprint=a.fingerprint, status=f"voided {fmt_dt(a.voided_at)}" if a.voided_at else "valid"))
    return rows


# PostgreSQL's jsonb does not keep the key order a step wrote its findings in: columns go in this order, then any
# others alphabetically, so the table reads the same (and the PDF is the same bytes) on either database.
COLUMN_ORDER = ("identity", "name", "database", "server", "copy", "component", "role", "requester", "delivery_type",
                "next_hop", "status", "state", "message_count", "messages", "active", "copy_queue_length",
                "replay_queue_length", "newest_backup", "age_hours", "backup_in_progress", "required_running",
                "not_running", "last_error", "error", "detail")


def _ordered(columns: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(COLUMN_ORDER)}
    return sorted(columns, key=lambda c: (rank.get(c.lower(), len(rank)), c.lower()))


def _dict_table(title: str, items: list[dict[str, Any]], note: str = "") -> Table:
    columns: list[str] = []
    for item in items:
        columns += [k for k in item if k not in columns]
    columns = _ordered(columns)
    return Table(title, [heading(c) for c in columns], [[show(item.get(c)) for c in columns] for item in items], note)


def _precheck_tables(key: str, findings: dict[str, Any]) -> list[Table]:
    """Pre-check findings (runner.steps.prechecks) as tables; unknown shapes fall back to key/value rows."""
    if not findings:
        return []
    if key == "precheck.backups" and isinstance(findings.get("databases"), list):
        rows = [[str(d.get("database")), fmt_dt(d.get("newest_backup")), show(d.get("age_hours")),
                 show(d.get("backup_in_progress"))] for d in findings["databases"]]
        return [Table("Backups", ["Database", "Newest backup", "Age (h)", "Backup in progress"], rows,
                      f"Policy: newest backup at most {findings.get('max_age_hours', '?')} h old.")]
    if key == "precheck.server_state" and isinstance(findings.get("components"), dict):
        held = findings.get("not_active") or {}
        rows = [[name, str(state), ", ".join(f"{h.get('requester')} ({h.get('state')})" for h in held.get(name, []))]
                for name, state in sorted(findings["components"].items())]
        tables = [Table("Component states", ["Component", "State", "Held by"], rows)]
        extra = {k: v for k, v in findings.items() if k in ("activation", "cluster_node")}
        if extra:
            tables.append(Table("Activation and cluster", ["Setting", "Value"],
                                [[heading(k), show(v)] for k, v in sorted(extra.items())]))
        return tables
    if key == "precheck.redundancy" and isinstance(findings.get("databases"), list):
        rows = [[str(d.get("database")), show(d.get("ok")),
                 "; ".join(f"{o.get('server')}: {o.get('status')}"
                           + ("" if o.get("usable") else f" ({o.get('reason')})")
                           for o in d.get("other_copies") or []) or "none (single copy)"]
                for d in findings["databases"]]
        return [Table("Redundancy", ["Database", "Healthy copy elsewhere", "Other copies"], rows)]
    tables = []
    scalars = [[heading(k), show(v)] for k, v in sorted(findings.items())
               if not (isinstance(v, list) and v and all(isinstance(i, dict) for i in v))]
    if scalars:
        tables.append(Table("Findings", ["Item", "Value"], scalars))
    for k, v in sorted(findings.items()):
        if isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            tables.append(_dict_table(heading(k), v))
    return tables


def _outcome(step: StepRun) -> str:
    if step.status == StepRun.Status.SKIPPED:
        why = step.resolution if step.decision == "skip" else step.output_summary
        who = f" by {_person(step.decided_by)}" if step.decision == "skip" and step.decided_by else ""
        return f"skipped{who}: {clip(why, 300)}" if why else f"skipped{who}"
    if step.status == StepRun.Status.FAILED:
        return f"failed: {clip(step.error or step.output_summary, 300)}"
    if step.status == StepRun.Status.ROLLED_BACK:
        return f"rolled back: {clip(step.output_summary, 300)}" if step.output_summary else "rolled back"
    if step.status == StepRun.Status.PASSED:
        return f"passed: {clip(step.output_summary, 300)}" if step.output_summary else "passed"
    return f"{_status_words(step.status)} (did not run)" if step.status == StepRun.Status.PENDING else step.status


def _step_label(step: StepRun | None) -> str:
    if step is None:
        return "—"
    where = f" on {step.server.name}" if step.server_id else ""
    return f"{step.order}. {step.name}{where}"


def _issues(change: Change, steps: list[StepRun], events: list[AuditEvent], state: str,
            head_at: datetime | None) -> tuple[list[IssueRow], int]:
    """Failures (each pause, with the operator's decision that followed it) and anomalies (issues the steps recorded,
    alerts). Pauses and decisions come from the audit trail, since a retried step keeps only its last attempt; steps
    whose failure or decision the trail does not show (rows written directly) are taken from the step itself."""
    by_order = {s.order: s for s in steps}
    by_key: dict[str, StepRun] = {}
    for s in steps:
        by_key.setdefault(s.key, s)
    failures: list[dict[str, Any]] = []
    decisions = 0
    for ev in events:
        new_state = (ev.changes or {}).get("state", [None, None])[1]
        if ev.action == "change.transition" and new_state == "paused":
            match = _PAUSED_STEP.match(ev.reason or "")
            failures.append({"step": by_order.get(int(match.group(1))) if match else None, "seen": ev.reason,
                             "at": ev.created_at, "decision": None})
        elif ev.action in _DECISIONS:
            decisions += 1
            key = ((ev.changes or {}).get("step") or [None, None])[1]
            open_ = next((f for f in reversed(failures) if f["decision"] is None), None)
            entry = open_ if open_ is not None else {"step": by_key.get(key), "seen": "", "at": ev.created_at}
            entry["decision"] = ev
            if entry.get("step") is None and key:
                entry["step"] = by_key.get(key)
            if open_ is None:
                failures.append(entry)
    covered = {id(f["step"]) for f in failures if f["step"] is not None}
    for s in steps:
        if id(s) in covered or not (s.decision or s.status == StepRun.Status.FAILED):
            continue
        failures.append({"step": s, "seen": s.error or s.output_summary, "at": s.started_at, "decision": None,
                         "from_step": True})
        if s.decision:
            decisions += 1

    rows: list[IssueRow] = []
    for f in failures:
        step: StepRun | None = f["step"]
        ev: AuditEvent | None = f["decision"]
        operator = ""
        if ev is not None:
            operator = _actor(ev.actor)
            decision = f"{ev.action.split('.', 1)[1]} by {operator}: {ev.reason}"
        elif f.get("from_step") and step is not None and step.decision:
            operator = _person(step.decided_by) or "an operator"
            decision = f"{step.decision} by {operator}: {step.resolution}"
        else:
            decision = f"no decision: the window ended {state}" if state in WINDOW_ENDED else "no decision yet"
        action = ev.action.split(".", 1)[1] if ev is not None else (step.decision if step else "")
        if action == "abort":
            outcome = f"window aborted; the exit path ran and the window ended {state}"
        elif step is not None:
            outcome = f"step {_status_words(step.status)}" + (
                f" after {step.attempts} attempt(s)" if step.status == StepRun.Status.PASSED else "")
        else:
            outcome = f"window ended {state}"
        seen = f["seen"] or (step.error or step.output_summary if step else "")
        rows.append(IssueRow(0, "failure", _step_label(step), clip(seen), decision, outcome, operator))
    for s in steps:
        for issue in s.issues or []:
            automatic = bool(issue.get("automatic", True))
            resolution = str(issue.get("resolution") or "")
            rows.append(IssueRow(0, "anomaly", _step_label(s), clip(issue.get("summary")),
                                 "automatic" if automatic else "none needed: recorded for the review",
                                 clip(resolution) or ("resolved by the engine" if automatic else "recorded")))
    # Alerts as of the head: one raised later is left out, one cleared later (the watchdog clears overruns after
    # the window) counts as still open, so a regenerated report reads the same.
    alerts = change.alerts.exclude(kind__in=[Alert.Kind.PAUSED, Alert.Kind.PRECHECK_BLOCKED])
    if head_at is not None:
        alerts = alerts.filter(raised_at__lte=head_at)
    for alert in alerts.order_by("raised_at", "id"):
        cleared = alert.cleared_at if alert.cleared_at and (head_at is None or alert.cleared_at <= head_at) else None
        rows.append(IssueRow(0, "alert", alert.get_kind_display(), clip(alert.message), "automatic: alert raised",
                             f"cleared {fmt_dt(cleared)}" if cleared else "still open"))
    for n, row in enumerate(rows, 1):
        row.number = n
    return rows, decisions


def _non_active_votes(component: dict[str, Any]) -> str:
    votes = component.get("votes") or {}
    return ", ".join(f"{r}: {s}" for r, s in sorted(votes.items()) if s != "Active") if isinstance(votes, dict) else ""


def _server_state(name: str, state: dict[str, Any], steps: dict[str, StepRun], standalone: bool) -> ServerState:
    """Before: the snapshot taken on entering (else the pre-check's reading). After: the verification's reading."""
    snap = state.get("snapshot") or {}
    before: dict[str, dict[str, Any]] = {}
    if isinstance(snap.get("components"), dict):
        before = {n: c if isinstance(c, dict) else {"state": c} for n, c in snap["components"].items()}
    elif (pre := steps.get("precheck.server_state")) is not None and isinstance(pre.findings.get("components"), dict):
        before = {n: {"state": s} for n, s in pre.findings["components"].items()}
    verify = steps.get("verify.components")
    after: dict[str, str] = {}
    held_after: dict[str, str] = {}
    note = ""
    if verify is not None and verify.status in (StepRun.Status.PASSED, StepRun.Status.FAILED):
        found = verify.findings or {}
        not_active = found.get("not_active") or {}
        if isinstance(found.get("components"), dict):
            after = {n: str(s) for n, s in found["components"].items()}
        else:
            after = {n: ("Active" if n not in not_active else "not Active") for n in before}
            note = "After: verify.components lists only the components that are not Active; the others were Active."
        for n, holders in not_active.items():
            held_after[n] = ", ".join(f"{h.get('requester')} on {h.get('component')} ({h.get('state')})"
                                      for h in holders) or "no vote (unknown cause)"
            after.setdefault(n, "not Active")
    else:
        note = "After: not verified (the verification did not run)."
    rows = [[n, str(before.get(n, {}).get("state", "—")), _non_active_votes(before.get(n, {})),
             after.get(n, "—"), held_after.get(n, "")] for n in sorted(set(before) | set(after))]
    components = Table("Component states and requester votes",
                       ["Component", "Before", "Non-Active votes before", "After", "Held by after"], rows)
    activation = None
    ver_act = steps.get("verify.cluster_and_activation")
    if "mailbox_server" in snap or ver_act is not None:
        saved = snap.get("mailbox_server") or {}
        now = (ver_act.findings or {}) if ver_act is not None else {}
        act_now = now.get("activation") or {}
        activation = Table("Activation policy and cluster node", ["Setting", "Before", "After"], [
            ["DatabaseCopyAutoActivationPolicy", show(saved.get("policy")), show(act_now.get("policy"))],
            ["DatabaseCopyActivationDisabledAndMoveNow", show(saved.get("move_now")),
             show(act_now.get("move_now"))],
            ["Cluster node", show(snap.get("cluster_node")), show(now.get("cluster_node"))],
        ])
    copies = None
    red = steps.get("precheck.redundancy")
    ver_copies = steps.get("verify.copies")
    if red is not None or ver_copies is not None:
        problems = ((ver_copies.findings or {}).get("copies") or {}) if ver_copies is not None else {}
        after_text = ("not verified" if ver_copies is None or ver_copies.status not in ("passed", "failed")
                      else "Healthy or Mounted, queues low" if ver_copies.status == "passed" else "see problems")
        rows = []
        for d in ((red.findings or {}).get("databases") or []) if red is not None else []:
            others = "; ".join(f"{o.get('server')}: {o.get('status')}" for o in d.get("other_copies") or [])
            rows.append([str(d.get("database")), others or "single copy", after_text])
        rows += [[str(n), "—", f"problem: {p}"] for n, p in sorted(problems.items())]
        copies = Table("Database copies", ["Database", "Copies elsewhere before", "Copies here after"], rows)
    copies_note = ""
    if standalone and (copies is None or not any(r[2].startswith("problem:") for r in copies.rows)):
        copies, copies_note = None, "Standalone server: no replicated database copies."
    elif copies is None:
        copies_note = "No database copies were checked."
    return ServerState(name, fmt_dt(snap.get("taken_at")), components, activation, copies, note, copies_note)


def _commands(change_id: int, steps: list[StepRun]) -> list[CommandBlock]:
    blocks = []
    for s in steps:
        cmds = s.commands or []
        if not cmds and not s.output_summary:
            continue
        lines = []
        for c in cmds[:MAX_COMMANDS_PER_STEP]:
            detail = "; ".join([*(f"error: {e}" for e in c.get("errors") or []),
                                *(f"warning: {w}" for w in c.get("warnings") or [])])
            if c.get("output"):
                output = clip(str(c["output"]), 700)
                detail = (detail + "\n          " if detail else "") + "output: " + output.replace(
                    "\n", "\n                  ")
            attempt = c.get("attempt") or 1
            outcome = str(c.get("outcome", "")) + (f", {c.get('objects')} object(s)" if c.get("objects") else "")
            lines.append(CommandLine(
                at=fmt_time(c.get("started_at")), text=command_text(str(c.get("cmdlet", "?")), c.get("parameters")),
                endpoint=str(c.get("endpoint", "")) + (f" via {c['via']}" if c.get("via") else ""),
                duration=fmt_duration((c.get("duration_ms") or 0) / 1000),
                outcome=outcome + (f" (attempt {attempt})" if attempt > 1 else ""), detail=clip(detail, 900)))
        note = ""
        if len(cmds) > MAX_COMMANDS_PER_STEP:
            note = (f"{len(cmds) - MAX_COMMANDS_PER_STEP} more command(s) of this step are not shown; the full log: "
                    f"GET /api/v1/changes/{change_id}/steps/")
        log = "\n".join(f"{c.at}  {c.text}{'  [' + c.endpoint + ']' if ' via ' in c.endpoint else ''}  → "
                        f"{c.duration} · {c.outcome}"
                        + (f"\n          {c.detail}" if c.detail else "") for c in lines)
        blocks.append(CommandBlock(_step_label(s), clip(s.output_summary, 600), lines, note, log))
    return blocks


def _clock_note(steps: list[StepRun], window_ended: datetime | None) -> str:
    """Command times are the engine's clock. When they run past the window's recorded end, that clock was scaled
    (the demo runs 60× faster): say so, since those times cannot be compared with the rest of the report."""
    if window_ended is None:
        return ""
    for s in steps:
        for c in s.commands or []:
            try:
                at = datetime.fromisoformat(str(c.get("started_at")))
            except ValueError:
                continue
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            if at > window_ended:
                return ("The engine's clock ran faster than real time in this run: these times do not match the "
                        "timeline.")
    return ""


def _audit_rows(events: list[AuditEvent]) -> list[AuditRow]:
    rows = []
    for ev in events:
        parts = []
        for k, v in sorted((ev.changes or {}).items()):
            if not (isinstance(v, list) and len(v) == 2):
                parts.append(f"{k}: {show(v)}")
            elif v[0] is None:  # a value set (creation): the value alone, empty ones left out
                if v[1] not in (None, "", [], {}):
                    parts.append(f"{k}: {show(v[1])}")
            else:
                parts.append(f"{k}: {show(v[0])} → {show(v[1])}")
        changes = "; ".join(parts)
        detail = " — ".join(p for p in (ev.reason, changes) if p)
        rows.append(AuditRow(ev.seq, fmt_dt(ev.created_at), ev.actor, ev.action, clip(detail, MAX_AUDIT_DETAIL_CHARS),
                             ev.hash))
    return rows


def window_end(change: Change, events: list[AuditEvent], run: WindowRun | None) -> datetime:
    """When the window ended: the audit event that moved the change to completed/failed/aborted (else the run's end,
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


_NOTIFICATION_KINDS = {
    "announcement": "Announcement (invite)", "cancellation": "Cancellation (invite)", "reminder": "Reminder",
    "start": "Window started", "end": "Window ended", "approval_request": "Approval request",
    "alert": "Operator alert", "state_change": "State change",
}


def _notification_status(ev: AuditEvent, after: dict[str, Any]) -> str:
    if ev.action == "notification.failed":
        return f"failed: {clip(ev.reason, 200)}"
    if after.get("sent_again_in_doubt"):
        return "sent again after a worker stopped mid-send: may have arrived twice"
    return "sent"


def _notifications(events: list[AuditEvent]) -> list[NotificationRow]:
    """What was sent, from the audit trail up to the report's head (so a regenerated report is identical)."""
    rows = []
    for ev in events:
        if ev.action not in ("notification.sent", "notification.failed"):
            continue
        after = {k: (v[1] if isinstance(v, list) and len(v) == 2 else v) for k, v in (ev.changes or {}).items()}
        channel = after.get("channel", "")
        batch = after.get("batch", "")
        count = str(after.get("recipients", ""))
        if channel == "callback":
            count = f"ITSM (HTTP {after['http_status']})" if after.get("http_status") else "ITSM"
        elif batch and batch != "1/1":
            count = f"{count} (batch {batch})"
        rows.append(NotificationRow(
            time=fmt_dt(ev.created_at), kind=_NOTIFICATION_KINDS.get(after.get("kind", ""), after.get("kind", "")),
            channel="callback" if channel == "callback" else "e-mail", recipients=count,
            message_id=str(after.get("message_id", "")),
            status=_notification_status(ev, after)))
    return rows


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
    issues, decisions = _issues(change, steps, events, state, head_event.created_at if head_event else None)
    actual_start = run.started_at if run else None
    actual_end = (run.finished_at if run and run.finished_at else ended) if run else None

    per_server: dict[str, dict[str, StepRun]] = {}
    for s in steps:
        per_server.setdefault(s.server.name if s.server_id else (servers[0].name if servers else ""), {})[s.key] = s
    context = run.context if run else {}
    states = [_server_state(sv.name, (context or {}).get(sv.name) or {}, per_server.get(sv.name, {}),
                            not facts[sv.pk]["dag_name"]) for sv in servers]

    work = "not reported"
    if run and run.work_done_at:
        work = f"{fmt_dt(run.work_done_at)} by {_person(run.work_done_by)}: {clip(run.work_notes, 600)}"
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
        outcome=_status_words(state), close_code=close or "not closed yet (set by the post-implementation review)",
        work_done=work, step_count=len(steps), issue_count=len(issues), decision_count=decisions,
        approvals_required=change.approvals_required, approvals=_approvals(change),
        prechecks=[PrecheckRow(s.order, s.server.name if s.server_id else "", s.key, s.name, _status_words(s.status),
                               clip(s.error or s.output_summary, 600), _precheck_tables(s.key, s.findings or {}))
                   for s in steps if s.phase == StepRun.Phase.PRECHECK],
        timeline=[StepRow(s.order, s.phase, s.key, s.name, s.server.name if s.server_id else "", fmt_dt(s.started_at),
                          span(s.started_at, s.finished_at), s.attempts, s.status, _outcome(s)) for s in steps],
        issues=issues, server_states=states, notify=list(change.notify or []),
        notifications=_notifications(events),
        audit_events=_audit_rows(events), head_seq=head_seq, head_hash=head_hash,
        verify_command=f"python manage.py verify_audit --head {head_hash}",
        verify_api=f"GET /api/v1/audit/verify/?head={head_hash}",
        commands=_commands(change.pk, steps), ended_at=ended.astimezone(UTC), ended_at_text=fmt_dt(ended),
        clock_note=_clock_note(steps, actual_end),
    )
    return _scrub(data, _secrets(change))
