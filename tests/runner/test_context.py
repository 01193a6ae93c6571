"""The execution context records what each command returned, compactly, for the step log and the report."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from runner.clock import SimulatedClock
from runner.context import ExecutionContext, output_preview
from runner.exchange.session import CmdletError, Endpoint, ErrorRecord, ExchangeSessionError, Throttled
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


def test_a_deliberate_wait_first_lets_the_sessions_used_so_far_terminate_their_finished_commands() -> None:
    # The pypsrp adapter terminates finished pipelines when asked; the runner asks when it is about to wait anyway,
    # so the Signal round trips never sit between a command and the next.
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    released: list[str] = []

    class Releasing(SimulatorSession):
        def release_finished(self) -> None:
            released.append(self.server)

    used, unused = Releasing(sim, "EX01"), Releasing(sim, "EX01")
    sessions = {Endpoint.EXCHANGE: used, Endpoint.DEFAULT: unused}
    ctx = ExecutionContext(server=ServerInfo("EX01", "ex01.contoso.com"), sessions=sessions,
                           clock=SimulatedClock(sim))
    ctx.wait(5)
    assert released == []  # nothing run yet
    ctx.run("Get-ServerComponentState", {"Identity": "EX01"})
    ctx.wait(5)
    assert released == ["EX01"]  # the Exchange session only: the default endpoint was never used


def test_a_session_that_moved_to_another_endpoint_leaves_an_automatic_issue_in_the_step_log() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")

    class Moved(SimulatorSession):
        notices = ["EX01: Exchange cmdlets moved from EX03's endpoint to EX04's (endpoint unreachable)"]

        def take_notices(self) -> list[str]:
            notices, self.notices = self.notices, []
            return notices

    ctx = ExecutionContext(server=ServerInfo("EX01", "ex01.contoso.com"),
                           sessions={Endpoint.EXCHANGE: Moved(sim, "EX01")}, clock=SimulatedClock(sim))
    ctx.run("Get-ServerComponentState", {"Identity": "EX01"})
    ctx.run("Get-ServerComponentState", {"Identity": "EX01"})
    assert [(i.summary, i.resolution, i.automatic) for i in ctx.issues] == [
        ("EX01: Exchange cmdlets moved from EX03's endpoint to EX04's (endpoint unreachable)",
         "Get-ServerComponentState then ran", True)]


def test_a_cmdlet_error_on_a_read_is_never_retried_and_a_throttled_read_is() -> None:
    # Exchange's error record is the step's to judge (the window pauses for an operator); a throttled read is
    # transport trouble, retried by the same policy as a dropped connection.
    sim = SimulatedExchange()
    sim.add_standalone("EX01")

    class Failing(SimulatorSession):
        failures: list[ExchangeSessionError] = []

        def run(self, cmdlet, parameters=None, *, endpoint=Endpoint.EXCHANGE):  # noqa: ANN001, ANN201
            if self.failures:
                raise self.failures.pop(0)
            return super().run(cmdlet, parameters, endpoint=endpoint)

    session = Failing(sim, "EX01")
    ctx = ExecutionContext(server=ServerInfo("EX01", "ex01.contoso.com"), sessions=lambda endpoint: session,
                           clock=SimulatedClock(sim))
    session.failures = [CmdletError("Get-MailboxServer", ErrorRecord("The operation couldn't be performed."))]
    with pytest.raises(CmdletError):
        ctx.run("Get-MailboxServer", {"Identity": "EX01"})
    assert [c.attempt for c in ctx.commands] == [1] and ctx.issues == []
    session.failures = [Throttled("EX01: throttled by the server"), Throttled("EX01: throttled by the server")]
    assert ctx.run("Get-MailboxServer", {"Identity": "EX01"}).output
    assert [c.attempt for c in ctx.commands[1:]] == [1, 2, 3]
    assert [i.resolution for i in ctx.issues] == ["retry 2 of 3", "retry 3 of 3"]
