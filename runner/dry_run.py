"""The dry run: the plan that would run, and what its read-only pre-checks find now (``change_dry_run``).

Allowed before approval (it is how approvers see what they approve): operators, approvers, and the change's
requester (the integration that posted it, its source system, or the person it names): the rule is
``changes.authority.may_dry_run``. Nothing is persisted. The pre-checks that do not mutate run through the engine's
own step executor (``runner.executor``) in read-only mode: a context that refuses any mutating cmdlet, one attempt,
so what a dry run shows is what the window's pre-checks will do.
"""
from __future__ import annotations

from typing import Any

from changes import authority
from changes.errors import DomainError
from changes.models import Change

from . import engine
from .clock import RealClock
from .context import jsonable
from .exchange.session import CmdletError, ExchangeSessionError
from .executor import execute, step_context, window_state
from .plans import describe
from .sessions import server_info
from .step_types import Phase


class PlanUnavailable(DomainError):
    """The change's plan cannot be built for one of its servers (unknown plan name, inventory it cannot use)."""

    status = 422
    code = "plan_unavailable"


class _DryRunClock(RealClock):
    """Real time, but a retry backoff never holds the HTTP request for more than a second."""

    def sleep(self, seconds: float) -> None:
        super().sleep(min(seconds, 1.0))


def change_dry_run(change: Change, *, actor: Any, sessions_factory: Any = None, plan_builder: Any = None,
                   clock: Any = None) -> dict[str, Any]:
    """Build the plan for each server and run its read-only pre-checks. Raises NotPermitted (``authority.may_dry_run``),
    PlanUnavailable, and ExchangeSessionError (other than a cmdlet's own error) when a server cannot be used at
    all."""
    authority.may_dry_run(actor, change).require()
    sessions_factory = sessions_factory or engine.default_sessions_factory
    plan_builder = plan_builder or engine.default_plan_builder
    options = engine.options_from(getattr(getattr(change, "run", None), "options", None), work=change.work)
    plans, prechecks = {}, []
    for server in change.servers.order_by("name"):
        info = server_info(server)
        try:
            plan = plan_builder(change.plan, info, options)
        except Exception as exc:
            raise PlanUnavailable(f"cannot build plan {change.plan!r} for {server.name}: {exc}") from exc
        plans[server.name] = {"name": plan.name, "variant": plan.variant, "steps": describe(plan)}
        sessions = sessions_factory(server)
        try:
            for step in plan.phase(Phase.PRECHECK):
                if not step.mutating:
                    prechecks.append(_precheck(step, server.name, info, sessions, options, change, clock))
        finally:
            sessions.close()
    first = next(iter(plans.values()), None)
    body: dict[str, Any] = {"plan": first, "prechecks": prechecks}
    if len(plans) > 1:
        body["plans"] = plans
    return body


def _precheck(step: Any, server_name: str, info: Any, sessions: Any, options: Any, change: Change,
              clock: Any) -> dict[str, Any]:
    ctx = step_context(server=info, sessions=sessions, clock=clock or _DryRunClock(), options=options,
                       state=window_state(change.window_end.isoformat()), dry_run=True)
    result = execute(step, ctx)
    if isinstance(result.error, ExchangeSessionError) and not isinstance(result.error, CmdletError):
        raise result.error  # the server cannot be used at all: the whole dry run answers for it
    entry = {"server": server_name, "key": step.key, "title": step.title, "gate": step.gate, "status": result.status,
             "summary": result.summary, "findings": {}, "issues": [i.as_dict() for i in ctx.issues], "error": ""}
    if result.outcome is not None:
        entry.update(findings=jsonable(result.outcome.findings),
                     issues=[i.as_dict() for i in [*ctx.issues, *result.outcome.issues]])
    elif result.status == "failed":
        # A cmdlet's own error reads as Exchange wrote it, without the engine's exception-type prefix.
        error = str(result.error) if isinstance(result.error, CmdletError) else result.message
        entry.update(summary=error, error=error, findings=jsonable(result.findings))
        if isinstance(result.error, CmdletError):
            entry["issues"] = []
    return entry
