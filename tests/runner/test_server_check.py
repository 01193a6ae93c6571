"""check_server, its command and its API action, against the full simulated Exchange served over WinRM with a real
Kerberos acceptor, and the inventory's Kerberos/TLS settings (keytab, CA bundle, clear-text Basic refused)."""
from __future__ import annotations

import base64

import pytest
from django.core.management import CommandError, call_command

from changes.models import Server
from exchange_sim.endpoint import start_endpoint
from exchange_sim.model import SimulatedExchange
from exchange_sim.tls import make_pki
from runner.exchange.kerberos import TICKETS
from runner.exchange.session import Endpoint
from runner.server_check import check_server
from runner.sessions import endpoint_config
from tests.support.kerberos import PASS1, SVC1, realm

__all__ = ["realm"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["ex01.exmaint.test"])


@pytest.fixture(scope="module")
def sim_endpoints(realm, pki):
    sim = SimulatedExchange()
    sim.add_standalone("EX01", fqdn="ex01.exmaint.test")
    common = {"users": {SVC1: PASS1}, "auth": ("negotiate",), "keytab": str(realm.http_keytab)}
    with start_endpoint(sim, **common) as http, start_endpoint(sim, tls=(str(pki.cert), str(pki.key)),
                                                                **common) as https:
        yield http, https


def _server(running, **fields) -> Server:
    server = Server(name="EX01", fqdn="ex01.exmaint.test", endpoint_url=running.url_for("EX01"),
                    winrm_url=running.url_for("EX01", "Microsoft.PowerShell"), auth_method="kerberos",
                    username=SVC1, **fields)
    server.set_password(PASS1)
    server.save()
    return server


@pytest.fixture(autouse=True)
def _fresh_tickets():
    TICKETS.forget()
    yield
    TICKETS.forget()


def test_check_server_reports_host_spn_mechanism_version_and_clock_and_runs_only_reads(db, sim_endpoints):
    http, _ = sim_endpoints
    before = set(http.stats.cmdlets)
    report = check_server(_server(http))
    assert report.ok, report.lines()
    exchange, default = report.endpoints
    assert exchange.endpoint == "Microsoft.Exchange" and default.endpoint == "Microsoft.PowerShell"
    for check in (exchange, default):
        assert check.resolved == ["127.0.0.1"]
        assert check.spn == "HTTP/ex01.exmaint.test"
        assert check.mechanism == "kerberos"
        assert abs(check.time_offset_seconds) < 3
    assert exchange.exchange_version.startswith("Version 15.")
    ran = set(http.stats.cmdlets) - before
    assert ran and all(name.startswith("Get-") for name in ran)
    assert http.open_shells() == []


def test_check_server_over_https_shows_the_certificate_and_warns_when_validation_is_off(db, sim_endpoints, pki):
    _, https = sim_endpoints
    trusted = check_server(_server(https, tls_ca_bundle=str(pki.ca)))
    assert trusted.ok, trusted.lines()
    assert trusted.endpoints[0].tls_subject.startswith("CN=ex01.exmaint.test")
    assert trusted.endpoints[0].tls_validation == str(pki.ca)
    assert trusted.endpoints[0].tls_not_after.startswith(pki.not_after.date().isoformat())
    Server.objects.all().delete()
    unchecked = check_server(_server(https, verify_tls=False))
    assert unchecked.ok
    assert "TLS certificate validation is off for this endpoint" in unchecked.endpoints[0].warnings
    assert "TLS certificate validation is off" in unchecked.summary()


def test_check_server_on_an_untrusted_certificate_reports_the_tls_problem(db, sim_endpoints):
    _, https = sim_endpoints
    report = check_server(_server(https))  # the system store does not hold the test CA
    exchange = report.endpoints[0]
    assert not report.ok
    assert "not trusted" in exchange.tls_error
    assert "TLS failure" in exchange.error


def test_check_server_command_prints_the_report_and_fails_on_a_wrong_password(db, sim_endpoints, capsys):
    http, _ = sim_endpoints
    server = _server(http)
    call_command("check_server", "ex01")
    out = capsys.readouterr().out
    assert "mechanism used   kerberos" in out and "SPN HTTP/ex01.exmaint.test" in out
    server.set_password("Wrong-Passw0rd")
    server.save()
    with pytest.raises(CommandError):
        call_command("check_server", "EX01")
    assert "the KDC refused the password" in capsys.readouterr().out


