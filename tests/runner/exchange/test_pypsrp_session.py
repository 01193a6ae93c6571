"""The pypsrp adapter against the project's real WinRM/PSRP endpoint on loopback.

A small scripted simulation stands behind the endpoint here, so each test controls exactly what the "server" does;
the parity tests in test_pypsrp_parity.py use the full simulated Exchange.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exchange_sim.endpoint import start_endpoint
from exchange_sim.objects import SimError, SimObject, SimResult, SimTerminatingError, enum, string_list
from runner.context import ExecutionContext
from runner.exchange.pypsrp_session import (
    EndpointConfig,
    PypsrpSession,
    ShellQuotaExceeded,
    _map_error,
    redact_parameters,
)
from runner.exchange.session import (
    AuthenticationFailed,
    BrokenPool,
    CmdletError,
    CommandResult,
    Endpoint,
    EndpointUnreachable,
    ErrorRecord,
    Throttled,
)
from runner.step_types import ServerInfo

USER, PASSWORD = "exmaint-svc", "Sim-Passw0rd-42"


@dataclass
class ScriptedExchange:
    """Answers Get-Queue (a read in the cmdlet table) and a few made-up cmdlets; records every call it is handed."""

    servers: dict[str, Any] = field(default_factory=lambda: {"EX01": object()})
    calls: list[tuple[str, str, list[tuple[str, Any]], bool]] = field(default_factory=list)

    def invoke(self, server, endpoint, cmdlet, parameters, *, user="", is_script=False) -> SimResult:
        self.calls.append((endpoint, cmdlet, list(parameters), is_script))
        if is_script:
            raise SimTerminatingError(SimError("The syntax is not supported by this runspace.", "ScriptsNotAllowed",
                                               "ParserError"))
        if cmdlet == "Get-Queue":
            thing = SimObject(
                ("Contoso.Thing", "System.Object"),
                {"Name": "alpha", "State": enum("Contoso.ThingState", "Draining", 2), "Tags": string_list(["a", "b"])},
            )
            return SimResult(
                output=[thing],
                errors=[SimError("The object 'beta' couldn't be found.", "NotFound,Get-Queue", "ObjectNotFound",
                                 target="beta")],
                warnings=["The thing is draining."],
            )
        if cmdlet == "Set-Thing":
            password = dict(parameters).get("Password", "")
            raise SimTerminatingError(SimError(f"Cannot use '{password}' here.", "BadValue,Set-Thing",
                                               "InvalidArgument", target="alpha"))
        return SimResult()

    def invoked(self, cmdlet: str) -> list[list[tuple[str, Any]]]:
        return [params for _, name, params, _ in self.calls if name == cmdlet]


@pytest.fixture
def sim() -> ScriptedExchange:
    return ScriptedExchange()


@pytest.fixture
def endpoint(sim):
    with start_endpoint(sim, users={USER: PASSWORD}) as running:
        yield running


def config_for(running, ep: Endpoint = Endpoint.EXCHANGE, **options: Any) -> EndpointConfig:
    options.setdefault("password", PASSWORD)
    return EndpointConfig(
        url=running.url_for("EX01", ep.value), configuration_name=ep.value, auth="basic", username=USER,
        encryption="never", connection_timeout=5, operation_timeout=5, read_timeout=10, **options,
    )


@pytest.fixture
def session(endpoint):
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint), Endpoint.DEFAULT: config_for(
            endpoint, Endpoint.DEFAULT)}) as opened:
        yield opened


# --- results --------------------------------------------------------------------------------------------------------


def test_output_objects_arrive_as_plain_dicts(session):
    result = session.run("Get-Queue", {"Identity": "alpha"})
    assert isinstance(result, CommandResult)
    assert result.output == [{"Name": "alpha", "State": "Draining", "Tags": ["a", "b"], "_type": "Contoso.Thing"}]


def test_non_terminating_errors_and_warnings_are_returned_not_raised(session):
    result = session.run("Get-Queue")
    assert not result.ok
    assert result.errors == [
        ErrorRecord(message="The object 'beta' couldn't be found.", error_id="NotFound,Get-Queue",
                    category="ObjectNotFound", target="beta", exception_type="System.Exception")
    ]
    assert result.warnings == ["The thing is draining."]


def test_a_terminating_error_raises_cmdlet_error_with_the_error_record(session):
    with pytest.raises(CmdletError) as caught:
        session.run("Set-Thing", {"Identity": "alpha"})
    assert caught.value.cmdlet == "Set-Thing"
    assert caught.value.record.error_id == "BadValue,Set-Thing"
    assert caught.value.record.category == "InvalidArgument"
    assert caught.value.record.target == "alpha"
    assert not caught.value.retryable


def test_a_terminating_error_leaves_the_pool_usable(session, endpoint):
    with pytest.raises(CmdletError):
        session.run("Set-Thing")
    session.run("Get-Queue")
    assert endpoint.stats.total_creates() == 1


def test_booleans_are_sent_as_values_so_switch_and_boolean_parameters_both_bind(session, sim):
    # -Status:$true binds a [switch]; -DatabaseCopyActivationDisabledAndMoveNow needs a real [bool] value.
    session.run("Get-Other", {"Status": True, "IncludePreExchange2013": False, "Server": ["EX01", "EX02"]})
    assert sim.invoked("Get-Other") == [[("Status", True), ("IncludePreExchange2013", False),
                                         ("Server", ["EX01", "EX02"])]]


def test_parameters_may_be_given_as_ordered_pairs(session, sim):
    session.run("Get-Other", [("Identity", "EX01"), ("Component", "HubTransport")])
    assert sim.invoked("Get-Other") == [[("Identity", "EX01"), ("Component", "HubTransport")]]


def test_none_is_refused_because_psrp_would_send_a_switch(session, sim):
    with pytest.raises(ValueError, match="switch"):
        session.run("Set-Other", {"MaximumActiveDatabases": None})
    assert sim.calls == []


def test_cmdlets_that_prompt_get_confirm_false_and_others_do_not(session, sim):
    session.run("Move-ActiveMailboxDatabase", {"Server": "EX02"})
    session.run("Redirect-Message", {"Server": "EX02", "Target": "ex03.contoso.com"})
    session.run("Set-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport", "State": "Draining",
                                             "Requester": "Maintenance"})
    session.run("Resume-Queue", {"Identity": "EX02\\Submission", "Confirm": True})
    assert ("Confirm", False) in sim.invoked("Move-ActiveMailboxDatabase")[0]
    assert ("Confirm", False) in sim.invoked("Redirect-Message")[0]
    assert all(name != "Confirm" for name, _ in sim.invoked("Set-ServerComponentState")[0])
    assert sim.invoked("Resume-Queue") == [[("Identity", "EX02\\Submission"), ("Confirm", True)]]  # caller wins


def test_each_endpoint_reaches_its_own_configuration(session, sim):
    session.run("Get-Other")
    session.run("Get-Service", {"Name": "MSExchangeTransport"}, endpoint=Endpoint.DEFAULT)
    assert [(ep, cmdlet) for ep, cmdlet, _, _ in sim.calls] == [
        ("Microsoft.Exchange", "Get-Other"),
        ("Microsoft.PowerShell", "Get-Service"),
    ]


# --- no script ------------------------------------------------------------------------------------------------------


def test_the_adapter_offers_no_way_to_send_script_text(session, sim):
    assert not any(hasattr(session, name) for name in ("add_script", "execute_ps", "run_script", "script"))
    for text in ("Get-Queue; Remove-Thing", "Get-Queue | Remove-Thing", "& {Remove-Thing}", "$x = 1", ""):
        with pytest.raises(ValueError, match="cmdlet"):
            session.run(text)
    session.run("Get-Queue")
    assert [is_script for *_, is_script in sim.calls] == [False]


def test_a_script_sent_by_raw_pypsrp_reaches_the_server_marked_as_script_and_is_refused(endpoint, sim):
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    wsman = WSMan("127.0.0.1", port=endpoint.port, path=endpoint.path_for("EX01"), ssl=False, auth="basic",
                  username=USER, password=PASSWORD, encryption="never")
    with wsman, RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-Queue | Remove-Thing")
        ps.invoke()
        assert ps.had_errors
        assert "not supported" in str(ps.streams.error[-1])
    assert sim.calls[-1][3] is True


# --- authentication and transport -----------------------------------------------------------------------------------


def test_a_wrong_password_raises_authentication_failed_once_and_is_not_retried(endpoint, sim):
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint, password="wrong-password")}) as session:
        with pytest.raises(AuthenticationFailed) as caught:
            session.run("Get-Queue")
    assert not caught.value.retryable
    assert endpoint.stats.auth_failures == 1
    assert endpoint.stats.total_creates() == 0
    assert "wrong-password" not in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_raises_a_retryable_endpoint_unreachable():
    config = EndpointConfig(url=f"http://127.0.0.1:{_closed_port()}/EX01/PowerShell", auth="basic", username=USER,
                            password=PASSWORD, encryption="never", connection_timeout=2, operation_timeout=2,
                            read_timeout=4)
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config}) as session:
        with pytest.raises(EndpointUnreachable) as caught:
            session.run("Get-Queue")
    assert caught.value.retryable


def test_a_read_on_a_shell_that_is_gone_is_not_resent_by_the_session_and_the_next_command_reopens(
        session, endpoint, sim):
    session.run("Get-Queue")
    assert endpoint.kill_shells("EX01") == 1
    with pytest.raises(BrokenPool) as caught:
        session.run("Get-Queue")
    assert caught.value.retryable and caught.value.sent
    assert "not resent" in str(caught.value)
    assert session.run("Get-Queue").output[0]["Name"] == "alpha"
    assert endpoint.stats.total_creates() == 2
    assert len(sim.invoked("Get-Queue")) == 2


class StillClock:
    """The context's clock: waits are recorded, not slept."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _context(session: PypsrpSession, clock: StillClock) -> ExecutionContext:
    return ExecutionContext(server=ServerInfo("EX01", "ex01.contoso.com"), sessions=lambda endpoint: session,
                            clock=clock)


