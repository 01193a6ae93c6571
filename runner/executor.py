"""One step executor: how a step runs, for the window (``runner.engine``) and for the dry run (``runner.dry_run``).

``step_context`` builds the step's context and ``execute`` runs the step and classifies how it ended; neither writes
anything. The engine records the result (step row, pause, hold) and the dry run returns it, so what a dry run shows
is what a window does. The dry run uses the same context in read-only mode (``dry_run=True``: a mutating cmdlet is
refused) and one attempt.

How a step ends (``StepResult.status``): ``passed`` or ``skipped`` (its outcome), ``held`` (it waits for the
operator's work-done report or a time), or ``failed`` with a pause reason code (``changes.models.Pause.Reason``):
``step_failed`` / ``gate_refused`` (its check failed), ``unreachable`` (a retryable session error after the attempts),
``remoting_failed`` (a session error that will not go away by itself), ``internal_error`` (a bug in the step).
A lost lease (``RunLost``) is not an ending: it propagates to the engine.

Attempts: a step gets one, except where the engine asks for more — the exit of an unreachable server is retried with
backoff (``attempts``): leaving a server in maintenance is the worst outcome of a window.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from changes.models import Alert, Pause

from .context import ExecutionContext, RunLost
from .exchange.session import ExchangeSessionError
from .step_types import Hold, Issue, Options, ServerInfo, Step, StepFailed, StepOutcome

log = logging.getLogger(__name__)
R = Pause.Reason
FIRST_RETRY_DELAY = 30.0


@dataclass
class StepResult:
    """How one run of a step ended; ``commands`` and ``issues`` are the context's (what was sent, what was met)."""

    status: str  # passed | skipped | held | failed
    outcome: StepOutcome | None = None
    hold: Hold | None = None
    code: str = ""  # a Pause.Reason when failed
    message: str = ""  # why it failed, for people
    alert_kind: str = Alert.Kind.PAUSED
    findings: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None  # the exception that ended it, when failed

    @property
    def summary(self) -> str:
        if self.outcome is not None:
            return self.outcome.summary
        return str(self.hold) if self.hold is not None else self.message


def window_state(window_end: str, *, work_done_at: Any = None, work_notes: str = "") -> dict[str, Any]:
    """What a step reads of the window (``ctx.state``): its end and the operator's work-done report."""
    state: dict[str, Any] = {"window_end": window_end, "work_done": work_done_at is not None,
                             "work_notes": work_notes}
    if work_done_at is not None:
        state["work_done_at"] = work_done_at.isoformat()
    return state


def step_context(*, server: ServerInfo, sessions: Any, clock: Any, options: Options, state: dict[str, Any],
                 dry_run: bool = False, checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 may_write: Callable[[], bool] | None = None,
                 on_send: Callable[[list], None] | None = None) -> ExecutionContext:
    """The context a step runs in: the server's sessions, the clock, the plan state; read-only for a dry run.
    ``on_send(commands)`` persists the command log before each command is sent (the engine; not the dry run)."""
    return ExecutionContext(server=server, sessions=sessions, clock=clock, options=options, state=state,
                            dry_run=dry_run, checkpoint=checkpoint, may_write=may_write, on_send=on_send)


def execute(step: Step, ctx: ExecutionContext, *, attempts: int = 1,
            on_retry: Callable[[int], None] | None = None) -> StepResult:
    """Run ``step`` in ``ctx``, up to ``attempts`` times while the server is unreachable (``on_retry(attempt)`` is
    called before each further attempt). Raises RunLost (the engine lost its lease); every other ending is a
    StepResult."""
    delay = FIRST_RETRY_DELAY
    for attempt in range(1, attempts + 1):
        try:
            outcome = step.run(ctx)
        except Hold as hold:
            return StepResult("held", hold=hold)
        except RunLost:
            raise
        except StepFailed as exc:
            return StepResult("failed", code=R.GATE_REFUSED if step.gate else R.STEP_FAILED, message=str(exc),
                              alert_kind=Alert.Kind.PRECHECK_BLOCKED if step.gate else Alert.Kind.PAUSED,
                              findings=dict(exc.findings), error=exc)
        except ExchangeSessionError as exc:
            if exc.retryable and attempt < attempts:
                ctx.issues.append(Issue(f"server unreachable during the exit ({exc})",
                                        f"retried after {delay:.0f} s (attempt {attempt + 1} of {attempts})"))
                ctx.wait(delay)
                delay *= 2
                if on_retry is not None:
                    on_retry(attempt + 1)
                continue
            kind = Alert.Kind.UNREACHABLE if exc.retryable else Alert.Kind.PAUSED
            if step.gate and not exc.retryable:
                kind = Alert.Kind.PRECHECK_BLOCKED
            message = f"{type(exc).__name__}: {exc}"
            if attempts > 1:
                message += f" (after {attempts} attempts)"
            return StepResult("failed", code=R.UNREACHABLE if exc.retryable else R.REMOTING_FAILED,
                              message=message, alert_kind=kind, error=exc)
        except Exception as exc:  # a bug in a step must pause the window, never leave it "running"
            log.exception("step %s raised", step.key)
            return StepResult("failed", code=R.INTERNAL_ERROR,
                              message=f"internal error in the step: {type(exc).__name__}: {exc}", error=exc)
        return StepResult("skipped" if outcome.status == "skipped" else "passed", outcome=outcome)
    raise AssertionError("unreachable")  # pragma: no cover