def test_the_check_api_is_for_operators(db, sim_endpoints, api, operator, auditor):
    http, _ = sim_endpoints
    server = _server(http)
    assert api(auditor).post(f"/api/v1/servers/{server.pk}/check/").status_code == 403
    res = api(operator).post(f"/api/v1/servers/{server.pk}/check/")
    assert res.status_code == 200
    assert res.json()["ok"] is True
    assert res.json()["endpoints"][0]["mechanism"] == "kerberos"


def test_a_keytab_is_write_only_stored_encrypted_and_reaches_the_session(db, api, operator):
    keytab = b"\x05\x02fake keytab bytes"
    res = api(operator).post("/api/v1/servers/", {"name": "EX09", "fqdn": "ex09.corp.example", "username": "svc",
                                                  "keytab": base64.b64encode(keytab).decode()}, format="json")
    assert res.status_code == 201, res.content
    assert res.json()["has_keytab"] is True and "keytab" not in res.json()
    server = Server.objects.get(name="EX09")
    assert keytab not in server.kerberos_keytab_encrypted.encode()
    config = endpoint_config(server, Endpoint.EXCHANGE)
    assert config.keytab == keytab and config.spn_host == "ex09.corp.example"
    bad = api(operator).patch(f"/api/v1/servers/{server.pk}/", {"keytab": "not base64!"}, format="json")
    assert bad.status_code == 400


def test_basic_over_plain_http_is_refused_at_registration_but_allowed_on_loopback(db, api, operator):
    res = api(operator).post("/api/v1/servers/", {"name": "EX09", "fqdn": "ex09.corp.example",
                                                  "auth_method": "basic"}, format="json")
    assert res.status_code == 400
    assert "clear text" in res.json()["detail"]
    ok = api(operator).post("/api/v1/servers/", {"name": "EX10", "fqdn": "ex10.corp.example", "auth_method": "basic",
                                                 "endpoint_url": "https://ex10.corp.example/PowerShell",
                                                 "winrm_url": "http://127.0.0.1:5985/wsman"}, format="json")
    assert ok.status_code == 201, ok.content


def test_validation_off_shows_as_a_warning_in_the_api(db, api, operator):
    res = api(operator).post("/api/v1/servers/", {"name": "EX11", "fqdn": "ex11.corp.example", "verify_tls": False,
                                                  "endpoint_url": "https://ex11.corp.example/PowerShell"},
                             format="json")
    assert res.status_code == 201
    assert res.json()["tls_warnings"] == ["EX11: TLS certificate validation is off for the Exchange endpoint"]


def test_the_admin_action_checks_the_selected_servers_and_the_form_warns_when_validation_is_off(
        db, sim_endpoints, client, operator):
    http, _ = sim_endpoints
    server = _server(http)
    client.force_login(operator)
    res = client.post("/admin/changes/server/", {"action": "check_connection", "_selected_action": [server.pk]},
                      follow=True)
    assert res.status_code == 200
    shown = [str(m) for m in res.context["messages"]]
    assert any(m.startswith("EX01: OK (Microsoft.Exchange via kerberos") for m in shown), shown
    Server.objects.filter(pk=server.pk).update(verify_tls=False, endpoint_url="https://ex01.exmaint.test/PowerShell")
    page = client.get(f"/admin/changes/server/{server.pk}/change/")
    assert "TLS certificate validation is off for the Exchange endpoint" in page.content.decode()


def test_the_admin_refuses_basic_over_plain_http_with_a_form_error(db, client, operator):
    client.force_login(operator)
    res = client.post("/admin/changes/server/add/", {
        "name": "EX12", "fqdn": "ex12.corp.example", "auth_method": "basic", "verify_tls": "on",
        "connection_timeout": 30, "operation_timeout": 30, "username": "svc", "password": "pw"})
    assert res.status_code == 200  # the form again, not a redirect
    assert "would send the password in clear text" in res.content.decode()
    assert not Server.objects.filter(name="EX12").exists()
