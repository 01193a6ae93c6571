"""The evidence a report carries inside itself: the change's audit events as the chain hashed them, its step log, the
report's issues and approvals, and the external anchors; plus the summary of the figures the page prints.

Both go into the PDF (``reports.render``): the evidence as an embedded JSON file (``exmaint-evidence.json``), the
summary as the document's ``exmaint-summary`` metadata entry. ``reports.verify`` checks one against the other with no
database. Built only from rows as of the report's audit head, so a regenerated report embeds the same bytes.
"""
from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from changes import anchors
from changes.models import AuditEvent, Change, StepRun
from changes.selectors import audit_events_for

from .data import ReportData

FORMAT = "exmaint-report-evidence/1"
FILE_NAME = "exmaint-evidence.json"
SUMMARY_KEY = "exmaintsummary"  # the PDF information entry of the exmaint-summary meta element
# Events whose count the page prints: operator decisions on a paused window, and approvers' decisions.
DECISION_ACTIONS = ("window.retry", "window.skip", "window.abort")
APPROVAL_ACTIONS = ("change.approved", "change.rejected")
HASHING = ("hash = SHA-256(prev_hash + '\\n' + canonical JSON of the event's other fields); canonical JSON: keys "
           "sorted, no spaces, UTF-8; change_prev_hash is one of the hashed fields when present (events written "
           "before it existed lack it). change_prev_hash links each event to the same change's previous one "
           "(64 zeros for its first).")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def event_record(ev: AuditEvent) -> dict[str, Any]:
    """One event in the canonical form the chain hashes (plus prev_hash and hash)."""
    record = {"seq": ev.seq, "created_at": ev.created_at.astimezone(UTC).isoformat(), "actor": ev.actor,
              "request_id": ev.request_id, "action": ev.action, "object_type": ev.object_type,
              "object_id": ev.object_id, "changes": ev.changes, "reason": ev.reason}
    if ev.change_prev_hash is not None:
        record["change_prev_hash"] = ev.change_prev_hash
    record.update(prev_hash=ev.prev_hash, hash=ev.hash)
    return record


def _step_record(s: StepRun) -> dict[str, Any]:
    # The step log as the API serves it: commands were redacted when recorded; the report scrubs again (below).
    return {"order": s.order, "phase": s.phase, "key": s.key, "name": s.name,
            "server": s.server.name if s.server_id else None, "status": s.status, "attempts": s.attempts,
            "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at), "commands": s.commands or [],
            "output_summary": s.output_summary, "findings": s.findings or {}, "issues": s.issues or [],
            "error": s.error, "decision": s.decision,
            "decided_by": s.decided_by.username if s.decided_by_id else None, "resolution": s.resolution}


def anchors_covering(seq: int, head_seq: int) -> list[dict[str, Any]]:
    """The external anchors (changes.anchors) at or after event #``seq`` and up to the report's head, as evidence
    entries: ``{seq, hash, anchored_at, reason, sinks, tsa_time, token}``; ``token`` is the base64 DER RFC 3161
    TimeStampToken whose message imprint is the anchored event's SHA-256 hash itself ("" when no TSA stamped it)."""
    return [{"seq": a.seq, "hash": a.hash, "anchored_at": _iso(a.created_at), "reason": a.reason,
             "sinks": list(a.sinks or []), "tsa_time": _iso(a.tsa_time),
             "token": base64.b64encode(bytes(a.tsa_token or b"")).decode()}
            for a in anchors.anchors_covering(seq, upto=head_seq)]


def _scrub(obj: Any, secrets: list[str], redacted: str) -> Any:
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, redacted)
        return obj
    if isinstance(obj, list):
        return [_scrub(v, secrets, redacted) for v in obj]
    if isinstance(obj, dict):
        return {k: _scrub(v, secrets, redacted) for k, v in obj.items()}
    return obj


def build_evidence(data: ReportData, *, secrets: list[str], redacted: str) -> dict[str, Any]:
    """The evidence of the report ``data`` (already built, secret-free): events up to its head, steps, anchors."""
    change = Change.objects.get(pk=data.change_id)
    events = [event_record(ev) for ev in audit_events_for(change).filter(seq__lte=data.head_seq)]
    steps = StepRun.objects.filter(change=change).select_related("server", "decided_by").order_by("order")
    last = events[-1] if events else None
    return {
        "format": FORMAT,
        "hashing": HASHING,
        "change": {"id": data.change_id, "number": data.number, "source": data.source,
                   "external_ref": data.external_ref, "title": data.title},
        "report_head": {"seq": data.head_seq, "hash": data.head_hash},
        "change_head": {"seq": last["seq"] if last else 0, "hash": last["hash"] if last else "",
                        "events": len(events)},
        # Audit events are embedded exactly as hashed: the chain never records a secret (passwords are write-only).
        "events": events,
        "steps": _scrub([_step_record(s) for s in steps], secrets, redacted),
        "issues": [asdict(i) for i in data.issues],
        "approvals": [asdict(a) for a in data.approvals],
        "anchors": anchors_covering(last["seq"], data.head_seq) if last else [],
    }


def summary(data: ReportData, evidence: dict[str, Any]) -> dict[str, Any]:
    """The figures and heads the page prints, machine-readable (the verifier compares them with the evidence)."""
    return {"format": FORMAT, "change": data.number, "report_head": {"seq": data.head_seq, "hash": data.head_hash},
            "change_head": evidence["change_head"], "steps": data.step_count, "issues": data.issue_count,
            "resolutions": data.decision_count, "approvals": len(data.approvals), "outcome": data.outcome}


def dumps(obj: Any) -> str:
    """Stable JSON (sorted keys) so the same rows embed the same bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=1, default=str)
