"""Commands that re-verification cannot tell apart from not sent (a restart, a redirect) are sent at most once even
when the worker dies mid-step: the step persists a "sent" marker before each one (ctx.checkpoint)."""
from __future__ import annotations

import copy

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from runner.clock import SimulatedClock
from runner.context import ExecutionContext
from runner.exchange.session import Endpoint
from runner.plans import build_plan
from runner.step_types import Options, StepFailed

from .harness import server_info


class Crash(BaseException):  # noqa: N818 - stands for SIGKILL: nothing may catch it
    pass


class CrashAfter(SimulatorSession):
    """A session that lets ``cmdlet`` through ``times`` times, then "kills the worker" after the next one ran."""

    def __init__(self, sim: SimulatedExchange, server: str, cmdlet: str, times: int) -> None:
        super().__init__(sim, server)
        self.cmdlet, self.left = cmdlet, times

    def run(self, cmdlet, parameters=None, *, endpoint=Endpoint.EXCHANGE):  # noqa: ANN001, ANN201
        result = super().run(cmdlet, parameters, endpoint=endpoint)
        if cmdlet == self.cmdlet:
            if self.left == 0:
                raise Crash(cmdlet)
            self.left -= 1
        return result


def context(sim: SimulatedExchange, server: str, state: dict, persisted: dict, session=None) -> ExecutionContext:  # noqa: ANN001
    session = session or SimulatorSession(sim, server)
    return ExecutionContext(server=server_info(sim, server), sessions=lambda endpoint: session,
                            clock=SimulatedClock(sim), options=Options(), state=state,
                            checkpoint=lambda s: persisted.update(copy.deepcopy(s)))


def restarts(sim: SimulatedExchange, service: str) -> int:
    return sum(1 for c in sim.commands if c.cmdlet == "Restart-Service" and ("Name", service) in c.parameters)


@pytest.mark.parametrize("crash_after", [0, 1])
def test_a_worker_killed_inside_the_transport_restart_never_restarts_a_service_twice(crash_after) -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    plan = build_plan("maintenance", server_info(sim, "EX01"), Options())
    persisted: dict = {}
    ctx = context(sim, "EX01", {}, persisted)
    for key in ("precheck.backups", "precheck.server_state", "precheck.transport_and_services", "enter.snapshot",
                "enter.hubtransport_draining"):
        plan.step(key).run(ctx)
    persisted.update(copy.deepcopy(ctx.state))  # the engine saves the state after each step
    dying = context(sim, "EX01", copy.deepcopy(persisted), persisted,
                    session=CrashAfter(sim, "EX01", "Restart-Service", crash_after))
    with pytest.raises(Crash):
        plan.step("enter.restart_transport").run(dying)
    # A new worker resumes from what was persisted and re-runs the step (it is idempotent).
    resumed = context(sim, "EX01", copy.deepcopy(persisted), persisted)
    outcome = plan.step("enter.restart_transport").run(resumed)
    assert outcome.status == "passed"
    assert restarts(sim, "MSExchangeTransport") == 1 and restarts(sim, "MSExchangeFrontEndTransport") == 1
    assert any("sent by an interrupted attempt" in issue.summary for issue in outcome.issues)


def test_an_operator_retry_after_a_failed_restart_sends_it_again() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    sim.inject("transport-restart-fails", "EX01")
    plan = build_plan("maintenance", server_info(sim, "EX01"), Options())
    ctx = context(sim, "EX01", {}, {})
    for key in ("precheck.backups", "precheck.server_state", "enter.snapshot", "enter.hubtransport_draining"):
        plan.step(key).run(ctx)
    with pytest.raises(StepFailed):
        plan.step("enter.restart_transport").run(ctx)
    assert plan.step("enter.restart_transport").run(ctx).status == "passed"  # the retry restarts again
    assert restarts(sim, "MSExchangeTransport") == 2
