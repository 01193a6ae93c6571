"""Kerberos (and HTTPS) through the project's session layer, against a real MIT KDC and the simulator's real
SPNEGO/Kerberos acceptor, with the unmodified pypsrp client. No mocks: the realm is started in a temporary directory
on a free loopback port (exchange_sim/kdc.py); its tickets live 2 minutes, so renewal is tested for real.

Under CI=true, missing KDC binaries fail these tests (``need_service``); locally they skip.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exchange_sim.endpoint import start_endpoint
from exchange_sim.objects import SimObject, SimResult
from exchange_sim.tls import make_pki
from runner.exchange import kerberos
from runner.exchange.kerberos import TICKETS, KerberosError
from runner.exchange.pypsrp_session import EndpointConfig, PypsrpSession, RemotingError
from runner.exchange.session import AuthenticationFailed, Endpoint
from tests.support.kerberos import PASS1, PASS2, SVC1, SVC2, realm

__all__ = ["realm"]  # the fixture, imported


@dataclass
class _Server:
    fqdn: str


@dataclass
class TinyExchange:
    """Answers any cmdlet (the tests send Get-ExchangeServer, a read in the cmdlet table: a write after a minute idle
    would probe the shell first) with the calling user's name: enough to see who logged in, and how."""

    servers: dict[str, Any] = field(default_factory=lambda: {
        "EX01": _Server("ex01.exmaint.test"), "EX02": _Server("ex02.exmaint.test")})

    def invoke(self, server, endpoint, cmdlet, parameters, *, user="", is_script=False) -> SimResult:
        return SimResult(output=[SimObject(("Thing", "System.Object"), {"Server": server, "User": user})])

    def take_http_failure(self, server: str) -> bool:
        return False


@pytest.fixture(autouse=True)
def _fresh_tickets():
    TICKETS.forget()
    TICKETS.clock_offset = 0
    yield
    TICKETS.forget()
    TICKETS.clock_offset = 0


@pytest.fixture(scope="module")
def endpoint(realm):
    """Offers only the bare Kerberos scheme (like an IIS site with Negotiate:Kerberos): encryption uses
    application/HTTP-Kerberos-session-encrypted."""
    with start_endpoint(TinyExchange(), users={SVC1: PASS1, SVC2: PASS2}, auth=("kerberos",),
                        keytab=str(realm.http_keytab)) as running:
        yield running


@pytest.fixture(scope="module")
def negotiate_endpoint(realm):
    with start_endpoint(TinyExchange(), users={SVC1: PASS1, SVC2: PASS2}, auth=("negotiate",),
                        keytab=str(realm.http_keytab)) as running:
        yield running


def config(running, server: str = "EX01", **options: Any) -> EndpointConfig:
    options.setdefault("auth", "kerberos")
    options.setdefault("username", SVC1)
    if "keytab" not in options:
        options.setdefault("password", PASS1)
    return EndpointConfig(url=running.url_for(server), configuration_name="Microsoft.Exchange",
                          spn_host=f"{server.lower()}.exmaint.test", operation_timeout=5, read_timeout=10, **options)


def run_once(cfg: EndpointConfig, server: str = "EX01") -> tuple[dict, PypsrpSession]:
    session = PypsrpSession(server, {Endpoint.EXCHANGE: cfg})
    try:
        result = session.run("Get-ExchangeServer")
    finally:
        session.close()
    return result.output[0], session


def test_a_password_gets_one_ticket_and_kerberos_logs_in_with_encrypted_messages(endpoint):
    cfg = config(endpoint)
    session = PypsrpSession("EX01", {Endpoint.EXCHANGE: cfg})
    try:
        before = endpoint.state.mechanisms["kerberos"]
        for _ in range(3):
            assert session.run("Get-ExchangeServer").output[0]["User"] == SVC1
        transport = session._pools[Endpoint.EXCHANGE].wsman.transport
        # Plain HTTP: every message went sealed with the Kerberos session key.
        assert transport.encryption is not None
        assert transport.encryption.protocol == "application/HTTP-Kerberos-session-encrypted"
    finally:
        session.close()
    assert session.mechanisms[Endpoint.EXCHANGE] == "kerberos"
    assert endpoint.state.mechanisms["kerberos"] == before + 1
    assert TICKETS.acquisitions == 1
    # A second session with the same credential reuses the ticket in memory: no second AS exchange.
    run_once(cfg)
    assert TICKETS.acquisitions == 1


