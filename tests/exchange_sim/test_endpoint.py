"""The WinRM/PSRP endpoint driven by the real, unmodified pypsrp client over HTTP on 127.0.0.1.

A small stand-in organisation (same contract as ``exchange_sim.model.SimulatedExchange``) keeps these tests about
the protocol: object shapes, error streams, auth, pool reuse, quotas and injected faults.
"""
from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exchange_sim.endpoint import DEFAULT, EXCHANGE, RunningEndpoint, start_endpoint
from exchange_sim.objects import SimEnum, SimError, SimList, SimObject, SimResult, SimTerminatingError

USER, PASSWORD = "exmaint-svc", "Endpoint-Test-Passw0rd"
SERVICE_STATE = ("Microsoft.Exchange.Data.ServiceState", "System.Enum", "System.ValueType", "System.Object")
REQUESTERS = (
    "System.Collections.Generic.List`1[[Microsoft.Exchange.Data.Directory.Management."
    "ServerComponentStatePresentationObject+RequesterDetails, Microsoft.Exchange.Data.Directory]]",
    "System.Object",
)
COMPONENT_STATE = (
    "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
)
NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"


class StandInExchange:
    """Just enough of SimulatedExchange for protocol tests; records every call it gets."""

    def __init__(self) -> None:
        self.servers = {
            "EX01": SimpleNamespace(fqdn="ex01.contoso.com"),
            "EX02": SimpleNamespace(fqdn="ex02.contoso.com"),
        }
        self.calls: list[dict[str, Any]] = []
        self.unreachable: set[str] = set()
        self.lock = threading.Lock()

    def take_http_failure(self, server: str) -> bool:
        return server in self.unreachable

    def invoke(
        self, server: str, endpoint: str, cmdlet: str, parameters: list[tuple[str, Any]], *, user: str = "",
        is_script: bool = False,
    ) -> SimResult:
        with self.lock:
            self.calls.append({"server": server, "endpoint": endpoint, "cmdlet": cmdlet, "parameters": parameters,
                               "user": user, "is_script": is_script})
        if is_script and endpoint == EXCHANGE:
            raise SimTerminatingError(SimError(
                "The syntax is not supported by this runspace. This can occur if the runspace is in no-language "
                "mode.", "ScriptsNotAllowed", "ParserError", cmdlet,
                "System.Management.Automation.ParseException",
            ))
        if cmdlet == "Get-ServerComponentState":
            components = ["ServerWideOffline", "HubTransport"]
            return SimResult(output=[self._component(server, name) for name in components])
        if cmdlet == "Get-Mailbox":
            identity = dict(parameters).get("Identity", "")
            return SimResult(errors=[SimError(
                f"The operation couldn't be performed because object '{identity}' couldn't be found on "
                "'dc01.contoso.com'.", f"[Server={server},RequestId=1] [FailureCategory=Cmdlet-"
                "ManagementObjectNotFoundException] 7DA4D0A1,Microsoft.Exchange.Management.RecipientTasks.GetMailbox",
                "NotSpecified", identity, NOT_FOUND,
            )])
        if cmdlet == "Set-ServerComponentState":
            return SimResult(warnings=["The component state was changed; it takes effect in a few minutes."])
        if cmdlet == "Echo-Parameters":
            return SimResult(output=[SimObject(("System.Management.Automation.PSCustomObject",),
                                               {"Count": len(parameters)})])
        if cmdlet == "Wait-Slowly":
            time.sleep(float(dict(parameters).get("Seconds", 0.3)))
            return SimResult(output=["done"])
        if cmdlet == "Get-Service" and endpoint == DEFAULT:
            return SimResult(output=[SimObject(("System.ServiceProcess.ServiceController",),
                                               {"Name": "MSExchangeTransport", "Status": SimEnum(
                                                   ("System.ServiceProcess.ServiceControllerStatus", "System.Enum",
                                                    "System.ValueType", "System.Object"), "Running", 4)})])
        raise SimTerminatingError(SimError(
            f"The term '{cmdlet}' is not recognized as the name of a cmdlet, function, script file, or operable "
            "program.", "CommandNotFoundException", "ObjectNotFound", cmdlet,
            "System.Management.Automation.CommandNotFoundException",
        ))

    @staticmethod
    def _component(server: str, component: str) -> SimObject:
        stamp = datetime.datetime(2021, 9, 28, 17, 32, 1, 807198, tzinfo=datetime.UTC)
        requester = SimObject(
            ("Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject+RequesterDetails",
             "System.Object"),
            {"Requester": "Functional", "State": "Active", "Timestamp": stamp, "Component": component},
            to_string="Requestor:Functional; State:Active; Timestamp:9/28/2021 5:32:01 PM",
        )
        return SimObject(COMPONENT_STATE, {
            "ServerFqdn": f"{server.lower()}.contoso.com",
            "Component": component,
            "State": SimEnum(SERVICE_STATE, "Active", 1),
            "RemoteStates": SimList(REQUESTERS, []),
            "LocalStates": SimList(REQUESTERS, [requester]),
            "IsValid": True,
        })


