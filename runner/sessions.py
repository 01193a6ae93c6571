"""Sessions and server descriptions built from the inventory (``changes.models.Server``).

``open_sessions(server)`` returns a ``ServerSessions``: call it with an ``Endpoint`` to get that endpoint's session
(opened lazily, one ``PypsrpSession`` per endpoint, reused), and ``close()`` it when the window's work on the server
is done — Exchange throttles concurrent shells per user, and leaked ones count until they expire.
"""
from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from changes.models import Server
from changes.states import ACTIVE

from . import conf
from .exchange.cmdlets import is_read
from .exchange.pypsrp_session import EndpointConfig, PypsrpSession
from .exchange.session import (
    AuthenticationFailed,
    CommandResult,
    Endpoint,
    ExchangeSession,
    ExchangeSessionError,
)
from .step_types import ServerInfo

log = logging.getLogger(__name__)


class InventoryError(ExchangeSessionError):
    """The inventory entry cannot be turned into a safe connection (bad URL, basic auth in clear text, ...)."""


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_config(server: Server, endpoint: Endpoint) -> EndpointConfig:
    """How to reach one endpoint of ``server``: the Exchange endpoint (``/PowerShell``, Microsoft.Exchange) or the
    default WinRM endpoint (Microsoft.PowerShell). Raises InventoryError for unusable or unsafe entries."""
    exchange = endpoint == Endpoint.EXCHANGE
    url = server.effective_endpoint_url if exchange else server.effective_winrm_url
    # The default WinRM endpoint has its own settings where given; otherwise it is reached like the Exchange one.
    auth = server.auth_method if exchange else (server.winrm_auth_method or server.auth_method)
    verify_tls = server.verify_tls if exchange or server.winrm_verify_tls is None else server.winrm_verify_tls
    connection_timeout = server.connection_timeout if exchange else (
        server.winrm_connection_timeout or server.connection_timeout)
    operation_timeout = server.operation_timeout if exchange else (
        server.winrm_operation_timeout or server.operation_timeout)
    parts = urlsplit(url)
    host = parts.hostname or ""
    encryption = "auto"
    if auth == Server.AuthMethod.BASIC and parts.scheme == "http":
        # Basic auth cannot wrap messages (only Kerberos/NTLM/Negotiate encrypt over HTTP), so the password and
        # every command would cross the network readable. Acceptable only on loopback (the simulator, an SSH
        # tunnel) or when an operator explicitly allows it for a trusted link.
        if not (_is_loopback(host) or conf.allow_unencrypted_basic()):
            raise InventoryError(
                f"{server.name}: basic authentication over plain HTTP to {host} would send the password in clear "
                "text; use https, Kerberos/NTLM, or set EXMAINT_ALLOW_UNENCRYPTED_BASIC=true for a trusted link"
            )
        encryption = "never"
    timeout = int(operation_timeout or 30)
    if parts.scheme == "https" and not verify_tls:
        log.warning("%s %s: TLS certificate validation is off for %s", server.name, endpoint.value, host)
    try:
        return EndpointConfig(
            url=url,
            configuration_name=endpoint.value,
            auth=auth,
            username=server.username or None,
            password=server.get_password() or None,
            keytab=server.get_keytab(),
            kerberos_realm=conf.kerberos_realm(),
            spn_host=server.fqdn or None,
            cert_validation=cert_validation(server, bool(verify_tls)),
            connection_timeout=int(connection_timeout or 30),
            operation_timeout=timeout,
            # A WinRM Receive long-polls for the operation timeout: the HTTP read must outlast it.
            read_timeout=timeout + 15,
            encryption=encryption,
        )
    except ValueError as exc:
        raise InventoryError(f"{server.name} {endpoint.value}: {exc}") from None


def cert_validation(server: Server, verify: bool) -> bool | str:
    """What pypsrp checks an https certificate against: the server's CA bundle, else EXMAINT_TLS_CA_BUNDLE, else the
    operating system's store (requests would otherwise use certifi's list, which holds no internal CA)."""
    if not verify:
        return False
    bundle = server.tls_ca_bundle or conf.tls_ca_bundle() or ssl.get_default_verify_paths().cafile
    return bundle or True


