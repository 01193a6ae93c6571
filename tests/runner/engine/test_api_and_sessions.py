"""The dry run over HTTP, and sessions built from the inventory (through the real pypsrp client where it matters)."""
from __future__ import annotations

import socket
import ssl
from datetime import timedelta

import pytest
from django.test import override_settings

from changes import services
from changes.models import Server
from exchange_sim.endpoint import start_endpoint
from runner.api import DryRunView
from runner.exchange.session import AuthenticationFailed, Endpoint
from runner.sessions import InventoryError, endpoint_config, open_sessions, server_info
from tests.conftest import SATURDAY_NIGHT

from .support import build_test_plan, mutating_commands, sim_factory

USER, PASSWORD = "exmaint-svc", "Sim-Passw0rd-for-tests"

pytestmark = pytest.mark.django_db


def awaiting_change(requester):
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": "CHG-DRY", "title": "Patch", "description": "",
        "change_type": "normal", "risk": "medium", "impact": "low", "servers": ["EX01"], "plan": "maintenance",
        "window_start": SATURDAY_NIGHT, "window_end": SATURDAY_NIGHT + timedelta(hours=2),
        "requested_by": "carol@example.com", "notify": [], "callback_url": "",
    })
    return change


@pytest.fixture
def dry_run_seams(monkeypatch, sim, hooks):
    monkeypatch.setattr(DryRunView, "sessions_factory", sim_factory(sim))
    monkeypatch.setattr(DryRunView, "plan_builder", build_test_plan(hooks))


def test_a_dry_run_before_approval_returns_the_plan_and_what_the_prechecks_found(
        api, requester, servers, operator, alice, sim, dry_run_seams) -> None:
    change = awaiting_change(requester)
    for user in (operator, alice, requester):
        response = api(user).post(f"/api/v1/changes/{change.pk}/dry-run/")
        assert response.status_code == 200, response.content
    body = response.json()
    assert body["plan"]["name"] == "maintenance"
    assert [s["key"] for s in body["plan"]["steps"]][:3] == ["precheck.active", "enter.snapshot",
                                                            "enter.hub_draining"]
    assert body["prechecks"] == [{
        "server": "EX01", "key": "precheck.active", "title": "Server fully Active", "gate": True, "status": "passed",
        "summary": "server fully Active", "findings": {"ServerWideOffline": "Active"}, "issues": [], "error": "",
    }]
    assert mutating_commands(sim) == []
    change.refresh_from_db()
    assert change.state == "awaiting_approval"


def test_a_dry_run_shows_a_failing_gate_without_pausing_anything(api, requester, servers, operator, sim,
                                                                 dry_run_seams) -> None:
    sim.inject("already-in-maintenance", "EX01")
    change = awaiting_change(requester)
    body = api(operator).post(f"/api/v1/changes/{change.pk}/dry-run/").json()
    assert body["prechecks"][0]["status"] == "failed"
    assert body["prechecks"][0]["error"] == "ServerWideOffline is Inactive"


def test_a_dry_run_is_refused_to_identities_with_no_part_in_the_change(api, requester, servers, auditor,
                                                                       outsider, dry_run_seams) -> None:
    change = awaiting_change(requester)
    assert api(auditor).post(f"/api/v1/changes/{change.pk}/dry-run/").status_code == 403
    assert api(outsider).post(f"/api/v1/changes/{change.pk}/dry-run/").status_code == 403
    assert api(None).post(f"/api/v1/changes/{change.pk}/dry-run/").status_code in (401, 403)


def test_an_unreachable_server_answers_503_with_a_message(api, requester, servers, operator, sim,
                                                          dry_run_seams) -> None:
    sim.inject("unreachable", "EX01", times=100)
    change = awaiting_change(requester)
    response = api(operator).post(f"/api/v1/changes/{change.pk}/dry-run/")
    assert response.status_code == 503
    assert response.json()["code"] == "server_unreachable" and "EX01" in response.json()["detail"]


def test_refused_credentials_answer_502(api, requester, servers, operator, monkeypatch, dry_run_seams) -> None:
    class Refusing:
        def __call__(self, endpoint):
            return self

        def run(self, *args, **kwargs):
            raise AuthenticationFailed("EX01: the endpoint refused the credentials")

        def release_finished(self):
            pass

        def take_notices(self):
            return []

        relay = None
        mechanisms: dict = {}

        def close(self):
            pass

    monkeypatch.setattr(DryRunView, "sessions_factory", lambda server: Refusing())
    change = awaiting_change(requester)
    response = api(operator).post(f"/api/v1/changes/{change.pk}/dry-run/")
    assert (response.status_code, response.json()["code"]) == (502, "remoting_failed")