@pytest.fixture
def sim() -> StandInExchange:
    return StandInExchange()


@pytest.fixture
def endpoint(sim: StandInExchange) -> Iterator[RunningEndpoint]:
    with start_endpoint(sim, users={USER: PASSWORD}, shell_quota=3, receive_wait=0.2) as running:
        yield running


def connect(endpoint: RunningEndpoint, server: str = "EX01", configuration: str = EXCHANGE, *,
            auth: str = "basic", password: str = PASSWORD, encryption: str = "never") -> WSMan:
    return WSMan("127.0.0.1", port=endpoint.port, path=endpoint.path_for(server, configuration), ssl=False,
                 auth=auth, encryption=encryption, username=USER, password=password, operation_timeout=5)


def run(pool: RunspacePool, cmdlet: str, **parameters: Any) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    ps.invoke()
    ps.close()
    return ps


def test_pypsrp_builds_the_path_the_endpoint_routes(endpoint: RunningEndpoint) -> None:
    wsman = connect(endpoint)
    assert wsman.transport.endpoint == f"http://127.0.0.1:{endpoint.port}/EX01/PowerShell"
    assert endpoint.url_for("EX01", DEFAULT) == f"http://127.0.0.1:{endpoint.port}/EX01/wsman"


def test_a_cmdlet_returns_objects_shaped_like_exchange_output(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = run(pool, "Get-ServerComponentState", Identity="EX01")

    assert not ps.had_errors
    assert len(ps.output) == 2
    first = ps.output[0]
    assert first.types[0] == "Deserialized." + COMPONENT_STATE[0]
    props = first.adapted_properties
    assert props["Component"] == "ServerWideOffline"
    assert props["IsValid"] is True
    # Enums are nested objects: their ToString is the name, the object itself is not a string.
    assert str(props["State"]) == "Active"
    assert props["State"] != "Active"
    assert props["State"].types[0] == "Deserialized.Microsoft.Exchange.Data.ServiceState"
    # Lists of Exchange types reach pypsrp as an object holding the raw <LST> XML.
    local_states = props["LocalStates"]
    raw = local_states.property_sets[0]
    assert raw.startswith("<LST>")
    assert "<S N=\"Requester\">Functional</S>" in raw
    assert re.search(r'<DT N="Timestamp">2021-09-28T17:32:01\.\d{7}Z</DT>', raw)
    assert first.extended_properties["PSComputerName"] == "ex01.contoso.com"


def test_datetimes_arrive_with_seven_fractional_digits(endpoint: RunningEndpoint, sim: StandInExchange) -> None:
    sim._component = lambda server, component: SimObject(  # type: ignore[method-assign]
        COMPONENT_STATE, {"When": datetime.datetime(2024, 5, 1, 8, 0, 0, tzinfo=datetime.UTC)})
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = run(pool, "Get-ServerComponentState")
    assert ps.output[0].adapted_properties["When"] == "2024-05-01T08:00:00.0000000Z"


def test_a_not_found_error_arrives_in_the_error_stream_without_had_errors(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = run(pool, "Get-Mailbox", Identity="nobody")

    assert ps.had_errors is False
    assert ps.output == []
    [error] = ps.streams.error
    assert "couldn't be found" in str(error)
    assert error.fq_error.endswith("Microsoft.Exchange.Management.RecipientTasks.GetMailbox")
    assert error.target_name == "nobody"
    assert error.reason == "ManagementObjectNotFoundException"
    assert error.message.startswith("NotSpecified (nobody:String) [Get-Mailbox]")
    assert error.exception.types[0] == NOT_FOUND


def test_a_terminating_error_fails_the_pipeline_with_had_errors(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = run(pool, "Get-Nothing")

    assert ps.had_errors is True
    [error] = ps.streams.error
    assert error.fq_error == "CommandNotFoundException"
    assert "is not recognized" in str(error)


def test_a_script_is_refused_like_a_no_language_endpoint(endpoint: RunningEndpoint, sim: StandInExchange) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-Mailbox | Remove-Mailbox")
        ps.invoke()

    assert ps.had_errors is True
    assert ps.streams.error[0].fq_error == "ScriptsNotAllowed"
    assert sim.calls[-1]["is_script"] is True


def test_warnings_arrive_in_the_warning_stream(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = run(pool, "Set-ServerComponentState", Identity="EX01", Component="HubTransport", State="Draining")
    assert ps.had_errors is False
    assert "takes effect" in ps.streams.warning[0].message


def test_parameters_reach_the_simulator_as_plain_python(endpoint: RunningEndpoint, sim: StandInExchange) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Echo-Parameters").add_parameter("Identity", "EX01").add_parameter("Confirm", False)
        ps.add_parameter("ResultSize", 5).add_parameter("Force").add_parameter("Servers", ["EX01", "EX02"])
        ps.invoke()

    assert sim.calls[-1]["parameters"] == [
        ("Identity", "EX01"), ("Confirm", False), ("ResultSize", 5), ("Force", None), ("Servers", ["EX01", "EX02"]),
    ]
    assert sim.calls[-1]["user"] == USER
    assert sim.calls[-1]["server"] == "EX01"


def test_server_names_in_the_path_are_case_insensitive(endpoint: RunningEndpoint, sim: StandInExchange) -> None:
    with RunspacePool(connect(endpoint, "ex02"), configuration_name=EXCHANGE) as pool:
        run(pool, "Get-ServerComponentState")
    assert sim.calls[-1]["server"] == "EX02"


def test_the_wsman_path_serves_the_default_configuration(endpoint: RunningEndpoint, sim: StandInExchange) -> None:
    with RunspacePool(connect(endpoint, "EX01", DEFAULT), configuration_name=DEFAULT) as pool:
        ps = run(pool, "Get-Service", Name="MSExchangeTransport")
    assert str(ps.output[0].adapted_properties["Status"]) == "Running"
    assert sim.calls[-1]["endpoint"] == DEFAULT
    assert endpoint.stats.creates[("EX01", DEFAULT)] == 1


def test_the_exchange_path_refuses_another_configuration(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint, "EX01", EXCHANGE), configuration_name=DEFAULT)
    with pytest.raises(WSManFaultError, match="session configuration"):
        pool.open()


def test_an_unknown_server_is_not_found(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint, "EX99"), configuration_name=EXCHANGE)
    with pytest.raises(WinRMTransportError) as caught:
        pool.open()
    assert caught.value.code == 404


def test_a_wrong_password_raises_authentication_error_with_basic(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint, password="wrong"), configuration_name=EXCHANGE)
    with pytest.raises(AuthenticationError):
        pool.open()
    assert endpoint.stats.auth_failures == 1
    assert endpoint.stats.total_creates() == 0


def test_a_wrong_password_raises_authentication_error_with_negotiate(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint, auth="negotiate", password="wrong"), configuration_name=EXCHANGE)
    with pytest.raises(AuthenticationError):
        pool.open()


