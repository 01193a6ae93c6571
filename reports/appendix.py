"""The appendices: each step's command log, the notifications sent and the audit trail up to the report's head."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from changes.models import AuditEvent, StepRun

from .data import AuditRow, CommandBlock, CommandLine, NotificationRow
from .formatting import UNKNOWN_WORDS, clip, command_text, fmt_dt, fmt_duration, fmt_time, outcome_unknown, show
from .issues import step_label

# What the appendix keeps of a step's command log; the rest is counted in a note (the API has the full log).
MAX_COMMANDS_PER_STEP = 50
MAX_AUDIT_DETAIL_CHARS = 400

def command_blocks(change_id: int, steps: list[StepRun]) -> list[CommandBlock]:
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
            if outcome_unknown(c):
                outcome = UNKNOWN_WORDS
            lines.append(CommandLine(
                at=fmt_time(c.get("started_at")), text=command_text(str(c.get("cmdlet", "?")), c.get("parameters")),
                endpoint=str(c.get("endpoint", "")) + (f" via {c['via']}" if c.get("via") else ""),
                duration=fmt_duration((c.get("duration_ms") or 0) / 1000),
                outcome=outcome + (f" (attempt {attempt})" if attempt > 1 else ""), detail=clip(detail, 900)))
        notes = []
        unknown = sum(outcome_unknown(c) for c in cmds)
        if unknown:
            notes.append(f"{unknown} command(s) of this step were sent by an interrupted attempt whose outcome was "
                         "never recorded (marked SENT, OUTCOME UNKNOWN).")
        if len(cmds) > MAX_COMMANDS_PER_STEP:
            notes.append(f"{len(cmds) - MAX_COMMANDS_PER_STEP} more command(s) of this step are not shown; the full "
                         f"log: GET /api/v1/changes/{change_id}/steps/")
        note = " ".join(notes)
        log = "\n".join(f"{c.at}  {c.text}{'  [' + c.endpoint + ']' if ' via ' in c.endpoint else ''}  → "
                        f"{c.duration} · {c.outcome}"
                        + (f"\n          {c.detail}" if c.detail else "") for c in lines)
        blocks.append(CommandBlock(step_label(s), clip(s.output_summary, 600), lines, note, log))
    return blocks


def clock_note(steps: list[StepRun], window_ended: datetime | None) -> str:
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


def audit_rows(events: list[AuditEvent]) -> list[AuditRow]:
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


def notification_rows(events: list[AuditEvent]) -> list[NotificationRow]:
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