@pytest.mark.parametrize("failure", ["shell gone", "dropped connection", "503"])
def test_the_context_retries_a_read_after_a_transport_failure_and_logs_it(session, endpoint, sim, failure):
    clock = StillClock()
    ctx = _context(session, clock)
    ctx.run("Get-Queue")
    if failure == "shell gone":
        endpoint.kill_shells("EX01")
    else:
        endpoint.fail_next(1, mode="drop" if failure == "dropped connection" else "503")
    assert ctx.run("Get-Queue").output[0]["Name"] == "alpha"
    assert [(c.cmdlet, c.attempt, c.outcome.split(":")[0]) for c in ctx.commands] == [
        ("Get-Queue", 1, "errors"), ("Get-Queue", 1, "failed"), ("Get-Queue", 2, "errors")]
    [issue] = ctx.issues
    assert issue.summary.startswith("Get-Queue failed (") and issue.resolution == "retry 2 of 3"
    assert clock.slept == [5.0]  # RetryPolicy's backoff before the second attempt


def test_the_context_never_resends_a_write_that_may_have_left(session, endpoint, sim):
    ctx = _context(session, StillClock())
    ctx.run("Get-Queue")
    endpoint.fail_next(1, mode="503")
    with pytest.raises(EndpointUnreachable):
        ctx.run("Set-ServerComponentState", {"Identity": "EX01", "Component": "HubTransport", "State": "Draining",
                                             "Requester": "Maintenance"})
    assert [c.attempt for c in ctx.commands if c.cmdlet == "Set-ServerComponentState"] == [1]
    assert ctx.issues == []