@pytest.mark.parametrize(("auth", "encryption"), [("negotiate", "never"), ("ntlm", "never"), ("negotiate", "auto")])
def test_ntlm_authentication_works_with_and_without_message_encryption(
    endpoint: RunningEndpoint, auth: str, encryption: str
) -> None:
    with RunspacePool(connect(endpoint, auth=auth, encryption=encryption), configuration_name=EXCHANGE) as pool:
        first = run(pool, "Get-ServerComponentState")
        second = run(pool, "Get-Mailbox", Identity="nobody")
    assert str(first.output[0].adapted_properties["State"]) == "Active"
    assert second.streams.error
    assert endpoint.open_shells() == []


def test_a_reused_pool_creates_one_shell_for_many_commands(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        for _ in range(5):
            run(pool, "Get-ServerComponentState")
    assert endpoint.stats.creates[("EX01", EXCHANGE)] == 1
    assert endpoint.stats.commands[("EX01", EXCHANGE)] == 5
    assert endpoint.stats.cmdlets["Get-ServerComponentState"] == 5
    # One Command and one Receive per invocation, plus the Terminate signal of PowerShell.close().
    assert endpoint.stats.requests["Command"] == 5
    assert endpoint.stats.requests["Receive"] == 1 + 5


def test_a_closed_pool_leaves_no_open_shells(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint), configuration_name=EXCHANGE)
    pool.open()
    run(pool, "Get-ServerComponentState")
    assert [s.server for s in endpoint.open_shells()] == ["EX01"]
    pool.close()
    assert endpoint.open_shells() == []
    assert endpoint.stats.deletes[("EX01", EXCHANGE)] == 1