def test_an_unknown_plan_answers_422(api, requester, servers, operator, monkeypatch, dry_run_seams) -> None:
    def broken(name, server, options):
        raise ValueError(f"no plan named {name!r}")

    monkeypatch.setattr(DryRunView, "plan_builder", broken)
    change = awaiting_change(requester)
    response = api(operator).post(f"/api/v1/changes/{change.pk}/dry-run/")
    assert (response.status_code, response.json()["code"]) == (422, "plan_unavailable")


# --- sessions from the inventory ------------------------------------------------------------------------------------


def simulated_inventory(endpoint, name: str = "EX01") -> Server:
    server = Server.objects.get(name=name)
    server.endpoint_url = endpoint.url_for(name, Endpoint.EXCHANGE.value)
    server.winrm_url = endpoint.url_for(name, Endpoint.DEFAULT.value)
    server.auth_method, server.username = "basic", USER
    server.set_password(PASSWORD)
    server.save()
    return server


def test_the_dry_run_goes_through_pypsrp_to_the_server_of_the_inventory(api, requester, servers, operator, sim,
                                                                        hooks, monkeypatch) -> None:
    monkeypatch.setattr(DryRunView, "plan_builder", build_test_plan(hooks))
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        simulated_inventory(endpoint)
        change = awaiting_change(requester)
        response = api(operator).post(f"/api/v1/changes/{change.pk}/dry-run/")
        assert response.status_code == 200, response.content
        assert response.json()["prechecks"][0]["status"] == "passed"
        assert endpoint.open_shells() == []  # the session was closed
    assert [c.cmdlet for c in sim.commands] == ["Get-ServerComponentState"]


def test_a_closed_port_answers_503(api, requester, servers, operator, hooks, monkeypatch) -> None:
    monkeypatch.setattr(DryRunView, "plan_builder", build_test_plan(hooks))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = servers["EX01"]
    server.endpoint_url = f"http://127.0.0.1:{port}/EX01/PowerShell"
    server.auth_method, server.username = "basic", USER
    server.set_password(PASSWORD)
    server.save()
    change = awaiting_change(requester)
    response = api(operator).post(f"/api/v1/changes/{change.pk}/dry-run/")
    assert response.status_code == 503, response.content


def test_endpoint_configs_come_from_the_inventory_with_the_password_decrypted(servers) -> None:
    server = servers["EX01"]
    server.auth_method, server.username, server.operation_timeout = "ntlm", "CORP\\svc-exmaint", 45
    server.verify_tls = False
    server.set_password("S3cret!pass")
    exchange = endpoint_config(server, Endpoint.EXCHANGE)
    assert (exchange.host, exchange.port, exchange.path, exchange.configuration_name) == (
        "ex01.corp.example", 80, "PowerShell", "Microsoft.Exchange")
    assert (exchange.auth, exchange.username, exchange.password, exchange.cert_validation) == (
        "ntlm", "CORP\\svc-exmaint", "S3cret!pass", False)
    assert exchange.operation_timeout == 45 and exchange.read_timeout > 45
    assert "S3cret" not in repr(exchange)
    default = endpoint_config(server, Endpoint.DEFAULT)
    assert (default.port, default.path, default.configuration_name) == (5985, "wsman", "Microsoft.PowerShell")


def test_the_default_winrm_endpoint_takes_its_own_settings_and_inherits_the_rest(servers) -> None:
    server = servers["EX01"]
    server.auth_method, server.verify_tls = "kerberos", True
    server.connection_timeout, server.operation_timeout = 20, 40
    server.winrm_url = "https://ex01.corp.example:5986/wsman"
    server.winrm_auth_method, server.winrm_verify_tls, server.winrm_operation_timeout = "ntlm", False, 90
    exchange, default = endpoint_config(server, Endpoint.EXCHANGE), endpoint_config(server, Endpoint.DEFAULT)
    system_store = ssl.get_default_verify_paths().cafile or True  # validated against the OS's CAs, not certifi's
    assert (exchange.auth, exchange.ssl, exchange.cert_validation) == ("kerberos", False, system_store)
    assert (exchange.connection_timeout, exchange.operation_timeout) == (20, 40)
    assert (default.auth, default.ssl, default.port, default.cert_validation) == ("ntlm", True, 5986, False)
    assert (default.connection_timeout, default.operation_timeout) == (20, 90)  # connection timeout inherited
    assert default.read_timeout > 90
    server.winrm_auth_method, server.winrm_verify_tls, server.winrm_operation_timeout = "", None, None
    default = endpoint_config(server, Endpoint.DEFAULT)
    assert (default.auth, default.cert_validation, default.operation_timeout) == ("kerberos", system_store, 40)


