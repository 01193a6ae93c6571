"""The cmdlet table is the one read/write classifier: every cmdlet the project sends is in it, on its endpoint, and the
dry run, the step log and the adapter all follow it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from runner.clock import SimulatedClock
from runner.context import DryRunViolation, ExecutionContext
from runner.exchange import cmdlets
from runner.exchange.session import Endpoint
from runner.step_types import Hold, Phase, ServerInfo, StepFailed
from tests.runner.plans.harness import start

ROOT = Path(__file__).resolve().parents[3]
CMDLET_NAME = re.compile(r"^[A-Z][a-z]+-[A-Z][A-Za-z0-9]+$")


def _every_step_of_the_plan(sim: SimulatedExchange, name: str) -> set[tuple[str, str]]:
    """Run every step of ``name``'s plan in order, going on past failures and holds; return (cmdlet, endpoint) of
    every command the simulator received, of every one the context refused as unknown, and of every write a step
    declared read-only sent (the last two with a marker)."""
    run = start(sim, name)
    wrong: set[tuple[str, str]] = set()
    for phase in (Phase.PRECHECK, Phase.ENTER, Phase.WORK, Phase.EXIT, Phase.VERIFY):
        if phase == Phase.WORK:
            run.work_done()
        for step in run.steps(phase):
            sent_before = len(run.ctx.commands)
            try:
                run.step(step.key)
            except (StepFailed, Hold):
                pass
            except cmdlets.UnknownCmdlet as exc:
                wrong.add((f"refused in {step.key}", str(exc)))
            if not step.mutating:  # a dry run runs it: by the table, it may only read
                wrong |= {(f"write in read-only {step.key}", c.cmdlet) for c in run.ctx.commands[sent_before:]
                          if not cmdlets.is_read(c.cmdlet)}
    return {(record.cmdlet, record.endpoint) for record in sim.commands} | wrong


def _standalone(version: str) -> tuple[SimulatedExchange, str]:
    sim = SimulatedExchange()
    sim.add_standalone("EX01", version=version)
    return sim, "EX01"


def _dag(version: str) -> tuple[SimulatedExchange, str]:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX02", "EX03", "EX04"], version=version)
    return sim, "EX02"


def _sent_by_every_plan() -> set[tuple[str, str]]:
    sent: set[tuple[str, str]] = set()
    for build in (_standalone, _dag):
        for version in ("2019", "2016"):  # 2016: the Unified Messaging steps
            sim, name = build(version)
            sent |= _every_step_of_the_plan(sim, name)
    # The rarer paths: a queue an admin suspended is resumed, a refused database move is retried explicitly, a node
    # that will not resume pauses the exit.
    for fault, build in (("queue-suspended", _standalone), ("db-move-refused", _dag),
                         ("cluster-resume-fails", _dag), ("transport-restart-fails", _standalone)):
        sim, name = build("2019")
        sim.inject(fault, name)
        sent |= _every_step_of_the_plan(sim, name)
    return sent


def test_every_cmdlet_the_plans_send_is_in_the_table_on_its_endpoint() -> None:
    sent = _sent_by_every_plan()
    names = {cmdlet for cmdlet, _ in sent}
    # The run reached every phase and both endpoints: the check is not vacuous.
    assert {"Set-ServerComponentState", "Suspend-ClusterNode", "Resume-ClusterNode", "Restart-Service",
            "Move-ActiveMailboxDatabase", "Redirect-Message", "Get-UMActiveCalls", "Resume-Queue"} <= names
    missing = sorted(f"{cmdlet} ({endpoint})" for cmdlet, endpoint in sent
                     if not cmdlets.known(cmdlet) or cmdlets.spec(cmdlet).endpoint != endpoint)
    assert missing == []


def _literal_cmdlets(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CMDLET_NAME.match(node.value)}


def test_every_cmdlet_named_in_the_steps_and_the_mailbox_reader_is_in_the_table() -> None:
    sources = [*sorted((ROOT / "runner" / "steps").glob("*.py")), ROOT / "notifications" / "mailboxes.py"]
    literals = set().union(*(_literal_cmdlets(path) for path in sources))
    assert {"Get-Mailbox", "Set-ServerComponentState", "Start-Service"} <= literals  # the scan finds them
    assert sorted(name for name in literals if not cmdlets.known(name)) == []


def test_reads_and_writes_follow_the_table_case_insensitively_and_unknown_cmdlets_count_as_writes() -> None:
    assert cmdlets.is_read("Get-Queue") and cmdlets.is_read("get-queue")
    assert cmdlets.is_read("Test-ServiceHealth")
    assert not cmdlets.is_read("Set-ServerComponentState")
    assert not cmdlets.is_read("Get-Anything")  # unknown: the safe side
    assert cmdlets.needs_confirm_false("Redirect-Message")
    assert not cmdlets.needs_confirm_false("Set-ServerComponentState")
    with pytest.raises(cmdlets.UnknownCmdlet):
        cmdlets.spec("Remove-Mailbox")


def _context(*, dry_run: bool = False) -> tuple[ExecutionContext, SimulatedExchange]:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    session = SimulatorSession(sim, "EX01")
    ctx = ExecutionContext(server=ServerInfo("EX01", "ex01.contoso.com"), sessions=lambda endpoint: session,
                           clock=SimulatedClock(sim), dry_run=dry_run)
    return ctx, sim


def test_the_step_log_marks_each_command_read_or_write_from_the_table() -> None:
    ctx, _ = _context()
    ctx.run("Get-ServerComponentState", {"Identity": "EX01", "Component": "HubTransport"})
    ctx.run("Set-ServerComponentState", {"Identity": "EX01", "Component": "HubTransport", "State": "Draining",
                                         "Requester": "Maintenance"})
    assert [(c["cmdlet"], c["access"]) for c in (r.as_dict() for r in ctx.commands)] == [
        ("Get-ServerComponentState", "read"), ("Set-ServerComponentState", "write")]


def test_a_dry_run_sends_reads_and_refuses_writes_by_the_table() -> None:
    ctx, sim = _context(dry_run=True)
    ctx.run("Test-ServiceHealth", {"Server": "EX01"})  # a Test- verb and a read
    with pytest.raises(DryRunViolation):
        ctx.run("Resume-Queue", {"Identity": "EX01\\Submission"})
    assert [r.cmdlet for r in sim.commands] == ["Test-ServiceHealth"]


def test_a_cmdlet_outside_the_table_or_on_the_wrong_endpoint_is_never_sent() -> None:
    ctx, sim = _context()
    with pytest.raises(cmdlets.UnknownCmdlet, match="not in the cmdlet table"):
        ctx.run("Remove-Mailbox", {"Identity": "alice"})
    with pytest.raises(cmdlets.UnknownCmdlet, match="Microsoft.PowerShell"):
        ctx.run("Restart-Service", {"Name": "MSExchangeTransport"}, endpoint=Endpoint.EXCHANGE)
    assert sim.commands == []
