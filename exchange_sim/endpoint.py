"""A real WinRM (WS-Management) + PSRP HTTP endpoint on loopback that serves the simulated Exchange organisation.

The unmodified pypsrp client talks to it exactly as to Exchange: ``WSMan("127.0.0.1", port=P,
path="EX01/PowerShell", ssl=False, auth="basic", encryption="never", ...)`` and
``RunspacePool(wsman, configuration_name="Microsoft.Exchange")``. One HTTP server serves every simulated server by
URL path: ``/<SERVER>/PowerShell`` (Exchange cmdlets) and ``/<SERVER>/wsman`` (Microsoft.PowerShell: services,
FailoverClusters). Importable without Django.

Beyond the happy path it enforces a per-user concurrent shell quota (Exchange's PowerShellMaxConcurrency), counts
requests, reports shells never deleted, and lets tests inject HTTP failures and kill shells.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import spnego

from exchange_sim import kerberos, ntlm, shell_actions, wsman
from exchange_sim.objects import SimResult
from exchange_sim.psrp_server import Shell
from exchange_sim.shell_actions import EXCHANGE

log = logging.getLogger(__name__)

DEFAULT = "Microsoft.PowerShell"
PATH_CONFIGURATIONS = {"powershell": EXCHANGE, "wsman": DEFAULT}


class Simulation(Protocol):
    """The part of ``exchange_sim.model.SimulatedExchange`` the endpoint uses."""

    servers: dict[str, Any]

    def invoke(
        self, server: str, endpoint: str, cmdlet: str, parameters: list[tuple[str | None, Any]], *, user: str = "",
        is_script: bool = False,
    ) -> SimResult: ...

    def take_http_failure(self, server: str) -> bool: ...


@dataclass
class EndpointStats:
    """Counters, keyed by (SERVER, configuration) where it matters. Read them after the client calls return."""

    requests: Counter = field(default_factory=Counter)  # by WS-Man action
    creates: Counter = field(default_factory=Counter)  # (server, configuration) -> pools opened
    deletes: Counter = field(default_factory=Counter)
    commands: Counter = field(default_factory=Counter)  # (server, configuration) -> pipelines run
    cmdlets: Counter = field(default_factory=Counter)  # cmdlet name -> count
    auth_failures: int = 0
    http_failures: int = 0  # injected 503s and dropped connections
    faults: Counter = field(default_factory=Counter)  # WSMan fault code -> count

    def total_creates(self) -> int:
        return sum(self.creates.values())

    def total_commands(self) -> int:
        return sum(self.commands.values())


@dataclass(frozen=True)
class OpenShell:
    """A shell the client never deleted (a leaked runspace pool)."""

    shell_id: str
    server: str
    configuration: str
    user: str
    age_seconds: float
    commands_run: int
    open_commands: int  # pipelines never closed with a Terminate signal


@dataclass
class _Failure:
    mode: str  # "503" or "drop"
    server: str | None
    remaining: int


class EndpointState:
    """Everything the HTTP handlers share: the simulation, users, open shells, counters and injected faults."""

    def __init__(
        self,
        sim: Simulation,
        users: dict[str, str],
        auth: tuple[str, ...],
        shell_quota: int,
        receive_wait: float,
        commands_per_shell: int = 1000,
    ) -> None:
        self.sim = sim
        self.users = dict(users)
        self.auth = tuple(a.lower() for a in auth)
        self.shell_quota = shell_quota
        self.commands_per_shell = commands_per_shell
        self.receive_wait = receive_wait
        self.stats = EndpointStats()
        self.shells: dict[str, Shell] = {}
        self.lock = threading.Lock()
        self.failures: list[_Failure] = []
        self.port = 0
        self.kerberos: kerberos.KerberosAcceptor | None = None  # set when serving Kerberos with a keytab
        self.scheme = "http"
        self.mechanisms: Counter = Counter()  # handshakes completed, by mechanism (kerberos, ntlm, basic)

    # -- lookups --------------------------------------------------------------------------------------------------

    def canonical_server(self, name: str) -> str | None:
        wanted = name.lower()
        for server in self.sim.servers:
            if server.lower() == wanted or server.split(".", 1)[0].lower() == wanted:
                return server
        return None

    def machine(self, server: str) -> str:
        fqdn = getattr(self.sim.servers.get(server), "fqdn", None)
        return str(fqdn or server).lower()

    def shell(self, shell_id: str, server: str) -> Shell:
        with self.lock:
            shell = self.shells.get(shell_id.upper())
        if shell is None or shell.server != server:
            raise wsman.shell_not_found(shell_id)
        return shell

    # -- fault hooks ----------------------------------------------------------------------------------------------

    def take_failure(self, server: str) -> str | None:
        """The HTTP-level failure this request must suffer, if any: "503" or "drop"."""
        with self.lock:
            for failure in self.failures:
                if failure.remaining > 0 and (failure.server is None or failure.server == server):
                    failure.remaining -= 1
                    self.stats.http_failures += 1
                    self.failures = [f for f in self.failures if f.remaining > 0]
                    return failure.mode
        take = getattr(self.sim, "take_http_failure", None)
        if take is not None and take(server):
            with self.lock:
                self.stats.http_failures += 1
            return "drop"
        return None


class RunningEndpoint:
    """A running endpoint; stop() (or leaving the ``with`` block) shuts it down."""

    def __init__(self, server: _HTTPServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_address[1]
        self.state: EndpointState = server.state

    def __enter__(self) -> RunningEndpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stats(self) -> EndpointStats:
        return self.state.stats

    def url_for(self, server: str, endpoint: str = EXCHANGE) -> str:
        """The URL a client uses for SERVER's Exchange (``/PowerShell``) or default (``/wsman``) endpoint."""
        suffix = "PowerShell" if endpoint == EXCHANGE else "wsman"
        return f"{self.state.scheme}://{self.host}:{self.port}/{server}/{suffix}"

    def path_for(self, server: str, endpoint: str = EXCHANGE) -> str:
        """The ``path`` argument for ``pypsrp.wsman.WSMan`` (no leading slash: pypsrp adds it)."""
        return self.url_for(server, endpoint).split("/", 3)[3]

    def open_shells(self) -> list[OpenShell]:
        """Shells (runspace pools) still open: after a client is done this should be empty."""
        now = time.time()
        with self.state.lock:
            shells = list(self.state.shells.values())
        return [
            OpenShell(s.shell_id, s.server, s.configuration, s.user, now - s.created_at, s.commands_run,
                      s.open_commands())
            for s in shells
        ]

    def fail_next(self, count: int = 1, *, mode: str = "503", server: str | None = None) -> None:
        """Make the next COUNT requests (to SERVER, or any) fail at the HTTP level: "503" or "drop" the connection."""
        if mode not in ("503", "drop"):
            raise ValueError(f"mode must be '503' or 'drop', not {mode!r}")
        canonical = self.state.canonical_server(server) if server else None
        with self.state.lock:
            self.state.failures.append(_Failure(mode, canonical, count))

    def kill_shells(self, server: str | None = None, shell_id: str | None = None) -> int:
        """Forget shells as if WinRM expired them (idle timeout, restart); the client's next use gets a fault."""
        canonical = self.state.canonical_server(server) if server else None
        with self.state.lock:
            doomed = [
                sid for sid, s in self.state.shells.items()
                if (canonical is None or s.server == canonical) and (shell_id is None or sid == shell_id.upper())
            ]
            for sid in doomed:
                del self.state.shells[sid]
        return len(doomed)

    def set_shell_quota(self, quota: int) -> None:
        self.state.shell_quota = quota

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        ntlm.release_users(self.state.users)