def test_basic_auth_on_the_winrm_endpoint_alone_is_judged_on_its_own_url(servers) -> None:
    server = servers["EX01"]
    server.auth_method, server.winrm_auth_method = "kerberos", "basic"
    endpoint_config(server, Endpoint.EXCHANGE)  # Kerberos wraps messages: fine over http
    with pytest.raises(InventoryError, match="clear text"):
        endpoint_config(server, Endpoint.DEFAULT)
    server.winrm_url = "https://ex01.corp.example:5986/wsman"
    assert endpoint_config(server, Endpoint.DEFAULT).auth == "basic"


def test_basic_auth_in_clear_text_is_refused_except_on_loopback_or_when_allowed(servers) -> None:
    server = servers["EX01"]
    server.auth_method = "basic"
    with pytest.raises(InventoryError, match="clear text"):
        endpoint_config(server, Endpoint.EXCHANGE)
    with override_settings(EXMAINT={"ALLOW_UNENCRYPTED_BASIC": True}):
        assert endpoint_config(server, Endpoint.EXCHANGE).encryption == "never"
    server.endpoint_url = "http://127.0.0.1:5985/EX01/PowerShell"
    assert endpoint_config(server, Endpoint.EXCHANGE).encryption == "never"
    server.endpoint_url = "https://ex01.corp.example/PowerShell"
    assert endpoint_config(server, Endpoint.EXCHANGE).encryption == "auto"


def test_sessions_open_lazily_one_per_endpoint_and_close_together(servers, sim) -> None:
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        server = simulated_inventory(endpoint)
        sessions = open_sessions(server)
        assert endpoint.stats.total_creates() == 0
        exchange = sessions(Endpoint.EXCHANGE)
        assert sessions(Endpoint.EXCHANGE) is exchange
        result = exchange.run("Get-ServerComponentState", {"Identity": "EX01", "Component": "HubTransport"})
        assert result.output[0]["State"] == "Active"
        sessions(Endpoint.DEFAULT).run("Get-Service", {"Name": "MSExchangeTransport"}, endpoint=Endpoint.DEFAULT)
        assert len(endpoint.open_shells()) == 2
        sessions.close()
        assert endpoint.open_shells() == []


def test_server_info_names_the_dag_peers_from_the_inventory(servers) -> None:
    info = server_info(servers["EX03"])
    assert (info.name, info.dag_name, [p.name for p in info.peers]) == ("EX03", "DAG1", ["EX02", "EX04"])
    assert server_info(servers["EX01"]).peers == ()


def test_exchange_cmdlets_of_a_dag_member_go_through_healthy_peers_then_its_own_endpoint(servers, requester) -> None:
    from runner.sessions import exchange_relays

    from .support import running_change

    ex02, ex03, ex04 = (Server.objects.get(name=n) for n in ("EX02", "EX03", "EX04"))
    assert exchange_relays(ex02) == [ex03, ex04, ex02]
    running_change(requester, servers=("EX03",), ref="BUSY")  # EX03 is in a window of its own
    assert exchange_relays(ex02) == [ex04, ex02]
    assert [s.name for s in exchange_relays(Server.objects.get(name="EX01"))] == ["EX01"]  # standalone


def dag_inventory(endpoint, closed_port: int) -> dict[str, Server]:
    """EX02..EX04 served by ENDPOINT, except EX03's Exchange endpoint, which points at a port nobody listens on."""
    members = {}
    for name in ("EX02", "EX03", "EX04"):
        members[name] = simulated_inventory(endpoint, name)
    members["EX03"].endpoint_url = f"http://127.0.0.1:{closed_port}/EX03/PowerShell"
    members["EX03"].save()
    return members