def test_a_write_is_not_replayed_when_the_shell_is_gone_but_fails_retryably(session, endpoint, sim):
    session.run("Get-Queue")
    endpoint.kill_shells("EX01")
    with pytest.raises(BrokenPool) as caught:
        session.run("Suspend-Other", {"Identity": "EX01"})
    assert caught.value.retryable
    assert "not resent" in str(caught.value)
    assert sim.invoked("Suspend-Other") == []
    session.run("Suspend-Other", {"Identity": "EX01"})  # the engine's retry gets a fresh pool
    assert len(sim.invoked("Suspend-Other")) == 1


def test_a_dropped_connection_fails_a_read_once_and_the_next_one_reconnects(session, endpoint, sim):
    session.run("Get-Queue")
    endpoint.fail_next(1, mode="drop")
    with pytest.raises(EndpointUnreachable):
        session.run("Get-Queue")
    assert session.run("Get-Queue").output
    assert endpoint.stats.http_failures == 1


def test_a_dropped_connection_during_a_write_raises_endpoint_unreachable_without_replay(session, endpoint, sim):
    session.run("Get-Queue")
    endpoint.fail_next(1, mode="drop")
    with pytest.raises(EndpointUnreachable) as caught:
        session.run("Set-Other", {"Identity": "EX01"})
    assert caught.value.retryable
    assert len(sim.invoked("Set-Other")) <= 1


