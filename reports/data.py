"""The report's data object: what the PDF shows, as plain dataclasses of display-ready strings (built by
reports.context, rendered by reports.render)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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
    outcome: str  # the status in words: passed, "skipped: <reason>", "failed: <error>", "pending (did not run)"


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
    approval_count: int = 0  # approvers' decisions recorded (valid and voided)
    # The change's own chain (each event links to the change's previous one): its events and its last event.
    change_events: int = 0
    change_head_seq: int = 0
    change_head_hash: str = ""
    evidence_json: str = ""  # embedded in the PDF as exmaint-evidence.json (reports.evidence)
    summary_json: str = ""  # the printed figures, machine-readable: the PDF's exmaint-summary metadata
    offline_verify_command: str = ""
    standard_template: str = ""  # the catalogue entry a standard change fits, its work and its approval
    anchor: AnchorNote | None = None  # the external anchor covering the change's last event (changes/anchors.py)
    work: str = ""  # the change's work phase in words (hold, restart, Exchange update)
    install: list[Table] = field(default_factory=list)  # an Exchange update's builds, durations, downtime


@dataclass
class AnchorNote:
    """Where the chain was anchored outside the database at or after the change's last event."""

    seq: int
    hash: str
    anchored_at: str
    sinks: str
    tsa: str  # the TSA's time, or why there is no token


@dataclass
class NotificationRow:
    """One notification sent (or given up) for the change, from its ``notification.*`` audit event."""

    time: str
    kind: str
    channel: str
    recipients: str
    message_id: str
    status: str
