"""``POST /api/v1/changes/{id}/dry-run/``: the plan that would run, and what its read-only pre-checks find now.

Allowed before approval (it is how approvers see what they approve): operators, approvers, and the change's
requester (the integration that posted it, its source system, or the person it names). Nothing is persisted and
only non-mutating pre-check steps run, in a context that refuses any mutating cmdlet. A server that cannot be
reached answers 503 (502 when it answered but remoting failed), never 500.
"""
from __future__ import annotations

import logging
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from changes.api.permissions import HasAnyRole
from changes.models import Change, Role
from changes.roles import has_role, same_person, source_of
from changes.selectors import change_list

from . import engine
from .clock import RealClock
from .context import ExecutionContext, jsonable
from .exchange.session import CmdletError, ExchangeSessionError
from .plans import describe
from .sessions import server_info
from .step_types import Hold, Phase, StepFailed

log = logging.getLogger(__name__)


class PlanUnavailable(Exception):
    """The change's plan cannot be built for one of its servers (unknown plan name, inventory it cannot use)."""


class _DryRunClock(RealClock):
    """Real time, but a retry backoff never holds the HTTP request for more than a second."""

    def sleep(self, seconds: float) -> None:
        super().sleep(min(seconds, 1.0))


def may_dry_run(user: Any, change: Change) -> bool:
    if has_role(user, Role.OPERATOR, Role.APPROVER):
        return True
    if same_person(user, change.requested_by):
        return True
    if has_role(user, Role.REQUESTER):
        return change.created_by_id == user.pk or (bool(source_of(user)) and source_of(user) == change.source)
    return False


def dry_run(change: Change, *, sessions_factory: Any = None, plan_builder: Any = None,
            clock: Any = None) -> dict[str, Any]:
    """Build the plan for each server and run its read-only pre-checks. Raises ExchangeSessionError (other than a
    cmdlet's own error) when a server cannot be used at all."""
    sessions_factory = sessions_factory or engine.default_sessions_factory
    plan_builder = plan_builder or engine.default_plan_builder
    options = engine.options_from(getattr(getattr(change, "run", None), "options", None))
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
                if step.mutating:
                    continue
                ctx = ExecutionContext(server=info, sessions=sessions, clock=clock or _DryRunClock(),
                                       options=options, state={"window_end": change.window_end.isoformat()},
                                       dry_run=True)
                entry = {"server": server.name, "key": step.key, "title": step.title, "gate": step.gate,
                         "status": "", "summary": "", "findings": {}, "issues": [], "error": ""}
                try:
                    outcome = step.run(ctx)
                    entry.update(status=outcome.status, summary=outcome.summary,
                                 findings=jsonable(outcome.findings),
                                 issues=[i.as_dict() for i in [*ctx.issues, *outcome.issues]])
                except StepFailed as exc:
                    entry.update(status="failed", summary=str(exc), error=str(exc),
                                 findings=jsonable(exc.findings), issues=[i.as_dict() for i in ctx.issues])
                except CmdletError as exc:
                    entry.update(status="failed", summary=str(exc), error=str(exc))
                except Hold as hold:
                    entry.update(status="held", summary=str(hold))
                prechecks.append(entry)
        finally:
            sessions.close()
    first = next(iter(plans.values()), None)
    body: dict[str, Any] = {"plan": first, "prechecks": prechecks}
    if len(plans) > 1:
        body["plans"] = plans
    return body


class DryRunView(APIView):
    """Run the change's read-only pre-checks against its server(s) and return the plan that would run."""

    permission_classes = [HasAnyRole]
    # Seams for tests (the simulator in-process); production uses the inventory and runner.plans.
    sessions_factory: Any = None
    plan_builder: Any = None

    @extend_schema(
        request=None,
        responses={200: inline_serializer("DryRun", {
            "plan": serializers.DictField(help_text="name, variant and the steps that would run, in order"),
            "prechecks": serializers.ListField(child=serializers.DictField()),
        })},
    )
    def post(self, request: Request, pk: str) -> Response:
        change = get_object_or_404(change_list(request.user), pk=pk)
        if not may_dry_run(request.user, change):
            return Response({"code": "permission_denied", "detail": "you may not dry-run this change"},
                            status=status.HTTP_403_FORBIDDEN)
        try:
            body = dry_run(change, sessions_factory=type(self).sessions_factory,
                           plan_builder=type(self).plan_builder)
        except PlanUnavailable as exc:
            return Response({"code": "plan_unavailable", "detail": str(exc)},
                            status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        except ExchangeSessionError as exc:
            # 503 when the server could not be reached (worth trying again), 502 when it answered but the remoting
            # session failed (credentials, configuration).
            code = status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY
            log.warning("dry run of %s: %s: %s", change.number, type(exc).__name__, exc)
            return Response({"code": "server_unreachable" if exc.retryable else "remoting_failed",
                             "detail": f"{type(exc).__name__}: {exc}"}, status=code)
        return Response(body)