def test_a_shell_left_behind_by_dropped_connections_is_deleted_once_the_server_answers(session, endpoint):
    session.run("Get-Queue")
    endpoint.fail_next(2, mode="drop")  # the command and the next Create both fail
    with pytest.raises(EndpointUnreachable):
        session.run("Get-Queue")
    assert len(endpoint.open_shells()) == 1  # the first shell still lives on the server
    session.run("Get-Queue")  # its Create fails, never having sent the command: tried once more
    assert len(endpoint.open_shells()) == 1  # only the new one
    session.close()
    assert endpoint.open_shells() == []


def test_a_503_is_a_retryable_endpoint_unreachable_for_writes(session, endpoint):
    session.run("Get-Queue")
    endpoint.fail_next(1, mode="503")
    with pytest.raises(EndpointUnreachable):
        session.run("Restart-Other")


def test_the_endpoint_going_away_mid_session_raises_endpoint_unreachable(sim):
    running = start_endpoint(sim, users={USER: PASSWORD})
    session = PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(running)})
    session.run("Get-Queue")
    # stop() closes the listener, but handler threads keep serving open keep-alive connections: drop those too.
    running.fail_next(1000, mode="drop")
    running.stop()
    with pytest.raises(EndpointUnreachable) as caught:
        session.run("Get-Queue")
    assert caught.value.retryable
    with pytest.raises(EndpointUnreachable):
        session.run("Set-Other")  # the pool is reopened first, which fails before anything is sent
    assert sim.invoked("Set-Other") == []
    session.close()  # must not raise with nothing to talk to


def test_after_the_endpoint_restarted_on_the_same_port_one_read_fails_and_the_next_reopens(sim):
    first = start_endpoint(sim, users={USER: PASSWORD})
    port = first.port
    session = PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(first)})
    try:
        session.run("Get-Queue")
        first.fail_next(1000, mode="drop")
        first.stop()
        with start_endpoint(sim, users={USER: PASSWORD}, port=port) as second:
            with pytest.raises((BrokenPool, EndpointUnreachable)):  # the old connection and shell are gone
                session.run("Get-Queue")
            assert session.run("Get-Queue").output  # reopened
            assert second.stats.total_creates() == 1
            session.close()
            assert second.open_shells() == []
    finally:
        session.close()


def test_an_idle_pool_is_probed_before_a_write_so_the_write_is_sent_once(endpoint, sim):
    config = config_for(endpoint, idle_probe_after=0)
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config}) as session:
        session.run("Get-Queue")
        endpoint.kill_shells("EX01")
        session.run("Set-Other", {"Identity": "EX01"})
    assert len(sim.invoked("Set-Other")) == 1
    assert endpoint.open_shells() == []