def test_a_keytab_logs_in_without_a_password(realm, endpoint, tmp_path):
    data = realm.export_keytab(SVC2, tmp_path / "svc2.keytab")
    (tmp_path / "svc2.keytab").unlink()  # the credential layer gets bytes (as stored, encrypted, in the inventory)
    output, session = run_once(config(endpoint, username=SVC2, keytab=data))
    assert output["User"] == SVC2
    assert session.mechanisms[Endpoint.EXCHANGE] == "kerberos"


def test_a_wrong_password_says_so_and_the_password_is_not_in_the_message(endpoint):
    with pytest.raises(AuthenticationFailed) as caught:
        run_once(config(endpoint, password="Not-The-Passw0rd"))
    assert isinstance(caught.value, KerberosError)
    assert caught.value.cause == "wrong_password"
    assert "the KDC refused the password of exm-svc1: update the stored password" in str(caught.value)
    assert "Not-The-Passw0rd" not in str(caught.value)
    assert not caught.value.retryable


def test_an_unknown_spn_names_the_spn_to_register(endpoint):
    cfg = EndpointConfig(url=endpoint.url_for("EX01"), configuration_name="Microsoft.Exchange", auth="kerberos",
                         username=SVC1, password=PASS1, spn_host="ex09.exmaint.test", operation_timeout=5,
                         read_timeout=10)
    with pytest.raises(KerberosError) as caught:
        run_once(cfg)
    assert caught.value.cause == "unknown_spn"
    assert "no service principal HTTP/ex09.exmaint.test" in str(caught.value)


def test_an_expired_keytab_says_to_export_a_new_one(realm, endpoint, tmp_path):
    realm.add_user("exm-old", "Old-Passw0rd!")
    data = realm.export_keytab("exm-old", tmp_path / "old.keytab")
    realm.change_key("exm-old")
    with pytest.raises(KerberosError) as caught:
        run_once(config(endpoint, username="exm-old", keytab=data))
    assert caught.value.cause == "keytab_expired"
    assert "export and upload a new keytab" in str(caught.value)


def test_the_kdc_down_is_a_retryable_kdc_unreachable_and_kerberos_never_falls_back_to_ntlm(realm, negotiate_endpoint):
    ntlm_before = negotiate_endpoint.state.mechanisms["ntlm"]
    realm.stop()
    try:
        with pytest.raises(KerberosError) as caught:
            run_once(config(negotiate_endpoint))  # the endpoint offers NTLM too: kerberos must not use it
        assert caught.value.cause == "kdc_unreachable"
        assert caught.value.retryable
        assert "no KDC (domain controller) answered" in str(caught.value)
        assert negotiate_endpoint.state.mechanisms["ntlm"] == ntlm_before
    finally:
        realm.start()


def test_negotiate_uses_kerberos_and_falls_back_to_ntlm_only_when_it_must_saying_so(realm, negotiate_endpoint):
    output, session = run_once(config(negotiate_endpoint, auth="negotiate"))
    assert session.mechanisms[Endpoint.EXCHANGE] == "kerberos"
    assert session.take_notices() == []
    TICKETS.forget()
    realm.stop()
    try:
        output, session = run_once(config(negotiate_endpoint, auth="negotiate"))
    finally:
        realm.start()
    assert output["User"] == SVC1
    assert session.mechanisms[Endpoint.EXCHANGE] == "ntlm"
    notices = session.take_notices()
    assert len(notices) == 1 and "negotiate fell back to ntlm" in notices[0]


def test_a_clock_beyond_the_kdc_tolerance_is_reported_as_clock_skew(endpoint):
    TICKETS.clock_offset = 600  # this host 10 minutes ahead of the KDC; MIT's default tolerance is 5
    with pytest.raises(KerberosError) as caught:
        run_once(config(endpoint))
    assert caught.value.cause == "clock_skew"
    assert "fix NTP" in str(caught.value)


def test_two_servers_with_two_service_accounts_in_one_worker(endpoint):
    first = PypsrpSession("EX01", {Endpoint.EXCHANGE: config(endpoint, "EX01")})
    second = PypsrpSession("EX02", {Endpoint.EXCHANGE: config(endpoint, "EX02", username=SVC2, password=PASS2)})
    try:
        for _ in range(2):
            assert first.run("Get-ExchangeServer").output[0] == {"Server": "EX01", "User": SVC1, "_type": "Thing"}
            assert second.run("Get-ExchangeServer").output[0] == {"Server": "EX02", "User": SVC2, "_type": "Thing"}
        users = {(shell.server, shell.user) for shell in endpoint.open_shells()}
        assert users == {("EX01", SVC1), ("EX02", SVC2)}
    finally:
        first.close()
        second.close()
    assert TICKETS.acquisitions == 2