class RelayedSession:
    """The Exchange endpoint reached through one of ``relays`` (healthy DAG peers, then the server itself).

    A relay that cannot be reached hands over to the next one, cycling through all of them once per command: for
    reads always, for writes only when the command certainly never left (the connection or the pool could not be
    opened), so no write is sent twice. The relay that answered stays in use; one that failed is tried again when
    its turn comes round, so a blip never strands the window on the target's own endpoint (offline in
    maintenance). A wrong password is not tried elsewhere: the same account would lock. Each switch is kept in
    ``notices`` for the step log and the report; ``relay`` names the server whose endpoint ran the last command.
    Fail-over is routing, not retry: a command is sent to the next relay only when it cannot have run on this one
    (docs/failures-and-retries.md).
    """

    def __init__(self, server_name: str, relays: list[Server],
                 factory: Callable[[str, dict], ExchangeSession]) -> None:
        if not relays:
            raise InventoryError(f"{server_name}: no usable Exchange endpoint in the inventory")
        self.server_name = server_name
        self.relays = relays
        self._factory = factory
        self._index = 0
        self._session: ExchangeSession | None = None
        self._retired: list[ExchangeSession] = []  # sessions of relays that failed: closed at close(), not on the way
        self.notices: list[str] = []

    @property
    def relay_server(self) -> Server:
        """The inventory entry of the relay in use."""
        return self.relays[self._index]

    @property
    def relay(self) -> str | None:
        return self.relay_server.name

    def run(self, cmdlet: str, parameters: Any = None, *, endpoint: Endpoint = Endpoint.EXCHANGE) -> CommandResult:
        for turn in range(len(self.relays)):
            if self._session is None:
                self._session = self._factory(self.server_name, {
                    Endpoint.EXCHANGE: endpoint_config(self.relay_server, Endpoint.EXCHANGE)})
            session = self._session
            try:
                return session.run(cmdlet, parameters, endpoint=endpoint)
            except ExchangeSessionError as exc:
                self.notices.extend(session.take_notices())  # before the move's own notice, in the order they came
                movable = not isinstance(exc, AuthenticationFailed) and (
                    not exc.sent or (exc.retryable and is_read(cmdlet)))
                if not movable or turn == len(self.relays) - 1:
                    raise
                failed = self.relay_server.name
                # Closing it now could wait on a Delete to the host that just failed: later, at close().
                self._retired.append(self._session)
                self._session = None
                self._index = (self._index + 1) % len(self.relays)
                self.notices.append(f"{self.server_name}: Exchange cmdlets moved from {failed}'s endpoint to "
                                    f"{self.relay_server.name}'s ({exc})")
                log.warning("%s", self.notices[-1])
            finally:
                self.notices.extend(session.take_notices())
        raise AssertionError("unreachable")  # pragma: no cover

    def take_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        for session in [*self._retired, *([self._session] if self._session is not None else [])]:
            notices.extend(session.take_notices())  # e.g. negotiate fell back to NTLM, TLS validation off
        return notices

    @property
    def mechanisms(self) -> dict[Endpoint, str]:
        """What authenticated the current relay's pools (kerberos, ntlm, ...)."""
        return dict(self._session.mechanisms) if self._session is not None else {}

    def release_finished(self) -> None:
        if self._session is not None:
            self._session.release_finished()

    def close(self) -> None:
        sessions = [*self._retired, *([self._session] if self._session is not None else [])]
        self._retired, self._session = [], None
        for session in sessions:
            session.close()


class ServerSessions:
    """Lazy sessions to one server, one per endpoint; ``close()`` closes every one that was opened.

    ``exchange_via`` lists the servers whose Exchange endpoint may run the Exchange cmdlets (every one names its
    target with -Identity/-Server), in order of preference: healthy DAG peers, then the server itself (see
    ``exchange_relays``); the default WinRM endpoint is always the server's own.
    """

    def __init__(self, server: Server, *, factory: Callable[[str, dict], ExchangeSession] | None = None,
                 exchange_via: list[Server] | None = None) -> None:
        self.server = server
        self.exchange_via = exchange_via or [server]
        self._factory = factory or PypsrpSession
        self._sessions: dict[Endpoint, ExchangeSession] = {}

    def __call__(self, endpoint: Endpoint) -> ExchangeSession:
        endpoint = Endpoint(endpoint)
        session = self._sessions.get(endpoint)
        if session is None:
            if endpoint == Endpoint.EXCHANGE:
                session = RelayedSession(self.server.name, self.exchange_via, self._factory)
            else:
                session = self._factory(self.server.name, {endpoint: endpoint_config(self.server, endpoint)})
            self._sessions[endpoint] = session
        return session

    def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()

    def __enter__(self) -> ServerSessions:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def exchange_relays(server: Server) -> list[Server]:
    """Where to run Exchange cmdlets for ``server``, in order. Microsoft's procedure runs them "from a session on a
    different, healthy Exchange server whenever one exists": the target's own /PowerShell endpoint goes offline with
    ServerWideOffline (RpsProxy) and its services restart during the window. So: the DAG peers (by name) that are not
    in a window of their own and whose inventory entry is usable, then the server itself as the last resort."""
    relays: list[Server] = []
    if server.dag_name:
        busy = Server.objects.filter(changes__state__in=ACTIVE).exclude(pk=server.pk).values_list("pk", flat=True)
        peers = Server.objects.filter(dag_name=server.dag_name).exclude(pk=server.pk).exclude(pk__in=busy)
        for peer in peers.order_by("name"):
            try:
                endpoint_config(peer, Endpoint.EXCHANGE)
            except InventoryError:
                continue
            relays.append(peer)
    return [*relays, server]


def open_sessions(server: Server) -> ServerSessions:
    return ServerSessions(server, exchange_via=exchange_relays(server))


def _info(server: Server, peers: tuple[ServerInfo, ...] = ()) -> ServerInfo:
    return ServerInfo(name=server.name, fqdn=server.fqdn, dag_name=server.dag_name or None, peers=peers,
                      version=server.version, **_install_account(server))


def _install_account(server: Server) -> dict[str, Any]:
    """Who runs Exchange setup: the install account, else the account exmaint connects with. The password stays in
    the inventory until the task is registered (a callable, never a value in the plan state)."""
    if server.install_username:
        return {"install_username": server.install_username,
                "install_password": server.get_install_password if server.has_install_password else None}
    return {"install_username": server.username,
            "install_password": server.get_password if server.has_password else None}


def server_info(server: Server) -> ServerInfo:
    """The plan's view of ``server``: name, FQDN, DAG and the other members of its DAG from the inventory."""
    peers: tuple[ServerInfo, ...] = ()
    if server.dag_name:
        others = Server.objects.filter(dag_name=server.dag_name).exclude(pk=server.pk).order_by("name")
        peers = tuple(_info(peer) for peer in others)
    return _info(server, peers)