def test_the_shell_quota_is_a_retryable_throttling_error_and_nothing_was_sent(endpoint, session, sim):
    endpoint.set_shell_quota(0)
    with pytest.raises(ShellQuotaExceeded) as caught:
        session.run("Get-Queue")
    assert isinstance(caught.value, Throttled) and caught.value.retryable and not caught.value.sent
    assert sim.calls == []


def test_exchanges_budget_fault_is_told_apart_as_throttling_and_other_faults_are_not():
    budget = WSManFaultError(0x80338012, "ex01", "Fail to create a runspace because you have exceeded your budget to "
                             "create runspace. Please wait for 45 seconds.", None, None, None)
    other = WSManFaultError(0x80338012, "ex01", "The WS-Management service cannot process the request.", None, None,
                            None)
    assert isinstance(_map_error(budget, "EX01 open"), Throttled)
    assert _map_error(budget, "EX01 open").retryable
    assert not isinstance(_map_error(other, "EX01 open"), Throttled)
    assert not _map_error(other, "EX01 open").retryable


# --- pool reuse and hygiene -----------------------------------------------------------------------------------------


def test_one_pool_per_endpoint_is_reused_across_commands(session, endpoint):
    for _ in range(5):
        session.run("Get-Queue")
    session.run("Get-Service", endpoint=Endpoint.DEFAULT)
    session.run("Get-Service", endpoint=Endpoint.DEFAULT)
    assert endpoint.stats.creates == {("EX01", "Microsoft.Exchange"): 1, ("EX01", "Microsoft.PowerShell"): 1}
    assert endpoint.stats.total_commands() == 7


def test_pools_open_lazily(endpoint):
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint)}) as session:
        assert session.open_endpoints == []
        assert endpoint.stats.total_creates() == 0


def test_finished_commands_are_terminated_when_the_runner_is_about_to_wait(session, endpoint):
    for _ in range(3):
        session.run("Get-Queue")
    with pytest.raises(CmdletError):
        session.run("Set-Thing")
    # Not on each command's critical path: the four wait for the sweep, failed one included.
    assert endpoint.stats.requests["Signal"] == 0
    assert [shell.open_commands for shell in endpoint.open_shells()] == [4]
    session.release_finished()
    assert [shell.open_commands for shell in endpoint.open_shells()] == [0]
    assert endpoint.stats.requests["Signal"] == 4
    session.release_finished()  # nothing left: no request
    assert endpoint.stats.requests["Signal"] == 4


def test_finished_commands_never_pile_up_past_the_configured_cap(endpoint):
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint, max_finished_commands=5)}) as session:
        for _ in range(23):
            session.run("Get-Queue")
            assert all(shell.open_commands <= 5 for shell in endpoint.open_shells())
        assert endpoint.stats.total_creates() == 1


def test_a_server_capping_commands_per_shell_lower_than_the_adapter_gets_room_made_and_the_write_sent_once(sim):
    # WinRM's MaxConcurrentCommandsPerShell refuses the Command before creating it: terminating the finished
    # commands and sending it again is safe even for a write.
    with start_endpoint(sim, users={USER: PASSWORD}, commands_per_shell=3) as running:
        with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(running)}) as session:
            for _ in range(3):
                session.run("Get-Queue")
            with pytest.raises(CmdletError):  # Set-Thing always fails in this scripted server; it ran once
                session.run("Set-Thing", {"Identity": "ok"})
            assert running.stats.faults[0x803381E9] == 1
            assert [shell.open_commands for shell in running.open_shells()] == [1]
    assert len(sim.invoked("Set-Thing")) == 1