def test_a_window_outliving_the_ticket_renews_it_and_authenticates_again_on_the_same_shell(realm, endpoint):
    """The test realm's tickets live 2 minutes, and an established Kerberos context expires with its ticket (MIT's
    GSSAPI then refuses to seal messages): a step running past the end must renew the ticket and authenticate the
    connection again, keeping its remote shell."""
    session = PypsrpSession("EX01", {Endpoint.EXCHANGE: config(endpoint)})
    try:
        session.run("Get-ExchangeServer")
        ticket = next(iter(TICKETS._tickets.values()))
        assert ticket.lifetime <= 120
        handshakes = endpoint.state.mechanisms["kerberos"]
        (shell,) = endpoint.open_shells()
        time.sleep(max(0.0, ticket.endtime - time.time()) + 2)  # the step runs past the ticket's end
        assert session.run("Get-ExchangeServer").output[0]["User"] == SVC1
        (same,) = endpoint.open_shells()
    finally:
        session.close()
    assert same.shell_id == shell.shell_id and same.commands_run == 2
    assert TICKETS.acquisitions == 2
    assert endpoint.state.mechanisms["kerberos"] == handshakes + 1


# --- HTTPS ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["ex01.exmaint.test", "ex02.exmaint.test"])


@pytest.fixture(scope="module")
def https_endpoint(realm, pki):
    with start_endpoint(TinyExchange(), users={SVC1: PASS1}, auth=("negotiate",), keytab=str(realm.http_keytab),
                        tls=(str(pki.cert), str(pki.key))) as running:
        yield running


def test_https_with_the_ca_bundle_validates_and_logs_in_with_kerberos(https_endpoint, pki):
    output, session = run_once(config(https_endpoint, cert_validation=str(pki.ca)))
    assert output["User"] == SVC1
    assert session.mechanisms[Endpoint.EXCHANGE] == "kerberos"


def test_https_signed_by_another_ca_is_refused(https_endpoint, tmp_path):
    other = make_pki(tmp_path, ["ex01.exmaint.test"], ca_name="someone else's CA")
    with pytest.raises(RemotingError, match="TLS failure"):
        run_once(config(https_endpoint, cert_validation=str(other.ca)))


def test_https_without_validation_connects_and_leaves_a_warning_for_the_step_log(https_endpoint):
    output, session = run_once(config(https_endpoint, cert_validation=False))
    assert output["User"] == SVC1
    assert session.take_notices() == ["EX01 Microsoft.Exchange: TLS certificate validation is off for 127.0.0.1"]


def test_principal_names_from_inventory_user_names():
    assert kerberos.principal_name("svc@contoso.local") == "svc@CONTOSO.LOCAL"
    assert kerberos.principal_name("CONTOSO\\svc", "contoso.local") == "svc@CONTOSO.LOCAL"
    assert kerberos.principal_name("svc") == "svc"
    assert kerberos.spn_host("127.0.0.1", "ex01.contoso.local") == "ex01.contoso.local"
    assert kerberos.spn_host("EX01.contoso.local", "other") == "ex01.contoso.local"


def test_the_kdc_helper_reads_its_krb5_conf(realm):
    assert Path(realm.env["KRB5_CONFIG"]).read_text().count("kdc = 127.0.0.1:") == 1


def test_the_step_log_records_the_mechanism_and_negotiates_fallback_as_an_issue(db, realm, negotiate_endpoint):
    """Through the runner's own plumbing: a RelayedSession over the pypsrp adapter, inside an ExecutionContext."""
    from changes.models import Server
    from runner.clock import RealClock
    from runner.context import ExecutionContext
    from runner.sessions import RelayedSession
    from runner.step_types import ServerInfo

    server = Server.objects.create(name="EX01", fqdn="ex01.exmaint.test", auth_method="negotiate", username=SVC1,
                                   endpoint_url=negotiate_endpoint.url_for("EX01"))
    server.set_password(PASS1)
    server.save()
    realm.stop()  # no ticket: negotiate falls back to NTLM
    try:
        relayed = RelayedSession("EX01", [server], PypsrpSession)
        ctx = ExecutionContext(server=ServerInfo("EX01", "ex01.exmaint.test"), sessions=lambda endpoint: relayed,
                               clock=RealClock())
        ctx.run("Get-ExchangeServer", {"Identity": "EX01"})
        relayed.close()
    finally:
        realm.start()
    assert ctx.commands[0].as_dict()["auth"] == "ntlm"
    assert [issue.summary for issue in ctx.issues] == [
        "EX01 Microsoft.Exchange: negotiate fell back to ntlm (Kerberos was not available); see check_server"]
