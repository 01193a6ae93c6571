"""The one step executor: how a step ends, the same for the window and the dry run."""
from __future__ import annotations

import pytest

from changes.models import Alert, Pause
from runner import dry_run as dry_run_module
from runner.executor import execute, step_context, window_state
from runner.step_types import Options, Phase, ServerInfo, Step, StepFailed, StepOutcome

from .support import SimSessions, build_test_plan, open_change, sim_factory

INFO = ServerInfo(name="EX01", fqdn="ex01.corp.example")


def context(sim, clock, *, dry_run: bool = False):
    return step_context(server=INFO, sessions=SimSessions(sim, "EX01"), clock=clock, options=Options(),
                        state=window_state("2030-01-06T02:00:00+00:00"), dry_run=dry_run)


def test_a_failing_gate_ends_refused_with_its_findings(sim, clock) -> None:
    def gate(ctx):
        raise StepFailed("DB02 has no recent backup", findings={"database": "DB02"})

    result = execute(Step("precheck.backups", Phase.PRECHECK, "Backups", gate, mutating=False, gate=True),
                     context(sim, clock))
    assert (result.status, result.code, result.alert_kind, result.findings) == (
        "failed", Pause.Reason.GATE_REFUSED, Alert.Kind.PRECHECK_BLOCKED, {"database": "DB02"})


def test_an_unreachable_server_is_tried_again_only_when_attempts_are_given(sim, clock) -> None:
    def exit_step(ctx):
        return StepOutcome("passed", str(ctx.run("Get-ServerComponentState", {"Identity": "EX01"}).output[0]))

    step = Step("exit.swo_active", Phase.EXIT, "SWO Active", exit_step)
    sim.inject("unreachable", "EX01", times=1000)
    once = execute(step, context(sim, clock))
    assert (once.status, once.code, once.alert_kind) == ("failed", Pause.Reason.UNREACHABLE, Alert.Kind.UNREACHABLE)
    retried: list[int] = []
    ctx = context(sim, clock)
    again = execute(step, ctx, attempts=3, on_retry=retried.append)
    assert retried == [2, 3] and again.message.endswith("(after 3 attempts)")
    exit_retries = [i.resolution for i in ctx.issues if i.summary.startswith("server unreachable during the exit")]
    assert exit_retries == ["retried after 30 s (attempt 2 of 3)", "retried after 60 s (attempt 3 of 3)"]


def test_a_bug_in_a_step_ends_as_an_internal_error_not_an_exception(sim, clock) -> None:
    def buggy(ctx):
        return {}["missing"]

    result = execute(Step("precheck.x", Phase.PRECHECK, "X", buggy, mutating=False), context(sim, clock))
    assert (result.status, result.code) == ("failed", Pause.Reason.INTERNAL_ERROR)
    assert result.message == "internal error in the step: KeyError: 'missing'"


@pytest.mark.django_db
def test_the_dry_run_runs_its_prechecks_through_the_executor(requester, operator, servers, sim, hooks,
                                                             monkeypatch) -> None:
    seen: list[tuple[str, bool]] = []
    original = dry_run_module.execute

    def spy(step, ctx, **kwargs):
        seen.append((step.key, ctx.dry_run))
        return original(step, ctx, **kwargs)

    monkeypatch.setattr(dry_run_module, "execute", spy)
    hooks.explode.add("precheck.active")
    body = dry_run_module.change_dry_run(open_change(requester), actor=operator,
                                         sessions_factory=sim_factory(sim), plan_builder=build_test_plan(hooks))
    assert seen == [("precheck.active", True)]
    # What the window would pause on, the dry run shows (a bug no longer answers 500).
    assert body["prechecks"][0]["status"] == "failed"
    assert body["prechecks"][0]["error"].startswith("internal error in the step: KeyError")