def test_terminating_finished_commands_on_an_endpoint_that_went_away_neither_raises_nor_waits_on_a_delete(sim):
    first = start_endpoint(sim, users={USER: PASSWORD})
    port = first.port
    session = PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(first)})
    try:
        session.run("Get-Queue")
        session.run("Get-Queue")
        first.fail_next(1000, mode="drop")
        first.stop()
        session.release_finished()  # the runner is about to wait: this must not fail the step
        assert session.open_endpoints == []
        with start_endpoint(sim, users={USER: PASSWORD}, port=port) as second:
            # The shell left behind is deleted once the server answers again (here: a new one, which never knew it).
            assert session.run("Get-Queue").output
            assert second.stats.requests["Delete"] == 1 and second.stats.total_creates() == 1
            session.close()
            assert second.open_shells() == []
    finally:
        session.close()


def test_a_write_lost_with_its_pool_while_making_room_is_sent_once_on_a_fresh_pool(sim, monkeypatch, caplog):
    from pypsrp.exceptions import WinRMTransportError

    def signal_fails(self) -> None:
        raise WinRMTransportError("http", 503, "Service Unavailable")

    with start_endpoint(sim, users={USER: PASSWORD}, commands_per_shell=2) as running:
        with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(running)}) as session:
            session.run("Get-Queue")
            session.run("Get-Queue")
            monkeypatch.setattr(PowerShell, "close", signal_fails)  # the Signal that would make room fails
            caplog.set_level(logging.INFO, logger="runner.exchange.pypsrp_session")
            with pytest.raises(CmdletError):  # Set-Thing always fails in this scripted server: it did run
                session.run("Set-Thing", {"Identity": "ok"})
            assert "was not sent, trying once more" in caplog.text
            assert running.stats.total_creates() == 2
        assert len(sim.invoked("Set-Thing")) == 1
        assert running.open_shells() == []


def test_a_bare_client_that_never_terminates_commands_hits_the_per_shell_cap(sim):
    # What the cap above guards against, shown with pypsrp used the naive way.
    with start_endpoint(sim, users={USER: PASSWORD}, commands_per_shell=3) as running:
        config = config_for(running)
        wsman = WSMan(config.host, port=config.effective_port, path=config.path, auth="basic", username=USER,
                      password=PASSWORD, encryption="never", ssl=False)
        with RunspacePool(wsman, configuration_name=Endpoint.EXCHANGE.value) as pool:
            for _ in range(3):
                PowerShell(pool).add_cmdlet("Get-Queue").invoke()
            with pytest.raises(WSManFaultError) as refused:
                PowerShell(pool).add_cmdlet("Get-Queue").invoke()
    assert refused.value.code == 0x803381E9


def test_close_deletes_every_pool_and_leaves_no_shell(endpoint):
    session = PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint),
                                     Endpoint.DEFAULT: config_for(endpoint, Endpoint.DEFAULT)})
    session.run("Get-Queue")
    session.run("Get-Service", endpoint=Endpoint.DEFAULT)
    assert len(endpoint.open_shells()) == 2
    session.close()
    session.close()
    assert endpoint.open_shells() == []
    assert sum(endpoint.stats.deletes.values()) == 2
    assert session.open_endpoints == []


def test_leaving_the_with_block_closes_the_pools_even_after_an_error(endpoint):
    with pytest.raises(CmdletError), PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint)}) as session:
        session.run("Set-Thing")
    assert endpoint.open_shells() == []


def test_many_sessions_in_turn_never_hit_the_shell_quota(endpoint):
    endpoint.set_shell_quota(2)
    for _ in range(6):
        with PypsrpSession("EX01", {Endpoint.EXCHANGE: config_for(endpoint)}) as session:
            session.run("Get-Queue")
    assert endpoint.open_shells() == []


# --- secrets --------------------------------------------------------------------------------------------------------


def test_secrets_stay_out_of_logs_reprs_and_error_messages(endpoint, caplog):
    caplog.set_level(logging.DEBUG, logger="runner.exchange")
    config = config_for(endpoint)
    with PypsrpSession("EX01", {Endpoint.EXCHANGE: config}) as session:
        with pytest.raises(CmdletError) as caught:
            session.run("Set-Thing", {"Identity": "alpha", "Password": "Hunter2-secret"})
        assert PASSWORD not in repr(session)
    assert PASSWORD not in repr(config) and PASSWORD not in str(config)
    assert "Hunter2-secret" not in str(caught.value)
    assert "Hunter2-secret" not in caught.value.record.message
    ours = [r for r in caplog.records if r.name.startswith("runner.exchange")]
    assert any("Set-Thing" in r.getMessage() for r in ours)
    assert not any("Hunter2-secret" in r.getMessage() or PASSWORD in r.getMessage() for r in ours)