def test_when_the_first_peer_does_not_answer_the_next_one_runs_the_exchange_cmdlets(servers) -> None:
    from .support import organisation

    sim = organisation(dags={"DAG1": ("EX02", "EX03", "EX04")})
    with socket.socket() as sock, start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        members = dag_inventory(endpoint, sock.getsockname()[1])
        with open_sessions(members["EX02"]) as sessions:
            exchange = sessions(Endpoint.EXCHANGE)
            # A write whose connection could not even be opened is safe to send through the next peer: it never left.
            exchange.run("Set-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport",
                                                      "State": "Draining", "Requester": "Maintenance"})
            assert exchange.relay == "EX04"
            # EX03's session tried to open its pool twice (nothing was sent), then the command moved on.
            resent, notice = exchange.take_notices()
            assert "Set-ServerComponentState had not been sent and was sent once more" in resent
            assert notice.startswith("EX02: Exchange cmdlets moved from EX03's endpoint to EX04's (")
            assert "unreachable" in notice
            state = exchange.run("Get-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport"})
            assert state.output[0]["State"] == "Draining"
        assert endpoint.stats.creates[("EX04", "Microsoft.Exchange")] == 1
        assert [c.cmdlet for c in sim.commands if c.cmdlet.startswith("Set-")] == ["Set-ServerComponentState"]
        assert endpoint.open_shells() == []


def test_relays_are_tried_in_turn_and_one_that_failed_is_used_again_once_it_answers(servers) -> None:
    from .support import organisation

    sim = organisation(dags={"DAG1": ("EX02", "EX03", "EX04")})
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        for name in ("EX02", "EX03", "EX04"):
            simulated_inventory(endpoint, name)
        read = ("Get-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport"})
        with open_sessions(Server.objects.get(name="EX02")) as sessions:
            exchange = sessions(Endpoint.EXCHANGE)
            assert [r.name for r in exchange.relays] == ["EX03", "EX04", "EX02"]
            endpoint.fail_next(2, mode="drop", server="EX03")  # EX03 drops the pool opening and its one resend
            exchange.run("Set-ServerComponentState", {**read[1], "State": "Draining", "Requester": "Maintenance"})
            assert exchange.relay == "EX04"
            exchange.run(*read)
            endpoint.fail_next(1, mode="drop", server="EX04")  # EX04 stops answering: the read moves on
            exchange.run(*read)
            assert exchange.relay == "EX02"  # the server itself, the last resort
            endpoint.fail_next(1, mode="drop", server="EX02")
            assert exchange.run(*read).output[0]["State"] == "Draining"
            assert exchange.relay == "EX03"  # round again: EX03 answers by now
            assert len([n for n in exchange.take_notices() if "cmdlets moved from" in n]) == 3
        assert [c.server for c in sim.commands if c.cmdlet.startswith("Set-")] == ["EX04"]
        assert endpoint.open_shells() == []


def test_a_wrong_password_on_one_peer_is_not_tried_on_the_others(servers) -> None:
    from .support import organisation

    sim = organisation(dags={"DAG1": ("EX02", "EX03", "EX04")})
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        for name in ("EX02", "EX03", "EX04"):
            simulated_inventory(endpoint, name)
        ex03 = Server.objects.get(name="EX03")
        ex03.set_password("not-the-password")
        ex03.save()
        with open_sessions(Server.objects.get(name="EX02")) as sessions, pytest.raises(AuthenticationFailed):
            sessions(Endpoint.EXCHANGE).run("Get-ServerComponentState", {"Identity": "EX02"})
        assert endpoint.stats.auth_failures == 1  # one refusal: the same account is not tried again elsewhere


def test_a_write_that_may_have_reached_the_peer_is_never_sent_through_another(servers) -> None:
    from runner.exchange.session import EndpointUnreachable

    from .support import organisation

    sim = organisation(dags={"DAG1": ("EX02", "EX03", "EX04")})
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        for name in ("EX02", "EX03", "EX04"):
            simulated_inventory(endpoint, name)
        with open_sessions(Server.objects.get(name="EX02")) as sessions:
            exchange = sessions(Endpoint.EXCHANGE)
            exchange.run("Get-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport"})
            endpoint.fail_next(1, mode="drop", server="EX03")  # the write's own request is lost on the way back
            with pytest.raises(EndpointUnreachable, match="not resent"):
                exchange.run("Set-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport",
                                                          "State": "Draining", "Requester": "Maintenance"})
            assert exchange.relay == "EX03" and exchange.take_notices() == []
        assert endpoint.stats.creates[("EX04", "Microsoft.Exchange")] == 0
