"""The work phase: hold until the operator reports the work done, or until the window ends (issue 4)."""
from __future__ import annotations

from datetime import datetime

from runner.step_types import Hold, Issue, StepContext, StepFailed, StepOutcome


def _window_end(ctx: StepContext) -> datetime:
    text = ctx.state.get("window_end")
    if not text:
        raise StepFailed("the window end is unknown (ctx.state['window_end'] is not set)")
    try:
        end = datetime.fromisoformat(str(text))
    except ValueError as exc:
        raise StepFailed(f"the window end {text!r} is not an ISO datetime") from exc
    if end.tzinfo is None:
        raise StepFailed(f"the window end {text!r} has no time zone")
    return end


def _notes(ctx: StepContext) -> str:
    done = ctx.state.get("work_done")
    if isinstance(done, dict):
        return str(done.get("notes") or "")
    return str(ctx.state.get("work_notes") or "")


def hold(ctx: StepContext) -> StepOutcome:
    """Raise ``Hold`` until ``ctx.state["work_done"]`` is set (POST …/work-done/) or the window end is reached.

    Reaching the window end without a report is recorded as an issue and the step passes, so the exit runs: a
    server must never silently stay in maintenance.
    """
    if ctx.state.get("work_done"):
        return StepOutcome("passed", "the operator reported the work done", findings={"notes": _notes(ctx)})
    end = _window_end(ctx)
    if ctx.clock.now() >= end:
        return StepOutcome("passed", "window end reached; leaving maintenance",
                           issues=[Issue("window end reached without a work-done report",
                                         "the exit ran at the window end", automatic=True)],
                           findings={"window_end": end.isoformat()})
    raise Hold(f"waiting for the operator's work-done report (until {end.isoformat()})", until=end)