def test_redact_parameters_hides_secret_looking_values():
    assert redact_parameters({"Identity": "EX01", "Password": "x", "Credential": "y", "ApiToken": "z",
                              "SharedKey": "k", "State": "Draining"}) == {
        "Identity": "EX01", "Password": "***", "Credential": "***", "ApiToken": "***", "SharedKey": "***",
        "State": "Draining",
    }
    assert redact_parameters([("-AccountPassword", "x")]) == {"AccountPassword": "***"}
    assert redact_parameters(None) == {}


def test_endpoint_config_refuses_credentials_in_the_url_without_echoing_them():
    with pytest.raises(ValueError) as caught:
        EndpointConfig(url="http://svc:TopSecret@ex01/PowerShell")
    assert "TopSecret" not in str(caught.value)


def test_endpoint_config_refuses_basic_auth_in_clear_text_unless_told():
    with pytest.raises(ValueError, match="basic"):
        EndpointConfig(host="ex01", auth="basic", username="u", password="p")
    assert EndpointConfig(host="ex01", auth="basic", username="u", password="p", encryption="never").port is None


def test_endpoint_config_reads_urls_and_has_exchange_and_windows_defaults():
    config = EndpointConfig(url="https://ex01.contoso.com/PowerShell/")
    assert (config.host, config.effective_port, config.path, config.ssl) == ("ex01.contoso.com", 443, "PowerShell",
                                                                             True)
    exchange = EndpointConfig.exchange("ex01.contoso.com")
    assert (exchange.effective_port, exchange.path, exchange.configuration_name, exchange.auth) == (
        80, "PowerShell", "Microsoft.Exchange", "kerberos")
    windows = EndpointConfig.windows("ex01.contoso.com")
    assert (windows.effective_port, windows.path, windows.configuration_name) == (5985, "wsman",
                                                                                  "Microsoft.PowerShell")


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_ntlm_with_message_encryption_works_over_plain_http(sim, auth):
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("negotiate", "ntlm")) as running:
        config = EndpointConfig(url=running.url_for("EX01"), configuration_name="Microsoft.Exchange", auth=auth,
                                username=USER, password=PASSWORD, encryption="auto", operation_timeout=5,
                                read_timeout=10)
        with PypsrpSession("EX01", {Endpoint.EXCHANGE: config}) as session:
            assert session.run("Get-Queue").output[0]["Name"] == "alpha"
            assert session.run("Get-Queue").output
        assert running.open_shells() == []
        assert running.stats.total_creates() == 1


def test_a_wrong_ntlm_password_is_authentication_failed(sim):
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("negotiate", "ntlm")) as running:
        config = EndpointConfig(url=running.url_for("EX01"), configuration_name="Microsoft.Exchange", auth="ntlm",
                                username=USER, password="not-the-password", operation_timeout=5, read_timeout=10)
        with PypsrpSession("EX01", {Endpoint.EXCHANGE: config}) as session, pytest.raises(AuthenticationFailed):
            session.run("Get-Queue")


def test_a_reply_pypsrp_cannot_deserialize_is_a_clear_remoting_error(session, sim, monkeypatch):
    from pypsrp.powershell import PowerShell

    from runner.exchange.pypsrp_session import RemotingError

    def broken_invoke(self, *args, **kwargs):
        raise KeyError("2")  # what pypsrp 0.9.1 raises for a <TNRef> to a type it never registered

    monkeypatch.setattr(PowerShell, "invoke", broken_invoke)
    with pytest.raises(RemotingError, match="could not be deserialized"):
        session.run("Get-ExchangeServer", {"Identity": "EX01"})