def test_a_leaked_pool_is_reported_with_its_unclosed_commands(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint), configuration_name=EXCHANGE)
    pool.open()
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-ServerComponentState")
    ps.invoke()  # never closed: no Terminate signal
    [leak] = endpoint.open_shells()
    assert (leak.server, leak.configuration, leak.user) == ("EX01", EXCHANGE, USER)
    assert leak.commands_run == 1
    assert leak.open_commands == 1
    pool.close()


def test_the_shell_quota_refuses_one_shell_too_many(endpoint: RunningEndpoint) -> None:
    pools = [RunspacePool(connect(endpoint), configuration_name=EXCHANGE) for _ in range(3)]
    for pool in pools:
        pool.open()
    try:
        with pytest.raises(WSManFaultError) as caught:
            RunspacePool(connect(endpoint), configuration_name=EXCHANGE).open()
        assert "maximum number of 3 concurrent shells" in str(caught.value)
        # The quota is per user and server, like Exchange's per-server throttling budget.
        with RunspacePool(connect(endpoint, "EX02"), configuration_name=EXCHANGE) as other:
            run(other, "Get-ServerComponentState")
    finally:
        for pool in pools:
            pool.close()
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        run(pool, "Get-ServerComponentState")


def test_a_killed_shell_makes_the_next_command_fail(endpoint: RunningEndpoint) -> None:
    pool = RunspacePool(connect(endpoint), configuration_name=EXCHANGE)
    pool.open()
    run(pool, "Get-ServerComponentState")
    assert endpoint.kill_shells(server="ex01") == 1

    ps = PowerShell(pool)
    ps.add_cmdlet("Get-ServerComponentState")
    with pytest.raises(WSManFaultError) as caught:
        ps.invoke()
    assert caught.value.code == 2150858843
    assert "the shell was not found on the server" in str(caught.value)
    assert pool.is_alive() is False


def test_a_slow_cmdlet_goes_through_receive_timeouts_that_pypsrp_retries(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        ps = run(pool, "Wait-Slowly", Seconds="0.5")
    assert ps.output == ["done"]
    assert endpoint.stats.faults[2150858793] >= 1


def test_an_empty_receive_is_an_operation_timeout_fault(endpoint: RunningEndpoint) -> None:
    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        with pytest.raises(WSManFaultError) as caught:
            pool.shell.receive("stdout")  # the pool itself has nothing more to say
    assert caught.value.code == 2150858793


def test_injected_http_failures_hit_the_next_requests_only(endpoint: RunningEndpoint) -> None:
    endpoint.fail_next(1, mode="503")
    with pytest.raises(WinRMTransportError) as caught:
        RunspacePool(connect(endpoint), configuration_name=EXCHANGE).open()
    assert caught.value.code == 503

    endpoint.fail_next(1, mode="drop", server="EX01")
    with pytest.raises(requests.exceptions.ConnectionError):
        RunspacePool(connect(endpoint), configuration_name=EXCHANGE).open()

    with RunspacePool(connect(endpoint), configuration_name=EXCHANGE) as pool:
        run(pool, "Get-ServerComponentState")
    assert endpoint.stats.http_failures == 2


def test_an_unreachable_server_drops_every_connection(endpoint: RunningEndpoint, sim: StandInExchange) -> None:
    sim.unreachable.add("EX02")
    with pytest.raises(requests.exceptions.ConnectionError):
        RunspacePool(connect(endpoint, "EX02"), configuration_name=EXCHANGE).open()
    with RunspacePool(connect(endpoint, "EX01"), configuration_name=EXCHANGE) as pool:
        run(pool, "Get-ServerComponentState")


def test_pools_on_several_servers_run_concurrently(endpoint: RunningEndpoint) -> None:
    results: dict[str, str] = {}

    def work(server: str) -> None:
        with RunspacePool(connect(endpoint, server), configuration_name=EXCHANGE) as pool:
            results[server] = str(run(pool, "Get-ServerComponentState").output[0].adapted_properties["ServerFqdn"])

    threads = [threading.Thread(target=work, args=(server,)) for server in ("EX01", "EX02")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"EX01": "ex01.contoso.com", "EX02": "ex02.contoso.com"}


def test_the_endpoint_binds_only_to_loopback(sim: StandInExchange) -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_endpoint(sim, host="0.0.0.0")  # noqa: S104 - the point of the test
