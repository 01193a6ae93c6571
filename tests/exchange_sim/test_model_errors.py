"""Error shapes (not found, parameter binding, no-language, command not found), the command record, locking."""
from __future__ import annotations

import threading

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimObject, SimTerminatingError

EX = "Microsoft.Exchange"
DEFAULT = "Microsoft.PowerShell"


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    return sim


def terminating(sim: SimulatedExchange, *args, **kwargs) -> SimTerminatingError:
    with pytest.raises(SimTerminatingError) as caught:
        sim.invoke(*args, **kwargs)
    return caught.value


def test_an_unknown_server_is_a_non_terminating_not_found_record(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX99")])
    assert result.output == []
    (error,) = result.errors
    assert error.category == "ObjectNotFound"
    assert "couldn't be found" in error.message and "'EX99'" in error.message
    assert error.error_id.startswith("[Server=EX01,RequestId=")
    assert "[FailureCategory=Cmdlet-ManagementObjectNotFoundException]" in error.error_id
    assert error.error_id.endswith(",Microsoft.Exchange.Management.SystemConfigurationTasks.GetServerComponentState")
    assert error.target == "EX99"


def test_a_bad_enum_value_is_a_parameter_binding_error(sim: SimulatedExchange) -> None:
    exc = terminating(sim, "EX01", EX, "Set-ServerComponentState",
                      [("Identity", "EX01"), ("Component", "HubTransport"), ("State", "Paused"),
                       ("Requester", "Maintenance")])
    assert exc.error.exception_type == "System.Management.Automation.ParameterBindingException"
    assert exc.error.error_id.startswith("CannotConvertArgumentNoMessage,")
    assert "Inactive, Active, Draining" in exc.error.message


def test_an_unknown_parameter_is_named_parameter_not_found(sim: SimulatedExchange) -> None:
    exc = terminating(sim, "EX01", EX, "Get-Queue", [("Srv", "EX01"), ("Bogus", 1)])
    assert exc.error.error_id == "NamedParameterNotFound,Microsoft.Exchange.Management.QueueViewerTasks.GetQueue"
    assert exc.error.category == "InvalidArgument"


def test_parameter_names_bind_case_insensitively_and_by_unique_prefix(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX01", EX, "get-servercomponentstate", [("-identity", "ex01"), ("Comp", "hubtransport")])
    assert result.output[0].props["Component"] == "HubTransport"


def test_a_missing_mandatory_parameter_fails_the_binding(sim: SimulatedExchange) -> None:
    exc = terminating(sim, "EX01", EX, "Set-ServerComponentState", [("Identity", "EX01")])
    assert exc.error.error_id.startswith("MissingMandatoryParameter,")


def test_script_text_is_refused_by_the_no_language_endpoint(sim: SimulatedExchange) -> None:
    exc = terminating(sim, "EX01", EX, "Get-Queue | Where-Object { $_.MessageCount -gt 0 }", [], is_script=True)
    assert "no-language mode" in exc.error.message
    assert exc.error.category == "ParserError"


def test_an_unknown_cmdlet_is_command_not_found(sim: SimulatedExchange) -> None:
    exc = terminating(sim, "EX01", EX, "Get-Nothing", [])
    assert exc.error.exception_type == "System.Management.Automation.CommandNotFoundException"
    assert exc.error.category == "ObjectNotFound"


@pytest.mark.parametrize(("endpoint", "cmdlet"), [(DEFAULT, "Get-Queue"), (DEFAULT, "Set-ServerComponentState"),
                                                  (EX, "Get-ClusterNode"), (EX, "Restart-Service")])
def test_cmdlets_only_exist_on_their_own_endpoint(sim: SimulatedExchange, endpoint: str, cmdlet: str) -> None:
    exc = terminating(sim, "EX01", endpoint, cmdlet, [])
    assert exc.error.error_id == "CommandNotFoundException"


def test_get_service_reports_an_unknown_service_without_stopping(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX01", DEFAULT, "Get-Service", [("Name", ["MSExchangeTransport", "NoSuchSvc"])])
    assert [o.props["Name"] for o in result.output] == ["MSExchangeTransport"]
    assert result.errors[0].error_id.startswith("NoServiceFoundForGivenName,")


def test_every_command_is_recorded_in_order_with_simulated_time(sim: SimulatedExchange) -> None:
    sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX01")], user="CONTOSO\\svc")
    sim.clock.advance(30)
    sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX99")])
    with pytest.raises(SimTerminatingError):
        sim.invoke("EX01", EX, "Get-Nothing", [])
    assert [c.cmdlet for c in sim.commands] == ["Get-ServerComponentState"] * 2 + ["Get-Nothing"]
    first, second, third = sim.commands
    assert first.user == "CONTOSO\\svc" and first.endpoint == EX and first.server == "EX01"
    assert (second.at - first.at).total_seconds() == 30
    assert first.outcome == "ok" and second.outcome == "errors" and third.outcome == "CommandNotFoundException"
    assert second.get("identity") == "EX99"


def test_secrets_are_redacted_in_the_record(sim: SimulatedExchange) -> None:
    secure = SimObject(("System.Security.SecureString", "System.Object"), {}, "System.Security.SecureString")
    with pytest.raises(SimTerminatingError):
        sim.invoke("EX01", EX, "Get-Queue", [("Server", "EX01"), ("Password", "hunter2"), ("Credential", "x"),
                                             ("Key", secure)])
    assert sim.commands[-1].parameters == [("Server", "EX01"), ("Password", "***"), ("Credential", "***"),
                                           ("Key", "***")]


def test_the_model_is_safe_to_call_from_several_threads() -> None:
    sim = SimulatedExchange(auto_advance_seconds=1)
    sim.add_dag("DAG1", ["EX01", "EX02"])
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                sim.invoke("EX01", EX, "Get-Queue", [("Server", "EX02")])
                sim.invoke("EX02", EX, "Get-ServerComponentState", [("Identity", "EX01")])
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(sim.commands) == 400
    times = [c.at for c in sim.commands]
    assert times == sorted(times)
