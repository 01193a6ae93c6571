"""The execution context records what each command returned, compactly, for the step log and the report."""
from __future__ import annotations

from runner.clock import SimulatedClock
from runner.context import ExecutionContext, output_preview
from runner.simulator.model import SimulatedExchange
from runner.simulator.session import SimulatorSession
from runner.step_types import ServerInfo


def test_each_command_record_keeps_a_truncated_preview_of_its_output() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    session = SimulatorSession(sim, "EX01")
    ctx = ExecutionContext(server=ServerInfo("EX01", "ex01.contoso.com"), sessions=lambda endpoint: session,
                           clock=SimulatedClock(sim))
    ctx.run("Get-ServerComponentState", {"Identity": "EX01"})
    record = ctx.commands[0].as_dict()
    assert record["objects"] == 34
    assert '"Component":"ServerWideOffline"' in record["output"]
    assert "(output truncated:" in record["output"] and len(record["output"]) < 1400


def test_a_short_output_is_kept_whole() -> None:
    assert output_preview([{"Name": "EX01", "Status": "Running"}]) == '{"Name":"EX01","Status":"Running"}'
    assert output_preview([]) == ""
