"""The report's "Issues and decisions" section and the words for a step's outcome.

Failures come from the engine's structured pause records (``changes.models.Pause``: why it stopped, the step, what an
operator decided, who, why), never from the prose of an audit reason. A pause or decision recorded after the report's
audit head is left out (``paused_seq``/``decided_seq``), so a regenerated report reads the same.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from changes.models import Alert, Change, Pause, StepRun
from changes.states import WINDOW_ENDED

from .data import IssueRow
from .formatting import actor, clip, command_text, fmt_dt, outcome_unknown, person, status_words


def step_outcome(step: StepRun) -> str:
    """A step's status in words: passed, "skipped by <who>: <why>", "failed: <error>", "pending (did not run)"."""
    if step.status == StepRun.Status.SKIPPED:
        why = step.resolution if step.decision == "skip" else step.output_summary
        who = f" by {person(step.decided_by)}" if step.decision == "skip" and step.decided_by else ""
        return f"skipped{who}: {clip(why, 300)}" if why else f"skipped{who}"
    if step.status == StepRun.Status.FAILED:
        return f"failed: {clip(step.error or step.output_summary, 300)}"
    if step.status == StepRun.Status.PASSED:
        return f"passed: {clip(step.output_summary, 300)}" if step.output_summary else "passed"
    return f"{status_words(step.status)} (did not run)" if step.status == StepRun.Status.PENDING else step.status


def step_label(step: StepRun | None) -> str:
    if step is None:
        return "—"
    where = f" on {step.server.name}" if step.server_id else ""
    return f"{step.order}. {step.name}{where}"


def _failures(change: Change, steps: list[StepRun], head_seq: int) -> tuple[list[dict[str, Any]], int]:
    """Each pause up to the head with its decision (if taken by the head), then failed or decided steps no pause
    record covers (rows written directly): those are told from the step itself."""
    by_pk = {s.pk: s for s in steps}
    failures: list[dict[str, Any]] = []
    decisions = 0
    for pause in change.pauses.filter(paused_seq__lte=head_seq).order_by("paused_seq", "id"):
        decided = bool(pause.decision) and pause.decided_seq is not None and pause.decided_seq <= head_seq
        failures.append({"step": by_pk.get(pause.step_id), "seen": pause.message,
                         "pause": pause if decided else None})
        decisions += decided
    covered = {id(f["step"]) for f in failures if f["step"] is not None}
    for s in steps:
        if id(s) in covered or not (s.decision or s.status == StepRun.Status.FAILED):
            continue
        failures.append({"step": s, "seen": s.error or s.output_summary, "pause": None, "from_step": True})
        if s.decision:
            decisions += 1
    return failures, decisions


def _failure_row(f: dict[str, Any], state: str) -> IssueRow:
    step: StepRun | None = f["step"]
    pause: Pause | None = f["pause"]  # set only when decided by the head
    operator = ""
    if pause is not None:
        operator = actor(pause.decided_by_label)
        decision = f"{pause.decision} by {operator}: {pause.decision_reason}"
    elif f.get("from_step") and step is not None and step.decision:
        operator = person(step.decided_by) or "an operator"
        decision = f"{step.decision} by {operator}: {step.resolution}"
    else:
        decision = f"no decision: the window ended {state}" if state in WINDOW_ENDED else "no decision yet"
    action = pause.decision if pause is not None else (step.decision if step else "")
    if action == Pause.Decision.ABORT:
        outcome = f"window aborted; the exit path ran and the window ended {state}"
    elif step is not None:
        outcome = f"step {status_words(step.status)}" + (
            f" after {step.attempts} attempt(s)" if step.status == StepRun.Status.PASSED else "")
    else:
        outcome = f"window ended {state}"
    seen = f["seen"] or (step.error or step.output_summary if step else "")
    return IssueRow(0, "failure", step_label(step), clip(seen), decision, outcome, operator)


def issue_rows(change: Change, steps: list[StepRun], state: str, head_seq: int,
               head_at: datetime | None) -> tuple[list[IssueRow], int]:
    """Failures (each pause, with the operator's decision that followed it), anomalies (issues the steps recorded)
    and alerts, numbered; and how many operator decisions there were."""
    failures, decisions = _failures(change, steps, head_seq)
    rows = [_failure_row(f, state) for f in failures]
    for s in steps:
        for issue in s.issues or []:
            automatic = bool(issue.get("automatic", True))
            resolution = str(issue.get("resolution") or "")
            rows.append(IssueRow(0, "anomaly", step_label(s), clip(issue.get("summary")),
                                 "automatic" if automatic else "none needed: recorded for the review",
                                 clip(resolution) or ("resolved by the engine" if automatic else "recorded")))
    for s in steps:
        # Commands an interrupted attempt sent without the answer being recorded: they reached the server or not.
        unknown = [c for c in s.commands or [] if outcome_unknown(c)]
        if unknown:
            sent = "; ".join(command_text(str(c.get("cmdlet", "?")), c.get("parameters")) for c in unknown)
            rows.append(IssueRow(0, "anomaly", step_label(s),
                                 clip(f"sent by an interrupted attempt, outcome unknown: {sent}"),
                                 "automatic: the step ran again and re-verified the server"
                                 if s.status == StepRun.Status.PASSED and not s.decision
                                 else "the operator's decision on the step (see its failure)",
                                 f"step {status_words(s.status)}"))
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