def _is_first_token(token: bytes) -> bool:
    # An NTLM NEGOTIATE_MESSAGE, or an SPNEGO NegTokenInit (ASN.1 application tag 0x60).
    return token[:12] == b"NTLMSSP\x00\x01\x00\x00\x00" or token[:1] == b"\x60"


class _Unauthorized(Exception):
    def __init__(self, token: bytes | None = None, scheme: str = "Negotiate") -> None:
        super().__init__("unauthorized")
        self.token = token
        self.scheme = scheme


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: NTLM authenticates the connection, not each request.
    protocol_version = "HTTP/1.1"
    # http.server writes headers and body separately; without TCP_NODELAY each response waits ~40 ms (Nagle).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self._spnego: Any = None  # the connection's acceptor context once NTLM/Negotiate completed
        self._spnego_user = ""
        self._pending: Any = None  # a handshake in progress on this connection
        self._scheme = "Negotiate"  # the scheme the connection authenticated with, echoed with the final token

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def do_POST(self) -> None:  # http.server's naming
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = self._route(state)
        if route is None:
            self._send(404, b"", "text/plain")
            return
        server, configuration = route

        failure = state.take_failure(server)
        if failure == "drop":
            # Like an unreachable host or a reset: close without a response (requests raises ConnectionError).
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if failure == "503":
            self._send(503, b"Service Unavailable", "text/plain")
            return

        try:
            user, server_token = self._authenticate(state)
        except _Unauthorized as exc:
            self._challenge(state, exc)
            return

        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            body = ntlm.unwrap(self._spnego, body)
        if not body:
            # The empty POST pypsrp sends to set up the security context before sealing messages.
            self._send(200, b"", "application/soap+xml;charset=UTF-8", server_token)
            return

        status, response = shell_actions.dispatch(state, server, configuration, user, body, self.client_address[0])
        if encrypted:
            protocol = kerberos.encrypted_protocol(content_type)
            self._send(status, ntlm.wrap(self._spnego, response, protocol),
                       f'multipart/encrypted;protocol="{protocol}";boundary="Encrypted Boundary"', server_token)
        else:
            self._send(status, response, "application/soap+xml;charset=UTF-8", server_token)

    def _route(self, state: EndpointState) -> tuple[str, str] | None:
        parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
        if len(parts) != 2 or parts[1].lower() not in PATH_CONFIGURATIONS:
            return None
        server = state.canonical_server(parts[0])
        if server is None:
            return None
        return server, PATH_CONFIGURATIONS[parts[1].lower()]

    def _authenticate(self, state: EndpointState) -> tuple[str, bytes | None]:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in state.auth:
            try:
                user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _Unauthorized() from None
            if state.users.get(user) != password:
                with state.lock:
                    state.stats.auth_failures += 1
                raise _Unauthorized()
            with state.lock:
                state.mechanisms["basic"] += 1
            return user, None
        offered = {
            "negotiate": "negotiate" in state.auth,
            "ntlm": "ntlm" in state.auth or "negotiate" in state.auth,
            "kerberos": state.kerberos is not None and ("kerberos" in state.auth or "negotiate" in state.auth),
        }
        if offered.get(scheme):
            return self._negotiate(state, scheme, value)
        if not header and self._spnego is not None:
            return self._spnego_user, None
        raise _Unauthorized()

    def _negotiate(self, state: EndpointState, scheme: str, value: str) -> tuple[str, bytes | None]:
        try:
            token = base64.b64decode(value)
        except binascii.Error:
            raise _Unauthorized() from None
        context = self._pending
        if context is None or _is_first_token(token):
            # NTLM/SPNEGO authenticate the TCP connection: a first token starts a new handshake on it.
            context = state.kerberos.context(scheme, token) if state.kerberos is not None else None
            if context is None and scheme == "kerberos":
                raise _Unauthorized(scheme="Kerberos")
            context = context or spnego.server(
                protocol="ntlm" if scheme == "ntlm" else "negotiate",
                options=spnego.NegotiateOptions.wrapping_winrm,
            )
            self._scheme = {"ntlm": "NTLM", "kerberos": "Kerberos"}.get(scheme, "Negotiate")
            self._pending = context
            self._spnego = None
        try:
            out_token = context.step(token)
        except Exception as exc:  # any spnego failure is a wrong credential to the client
            log.debug("%s authentication failed: %s", scheme, exc)
            self._pending = None
            with state.lock:
                state.stats.auth_failures += 1
            raise _Unauthorized(scheme=scheme.capitalize()) from None
        if not context.complete:
            raise _Unauthorized(out_token, scheme=self._scheme)
        self._pending = None
        principal = (context.client_principal or "").split("\\")[-1].split("@")[0]
        user = next((u for u in state.users if u.lower() == principal.lower()), None)
        if user is None:
            # The NTLM credential file is shared by every endpoint in the process; this one has its own users.
            with state.lock:
                state.stats.auth_failures += 1
            raise _Unauthorized(scheme=scheme.capitalize())
        self._spnego, self._spnego_user = context, user
        with state.lock:
            state.mechanisms[context.negotiated_protocol or scheme] += 1
        return user, out_token

    def _challenge(self, state: EndpointState, exc: _Unauthorized) -> None:
        self.send_response(401)
        if exc.token is not None:
            self.send_header("WWW-Authenticate", f"{exc.scheme} {base64.b64encode(exc.token).decode()}")
        else:
            if "negotiate" in state.auth:
                self.send_header("WWW-Authenticate", "Negotiate")
            if "kerberos" in state.auth and "negotiate" not in state.auth:
                # pypsrp takes the first of Negotiate/Kerberos/NTLM it finds; Kerberos only when offered alone.
                self.send_header("WWW-Authenticate", "Kerberos")
            if "ntlm" in state.auth:
                self.send_header("WWW-Authenticate", "NTLM")
            if "basic" in state.auth:
                self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, token: bytes | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if token:
            self.send_header("WWW-Authenticate", f"{self._scheme} {base64.b64encode(token).decode()}")
        self.end_headers()
        self.wfile.write(body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: EndpointState) -> None:
        self.state = state
        super().__init__(address, _Handler)


