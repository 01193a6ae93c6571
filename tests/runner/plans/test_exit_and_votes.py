"""Exit undoes only what this run did: foreign votes stay, aborts from any point, re-runs send nothing."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from runner.step_types import Options, Phase, StepFailed

from .harness import Run, fully_active, start

SERVERS = {"standalone": "EX01", "dag": "EX02"}


def build(variant: str) -> SimulatedExchange:
    sim = SimulatedExchange()
    if variant == "standalone":
        sim.add_standalone("EX01")
    else:
        sim.add_dag("DAG1", ["EX02", "EX03", "EX04"])
    return sim


def votes(sim: SimulatedExchange, server: str, component: str) -> dict[str, str]:
    return sim.servers[server].components.holders(component)


def enter_keys(variant: str) -> list[str]:
    sim = build(variant)
    return [s.key for s in start(sim, SERVERS[variant]).plan.phase(Phase.ENTER)]


ENTER_POINTS = [(v, k) for v in SERVERS for k in enter_keys(v)]


# --- other requesters' votes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(SERVERS))
def test_votes_of_other_requesters_are_left_alone_and_reported(variant: str) -> None:
    sim = build(variant)
    name = SERVERS[variant]
    sim.inject("held-by-other-requester", name)  # HealthApi holds OwaProxy Inactive
    run = start(sim, name)
    run.all_through()
    assert votes(sim, name, "OwaProxy") == {"HealthApi": "Inactive"}
    assert not any(c for c in run.mutating() if "Component=OwaProxy" in c or "Requester=HealthApi" in c)
    assert fully_active(run.components(), besides=("OwaProxy",))
    reported = [k for k, o in run.outcomes.items() if any("OwaProxy" in i.summary and "HealthApi" in i.summary
                                                           for i in getattr(o, "issues", []))]
    assert {"precheck.server_state", "exit.release_votes", "verify.components"} <= set(reported)


def test_a_foreign_vote_cast_during_the_window_fails_verification_naming_its_requester() -> None:
    sim = build("standalone")
    run = start(sim, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    sim.inject("held-by-other-requester", "EX01", component="EwsProxy", requester="Sidelined")
    run.work_done()
    assert run.phases(Phase.WORK, Phase.EXIT) is None
    with pytest.raises(StepFailed, match="EwsProxy.*Sidelined"):
        run.step("verify.components")
    assert votes(sim, "EX01", "EwsProxy")["Sidelined"] == "Inactive"


# --- setup leftovers -----------------------------------------------------------------------------------------------


def test_setup_leftovers_are_cleared_when_the_operator_opted_in() -> None:
    sim = build("standalone")
    sim.inject("setup-leftover", "EX01")
    run = start(sim, "EX01", Options(clear_setup_leftovers=True))
    run.all_through()
    cleared = [c for c in run.mutating() if "Requester=Functional" in c]
    assert cleared == [("Set-ServerComponentState", "Identity=EX01", f"Component={c}", "State=Active",
                        "Requester=Functional") for c in ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled")]
    assert fully_active(run.components())


def test_setup_leftovers_are_left_and_reported_without_the_opt_in() -> None:
    sim = build("standalone")
    sim.inject("setup-leftover", "EX01")
    run = start(sim, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    run.work_done()
    stopped = run.phases(Phase.WORK, Phase.EXIT)
    # Transport is not restarted onto a server the leftover still keeps offline: it would act on Inactive after the
    # operator clears the vote. The exit pauses there instead, naming the vote.
    assert isinstance(stopped, StepFailed)
    assert "HubTransport is still Inactive, held by Functional on ServerWideOffline" in str(stopped)
    assert not [c for c in run.mutating() if "Requester=Functional" in c]
    assert any("setup leftover" in i and "Functional" in i for i in run.issues())
    with pytest.raises(StepFailed, match="ServerWideOffline.*Functional"):
        run.step("verify.components")


# --- abort from any point ------------------------------------------------------------------------------------------


def exit_after(run: Run) -> None:
    for step in run.plan.phase(Phase.EXIT):
        run.step(step.key)


@pytest.mark.parametrize(("variant", "last"), ENTER_POINTS)
def test_an_abort_after_any_entry_step_leaves_the_server_fully_active(variant: str, last: str) -> None:
    sim = build(variant)
    name = SERVERS[variant]
    sim.inject("held-by-other-requester", name)
    sim.servers[name].activation_policy = "IntrasiteOnly" if variant == "dag" else "Unrestricted"
    run = start(sim, name)
    assert run.phases(Phase.PRECHECK, Phase.ENTER, until=last) is None
    exit_after(run)
    assert fully_active(run.components(), besides=("OwaProxy",))
    assert votes(sim, name, "OwaProxy") == {"HealthApi": "Inactive"}
    server = sim.servers[name]
    assert (server.activation_policy, server.move_now) == (
        ("IntrasiteOnly" if variant == "dag" else "Unrestricted"), False)
    if variant == "dag":
        assert server.cluster_state == "Up"
    assert server.transport.is_ready(sim.clock.now())
    for step in run.plan.phase(Phase.VERIFY):
        run.step(step.key)


def test_an_abort_right_after_hubtransport_draining_undoes_only_that() -> None:
    sim = build("dag")
    run = start(sim, "EX02")
    assert run.phases(Phase.PRECHECK, Phase.ENTER, until="enter.hubtransport_draining") is None
    mark = run.mark()
    exit_after(run)
    assert run.mutating(mark) == [
        ("Set-ServerComponentState", "Identity=EX02", "Component=HubTransport", "State=Active",
         "Requester=Maintenance"),
        ("Restart-Service", "Name=MSExchangeTransport"), ("Restart-Service", "Name=MSExchangeFrontEndTransport"),
    ]


def test_an_abort_before_any_change_sends_nothing() -> None:
    sim = build("dag")
    run = start(sim, "EX02")
    assert run.phases(Phase.PRECHECK) is None
    exit_after(run)
    assert run.mutating() == []


def test_an_abort_after_a_failed_transport_restart_brings_transport_back() -> None:
    sim = build("standalone")
    sim.inject("transport-restart-fails", "EX01")
    run = start(sim, "EX01")
    assert isinstance(run.phases(Phase.PRECHECK, Phase.ENTER), StepFailed)
    assert not sim.servers["EX01"].transport.service_running
    exit_after(run)
    assert sim.servers["EX01"].transport.is_ready(sim.clock.now())
    assert fully_active(run.components())


# --- idempotency ---------------------------------------------------------------------------------------------------


def all_keys(variant: str) -> list[str]:
    return [s.key for s in start(build(variant), SERVERS[variant]).plan.steps]


@pytest.mark.parametrize(("variant", "key"), [(v, k) for v in SERVERS for k in all_keys(v)])
def test_rerunning_a_completed_step_sends_no_mutating_command(variant: str, key: str) -> None:
    sim = build(variant)
    run = start(sim, SERVERS[variant])
    run.work_done()
    for step in run.plan.steps:
        run.step(step.key)
        if step.key == key:
            break
    mark = run.mark()
    outcome = run.step(key)
    assert run.mutating(mark) == []
    assert outcome.status in ("passed", "skipped")


def test_a_vote_whose_recording_was_lost_in_a_crash_is_still_cleared_on_exit() -> None:
    sim = build("standalone")
    run = start(sim, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER, until="enter.hubtransport_draining") is None
    run.ctx.state["votes_set"] = []  # the worker died after the Set, before the state was saved
    outcome = run.step("enter.hubtransport_draining")
    assert outcome.status == "skipped" and "earlier attempt" in outcome.summary
    exit_after(run)
    assert fully_active(run.components())


def test_pop_and_imap_that_ran_before_the_window_are_started_again_on_exit() -> None:
    """§2 step 6 / §5.7: they stop with PopProxy/ImapProxy and do not come back by themselves."""
    from exchange_sim.model import SimulatedExchange

    from .harness import server_info

    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    for name in ("MSExchangeIMAP4", "MSExchangeIMAP4BE"):
        sim.servers["EX01"].services[name].running = True
    from exchange_sim.session import SimulatorSession
    from runner.clock import SimulatedClock
    from runner.context import ExecutionContext
    from runner.plans import build_plan
    from runner.step_types import Hold, Options

    session = SimulatorSession(sim, "EX01")
    ctx = ExecutionContext(server=server_info(sim, "EX01"), sessions=lambda e: session, clock=SimulatedClock(sim),
                           options=Options())
    for step in build_plan("maintenance", server_info(sim, "EX01"), Options()).steps:
        if step.key == "work.hold":
            ctx.state["work_done"] = True
        try:
            step.run(ctx)
        except Hold:
            raise AssertionError("the work was reported done") from None
        if step.key == "enter.serverwideoffline_inactive":
            assert not sim.servers["EX01"].services["MSExchangeIMAP4"].running  # stopped with ImapProxy
    started = [dict(c.parameters)["Name"] for c in sim.commands if c.cmdlet == "Start-Service"]
    assert started == ["MSExchangeIMAP4", "MSExchangeIMAP4BE"]  # POP3 did not run before: left alone
    assert all(sim.servers["EX01"].services[n].running for n in ("MSExchangeIMAP4", "MSExchangeIMAP4BE"))