def start_endpoint(
    sim: Simulation,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    users: dict[str, str] | None = None,
    auth: tuple[str, ...] = ("basic", "negotiate"),
    shell_quota: int = 18,
    receive_wait: float = 0.5,
    commands_per_shell: int = 1000,
    keytab: str | None = None,
    tls: tuple[str, str] | None = None,
) -> RunningEndpoint:
    """Serve SIM over WinRM/PSRP on HOST:PORT (0: an ephemeral port) in a background thread.

    ``users`` maps user name to password (default: exmaint-svc with a demo password); ``auth`` lists the accepted
    schemes ("basic", "negotiate", "ntlm"); ``shell_quota`` is the concurrent shells one user may hold on one server
    (Exchange's default PowerShellMaxConcurrency is 18); ``commands_per_shell`` is WinRM's
    MaxConcurrentCommandsPerShell (1000 in the PowerShell plugin): commands not yet terminated count;
    ``receive_wait`` is how long an empty Receive waits before
    the OperationTimeout fault. ``keytab`` (a path) makes it a Kerberos acceptor for the service principals in it
    ("kerberos" in ``auth`` offers the bare Kerberos scheme, "negotiate" SPNEGO); ``tls`` = (certificate chain PEM,
    key PEM) serves HTTPS.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the simulated endpoint only binds to loopback")
    users = users if users is not None else {"exmaint-svc": "Simulated-Passw0rd"}
    state = EndpointState(sim, users, auth, shell_quota, receive_wait, commands_per_shell)
    if "negotiate" in state.auth or "ntlm" in state.auth:
        ntlm.register_users(users)
    if keytab is not None:
        state.kerberos = kerberos.KerberosAcceptor(keytab)
    httpd = _HTTPServer((host, port), state)
    state.port = httpd.server_address[1]
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        state.scheme = "https"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"wsman-endpoint:{state.port}", daemon=True
    )
    thread.start()
    return RunningEndpoint(httpd, thread, host)


__all__ = ["EndpointStats", "OpenShell", "RunningEndpoint", "start_endpoint", "EXCHANGE", "DEFAULT"]

