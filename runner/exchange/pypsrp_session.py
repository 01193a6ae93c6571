"""The pypsrp adapter: ``ExchangeSession`` over PowerShell remoting. The only module in the project importing pypsrp.

Rules it keeps:

- Commands are built with ``add_cmdlet``/``add_parameter`` only. There is no way to send script text: Exchange's
  endpoint runs in no-language mode, and string-built script would be an injection hole.
- One runspace pool per endpoint, opened lazily, reused, reopened when broken; ``close()`` deletes every shell,
  because Exchange throttles concurrent shells per user and leaked ones count until they expire.
- Finished pipelines are terminated (a WinRM Signal each) off the command's critical path: when the caller is about
  to wait anyway (``release_finished()``, called by the runner before every deliberate poll interval), when
  ``max_finished_commands`` have piled up, and implicitly by the shell's Delete. They count against WinRM's
  MaxConcurrentCommandsPerShell until then, so the cap stays far below it (1000 in the PowerShell plugin).
- Nothing that may have left the client is sent again here, reads included: a retryable error goes up, and the
  caller decides (``runner.context.ExecutionContext.run`` retries reads, the engine re-attempts exit steps; see
  docs/failures-and-retries.md). Only a command that certainly never left (``sent=False``: the pool could not be
  opened, the server refused to create the command) is sent once more. What reads and writes are, and which
  cmdlets get -Confirm:$false, comes from the table in ``runner.exchange.cmdlets``.
- Non-terminating error records become ``CommandResult.errors``; a failed pipeline raises ``CmdletError``.
- Secrets (passwords, secret-looking parameter values) never reach logs, exception messages or reprs. Note that
  pypsrp's own ``pypsrp.wsman`` logger dumps whole messages at DEBUG: keep it at INFO or above in production.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit
from xml.etree import ElementTree

import requests
from pypsrp.complex_objects import PSInvocationState, RunspacePoolState
from pypsrp.exceptions import (
    AuthenticationError,
    InvalidPipelineStateError,
    InvalidPSRPOperation,
    InvalidRunspacePoolStateError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from runner.exchange import cmdlets, kerberos
from runner.exchange.parameters import (
    _scrub,
    _secret_strings,
    normalize_parameters,
    redact_parameters,
)
from runner.exchange.parsing import to_plain
from runner.exchange.session import (
    AuthenticationFailed,
    BrokenPool,
    CmdletError,
    CommandResult,
    Endpoint,
    EndpointUnreachable,
    ErrorRecord,
    ExchangeSessionError,
    Throttled,
)

log = logging.getLogger(__name__)

AuthMethod = Literal["kerberos", "ntlm", "negotiate", "basic"]
EncryptionMode = Literal["auto", "always", "never"]

_CMDLET_RE = re.compile(r"^[A-Za-z]+-[A-Za-z0-9]+$")
# WinRM HRESULTs (as pypsrp's WSManFaultError.code reports them).
_WSMAN_SHELL_GONE = {
    0x8033805B,  # ERROR_WSMAN_UNEXPECTED_SELECTORS / invalid ShellId: the shell expired or the server restarted
    0x803381A6,  # ERROR_WSMAN_SHELL_NOT_INITIALIZED
    0x80338029,  # ERROR_WSMAN_OPERATION_TIMEDOUT outside a Receive (pypsrp retries those itself)
}
_WSMAN_QUOTA = {0x803381A5, 0x803381A4}  # ERROR_WSMAN_QUOTA_MAX_SHELLS(_PPQ): too many concurrent shells for the user
# ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL(_PPQ): the command was refused before it was created, so it is safe to
# terminate the finished ones and send it again, writes included.
_WSMAN_COMMAND_QUOTA = {0x803381A0, 0x803381E9}
_WSMAN_ACCESS_DENIED = {5, 0x80070005}
_THROTTLED_REASON = re.compile(r"exceeded (?:your|the) budget|throttl|PowerShellMax", re.IGNORECASE)

# System.Management.Automation.ErrorCategory, by value.
_ERROR_CATEGORIES = (
    "NotSpecified OpenError CloseError DeviceError DeadlockDetected InvalidArgument InvalidData InvalidOperation "
    "InvalidResult InvalidType MetadataError NotImplemented NotInstalled ObjectNotFound OperationStopped "
    "OperationTimeout SyntaxError ParserError PermissionDenied ResourceBusy ResourceExists ResourceUnavailable "
    "ReadError WriteError FromStdErr SecurityError ProtocolError ConnectionError AuthenticationError LimitsExceeded "
    "QuotaExceeded NotEnabled"
).split()


class ShellQuotaExceeded(Throttled):
    """The server refused a new shell: the user's concurrent-shell quota is used up. Retryable once shells expire."""


class RemotingError(ExchangeSessionError):
    """A remoting failure that trying again will not fix (protocol error, TLS verification, bad configuration)."""


# --- configuration -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to reach one remoting endpoint. ``password`` is excluded from repr and never logged.

    Give either ``url`` (``http://ex01.contoso.com/PowerShell``) or ``host`` with ``port``/``path``/``ssl``.
    ``read_timeout`` must exceed ``operation_timeout``: a WinRM Receive long-polls for the operation timeout.
    """

    host: str = ""
    port: int | None = None
    path: str = "wsman"
    ssl: bool = False
    url: str | None = None
    configuration_name: str = "Microsoft.PowerShell"
    auth: AuthMethod = "kerberos"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cert_validation: bool | str = True  # False, True or a CA bundle path
    connection_timeout: int = 30
    operation_timeout: int = 20
    read_timeout: int = 30
    encryption: EncryptionMode = "auto"
    negotiate_service: str | None = None  # the SPN's service; None = "HTTP" (IIS /PowerShell and WinRM alike)
    # Kerberos (see runner.exchange.kerberos): a keytab instead of the password, the realm for bare user names, and
    # the name the SPN is built from when the URL holds an IP address (the server's FQDN).
    keytab: bytes | None = field(default=None, repr=False)
    kerberos_realm: str | None = None
    spn_host: str | None = None
    idle_timeout: int | None = None  # shell IdleTimeOut in seconds; None = the server's default
    idle_probe_after: float = 60.0  # before a mutating cmdlet on a pool idle this long, check the shell still exists
    max_finished_commands: int = 32  # finished pipelines kept before terminating them in one sweep (see the module doc)

    def __post_init__(self) -> None:
        if self.url:
            parts = urlsplit(self.url)
            if parts.username or parts.password:
                # Never echo the URL: it would carry the credentials into logs.
                raise ValueError("EndpointConfig.url must not contain credentials; use username/password")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("EndpointConfig.url must be http(s)://host[:port]/path")
            object.__setattr__(self, "host", parts.hostname)
            object.__setattr__(self, "ssl", parts.scheme == "https")
            object.__setattr__(self, "port", parts.port or (443 if parts.scheme == "https" else 80))
            object.__setattr__(self, "path", parts.path.strip("/") or "wsman")
        if not self.host:
            raise ValueError("EndpointConfig needs a url or a host")
        if self.auth not in ("kerberos", "ntlm", "negotiate", "basic"):
            raise ValueError(f"unsupported auth {self.auth!r}")
        if self.encryption not in ("auto", "always", "never"):
            raise ValueError(f"unsupported encryption mode {self.encryption!r}")
        if self.auth == "basic" and not self.ssl and self.encryption != "never":
            raise ValueError("basic auth cannot encrypt messages: use https, or encryption='never' on a trusted link")
        if self.read_timeout <= self.operation_timeout:
            raise ValueError("read_timeout must be greater than operation_timeout")
        if self.max_finished_commands < 0:
            raise ValueError("max_finished_commands must be 0 (terminate each at once) or more")

    @property
    def effective_port(self) -> int:
        # Without a port, WinRM's defaults; a URL without a port got the HTTP default in __post_init__.
        return self.port if self.port is not None else (5986 if self.ssl else 5985)

    @property
    def display(self) -> str:
        """Where this endpoint is, for logs and messages (no credentials)."""
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.host}:{self.effective_port}/{self.path} [{self.configuration_name}]"

    @classmethod
    def exchange(cls, fqdn: str, **options: Any) -> EndpointConfig:
        """Exchange's management endpoint: ``http://<fqdn>/PowerShell``, Microsoft.Exchange, Kerberos."""
        options.setdefault("port", 80)
        return cls(host=fqdn, path="PowerShell", configuration_name=Endpoint.EXCHANGE.value, **options)

    @classmethod
    def windows(cls, fqdn: str, **options: Any) -> EndpointConfig:
        """The server's default WinRM endpoint (5985/5986, Microsoft.PowerShell): services, FailoverClusters."""
        return cls(host=fqdn, path="wsman", configuration_name=Endpoint.DEFAULT.value, **options)


# --- errors --------------------------------------------------------------------------------------------------------


def _error_record(record: Any, secrets: list[str]) -> ErrorRecord:
    """An ``ErrorRecord`` from pypsrp's deserialized error record (duck-typed on its attributes)."""
    exception = getattr(record, "exception", None)
    exception_message = None
    exception_type = ""
    if exception is not None:
        props = getattr(exception, "adapted_properties", {}) or {}
        exception_message = props.get("Message") or getattr(exception, "extended_properties", {}).get("Message")
        types = getattr(exception, "types", None) or []
        if types:
            exception_type = types[0].removeprefix("Deserialized.")
    to_string = getattr(record, "_to_string", None)
    # PowerShell's ErrorRecord.ToString(): ErrorDetails.Message if set, else Exception.Message.
    message = (
        getattr(record, "details_message", None)
        or exception_message
        or to_string
        or getattr(record, "message", None)
        or "unknown error"
    )
    category = getattr(record, "category", None)
    if isinstance(category, int) and 0 <= category < len(_ERROR_CATEGORIES):
        category_name = _ERROR_CATEGORIES[category]
    else:
        category_name = str(category or "")
    target = getattr(record, "target_name", None) or ""
    if not target:
        target_object = getattr(record, "target_object", None)
        target = "" if target_object is None else str(target_object)
    return ErrorRecord(
        message=_scrub(str(message), secrets),
        error_id=str(getattr(record, "fq_error", "") or ""),
        category=category_name,
        target=_scrub(str(target), secrets),
        exception_type=exception_type or str(getattr(record, "reason", "") or ""),
    )


def _map_error(exc: BaseException, where: str) -> ExchangeSessionError:
    """Translate a pypsrp/requests failure into the session's typed errors. Messages carry no secrets."""
    if isinstance(exc, ExchangeSessionError):
        return exc
    if isinstance(exc, _KERBEROS_ERRORS) or (isinstance(exc, ValueError) and "auth_provider" in str(exc)):
        return kerberos.explain(exc, where=where)
    if isinstance(exc, AuthenticationError):
        return AuthenticationFailed(f"{where}: the endpoint refused the credentials (HTTP 401)")
    if isinstance(exc, requests.exceptions.SSLError):
        return RemotingError(f"{where}: TLS failure ({type(exc).__name__}); check cert_validation")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | TimeoutError):
        return EndpointUnreachable(f"{where}: endpoint unreachable ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | ConnectionError):
        return EndpointUnreachable(f"{where}: connection dropped ({type(exc).__name__})")
    if isinstance(exc, WSManFaultError):
        code = exc.code if isinstance(exc.code, int) else 0
        reason = (exc.reason or "").strip()[:300]
        if code in _WSMAN_SHELL_GONE:
            return BrokenPool(f"{where}: the remote shell is gone (WSManFault 0x{code:08X}: {reason})")
        if code in _WSMAN_QUOTA:
            return ShellQuotaExceeded(f"{where}: concurrent shell quota reached (WSManFault 0x{code:08X}: {reason})")
        if code in _WSMAN_ACCESS_DENIED:
            return AuthenticationFailed(f"{where}: access denied (WSManFault 0x{code:08X}: {reason})")
        if _THROTTLED_REASON.search(reason):
            # Exchange's remote PowerShell budget (PowerShellMaxRunspaces, PowerShellMaxCmdlets...) reaches the
            # client as a fault whose code varies and whose text says so, e.g. "...exceeded your budget to create
            # runspace. Please wait for 45 seconds.": only the text tells it apart.
            return Throttled(f"{where}: throttled by the server (WSManFault 0x{code:08X}: {reason})")
        return RemotingError(f"{where}: WSManFault 0x{code:08X}: {reason}")
    if isinstance(exc, WinRMTransportError):
        if exc.code in (502, 503, 504):
            return EndpointUnreachable(f"{where}: HTTP {exc.code} from the endpoint")
        return RemotingError(f"{where}: HTTP {exc.code} from the endpoint")
    if isinstance(exc, InvalidRunspacePoolStateError | InvalidPipelineStateError):
        return BrokenPool(f"{where}: runspace pool in an unusable state ({exc})")
    if isinstance(exc, InvalidPSRPOperation) and "broken" in str(exc).lower():
        return BrokenPool(f"{where}: the runspace pool broke")
    if isinstance(exc, WinRMError):
        return RemotingError(f"{where}: {type(exc).__name__}: {str(exc)[:300]}")
    return RemotingError(f"{where}: unexpected {type(exc).__name__}")


_KERBEROS_ERRORS = kerberos.auth_errors()
# Kerberos/SPNEGO failures surface from any request: pypsrp re-authenticates whenever it opens a new connection.
_TRANSPORT_ERRORS = (WinRMError, requests.exceptions.RequestException, OSError, *_KERBEROS_ERRORS)


def _pipeline(pool: RunspacePool, cmdlet: str, params: list[tuple[str, Any]]) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in params:
        # Booleans go as values (-Name:$true / -Name:$false): that binds a [switch] and a [bool] parameter alike,
        # whereas a value-less switch would fail on Boolean parameters such as
        # Set-MailboxServer -DatabaseCopyActivationDisabledAndMoveNow ("Cannot convert value None").
        ps.add_parameter(name, value)
    return ps


# --- the session ---------------------------------------------------------------------------------------------------


@dataclass
class _Pool:
    pool: RunspacePool
    wsman: WSMan
    last_used: float
    finished: list[PowerShell] = field(default_factory=list)  # completed pipelines not yet terminated


class PypsrpSession:
    """``ExchangeSession`` for one server over pypsrp. Not for concurrent use from several threads (it serialises)."""

    def __init__(self, server_name: str, endpoints: Mapping[Endpoint, EndpointConfig]) -> None:
        self.server_name = server_name
        self.endpoints = dict(endpoints)
        self._pools: dict[Endpoint, _Pool] = {}
        # Pools dropped after a connection failure: their shells may still live on the server. They are deleted at
        # the next successful open or at close(), not at once, so a dead host does not cost a timeout per Delete.
        self._orphans: list[_Pool] = []
        self._notices: list[str] = []
        self._lock = threading.RLock()
        self._mechanisms: dict[Endpoint, str] = {}  # what authenticated each endpoint's pool (kerberos, ntlm, ...)

    def __repr__(self) -> str:
        configured = ", ".join(f"{ep.value}={cfg.display}" for ep, cfg in self.endpoints.items())
        return f"<PypsrpSession {self.server_name} ({configured}) open={[ep.value for ep in self._pools]}>"

    def __enter__(self) -> PypsrpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def open_endpoints(self) -> list[Endpoint]:
        """Endpoints with an open runspace pool."""
        return list(self._pools)

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        endpoint: Endpoint = Endpoint.EXCHANGE,
    ) -> CommandResult:
        """Run one cmdlet with parameters. Raises CmdletError on a terminating error, typed errors on transport."""
        if not _CMDLET_RE.match(cmdlet or ""):
            raise ValueError(f"not a cmdlet name: {cmdlet!r}")
        if endpoint not in self.endpoints:
            raise ValueError(f"{self.server_name}: no configuration for endpoint {endpoint.value}")
        params = normalize_parameters(parameters)
        if cmdlets.needs_confirm_false(cmdlet) and not any(n.lower() == "confirm" for n, _ in params):
            params.append(("Confirm", False))
        mutating = not cmdlets.is_read(cmdlet)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s: %s %s", self.server_name, endpoint.value, cmdlet, redact_parameters(params))

        with self._lock:
            # Sent at most once, reads included (docs/failures-and-retries.md): the one exception is a command that
            # certainly never left (``sent=False``: the pool could not be opened, the server refused to create the
            # command), sent once more. Whether a failed read is worth another try is the caller's decision
            # (``runner.context.ExecutionContext.run``), so it lands in the step log.
            for attempt in (1, 2):
                try:
                    kerberos.keep_fresh(self.endpoints[endpoint], getattr(self._pools.get(endpoint), "wsman", None))
                    pool = self._pool_for(endpoint, probe=mutating)
                    return self._invoke(pool, endpoint, cmdlet, params)
                except ExchangeSessionError as error:
                    if error.sent or not error.retryable or attempt == 2:
                        raise
                    # For the step log (take_notices): the report shows that the endpoint faltered.
                    self._notices.append(f"{error}; {cmdlet} had not been sent and was sent once more")
                    log.info("%s %s: %s; %s was not sent, trying once more", self.server_name, endpoint.value, error,
                             cmdlet)
        raise AssertionError("unreachable")  # pragma: no cover

    def release_finished(self) -> None:
        """Terminate the finished pipelines of every open pool. Cheap to call when there are none; never raises."""
        with self._lock:
            for endpoint in list(self._pools):
                self._release(endpoint)

    def take_notices(self) -> list[str]:
        """For the step log, each once: commands sent a second time because the first try certainly never left
        (see ``run``), and how a pool authenticated when ``negotiate`` did not use Kerberos."""
        with self._lock:
            notices, self._notices = self._notices, []
        return notices

    @property
    def mechanisms(self) -> dict[Endpoint, str]:
        return dict(self._mechanisms)

    @property
    def relay(self) -> str | None:
        """None: every command runs on the endpoints configured for this server."""
        return None

    def close(self) -> None:
        """Close every runspace pool (deleting its shell on the server). Safe to call twice; never raises."""
        with self._lock:
            for endpoint in list(self._pools):
                self._discard(endpoint, delete=True)
            self._reap_orphans()

    # --- internals ---

    def _pool_for(self, endpoint: Endpoint, *, probe: bool) -> _Pool:
        """The endpoint's open pool, opened or reopened if needed. Its errors are ``sent=False``: no command left."""
        try:
            return self._open_pool_for(endpoint, probe=probe)
        except ExchangeSessionError as error:
            error.sent = False
            raise

    def _open_pool_for(self, endpoint: Endpoint, *, probe: bool) -> _Pool:
        entry = self._pools.get(endpoint)
        config = self.endpoints[endpoint]
        if entry is not None and probe and time.monotonic() - entry.last_used > config.idle_probe_after:
            # A write must not be replayed, so find out *before* sending it whether the idle shell still exists.
            try:
                alive = entry.pool.is_alive(timeout=max(1, min(config.operation_timeout, 10)))
            except _TRANSPORT_ERRORS:
                alive = False
            if not alive:
                log.info("%s %s: idle shell is gone; reopening", self.server_name, endpoint.value)
                # is_alive() also says False when only the keep-alive socket was closed while the shell lives on:
                # delete it anyway so that it does not count against the user's shell quota.
                self._discard(endpoint, delete=True)
                entry = None
        if entry is None:
            entry = self._open(endpoint, config)
            self._pools[endpoint] = entry
            if self._orphans:
                self._reap_orphans()  # the server answers again: delete the shells left behind
        return entry


    def _open(self, endpoint: Endpoint, config: EndpointConfig) -> _Pool:
        wsman = WSMan(
            server=config.host,
            port=config.effective_port,
            path=config.path,
            ssl=config.ssl,
            auth=config.auth,
            **kerberos.wsman_auth(config),  # user/password, or a cached Kerberos ticket and the SPN
            cert_validation=config.cert_validation,
            connection_timeout=config.connection_timeout,
            read_timeout=config.read_timeout,
            operation_timeout=config.operation_timeout,
            encryption=config.encryption,
        )
        pool = RunspacePool(wsman, configuration_name=config.configuration_name, idle_timeout=config.idle_timeout)
        started = time.monotonic()
        try:
            pool.open()
        except (*_TRANSPORT_ERRORS, ValueError) as exc:  # ValueError: pypsrp refusing the server's auth scheme
            self._close_quietly(pool, wsman, delete=getattr(pool.shell, "opened", False))
            raise _map_error(exc, f"{self.server_name} {endpoint.value} open") from None
        self._note_mechanism(endpoint, config, wsman)
        log.debug(
            "%s %s: opened runspace pool at %s in %.0f ms",
            self.server_name, endpoint.value, config.display, (time.monotonic() - started) * 1000,
        )
        return _Pool(pool, wsman, time.monotonic())

    def _note_mechanism(self, endpoint: Endpoint, config: EndpointConfig, wsman: WSMan) -> None:
        mechanism = kerberos.mechanism_of(wsman, config.auth)
        if self._mechanisms.get(endpoint) != mechanism:
            log.info("%s %s: authenticated with %s (auth=%s)", self.server_name, endpoint.value, mechanism, config.auth)
            if config.auth == "negotiate" and mechanism != "kerberos":
                self._notices.append(f"{self.server_name} {endpoint.value}: negotiate fell back to {mechanism} "
                                    "(Kerberos was not available); see check_server")
        self._mechanisms[endpoint] = mechanism
        if config.ssl and config.cert_validation is False:
            # Allowed per server only; it goes into the step's issues and so into the report.
            self._notices.append(f"{self.server_name} {endpoint.value}: TLS certificate validation is off for "
                                f"{config.host}")

    def _invoke(self, entry: _Pool, endpoint: Endpoint, cmdlet: str, params: list[tuple[str, Any]]) -> CommandResult:
        try:
            return self._invoke_once(entry, endpoint, cmdlet, params)
        except _TRANSPORT_ERRORS as exc:
            error = _map_error(exc, f"{self.server_name} {endpoint.value} {cmdlet}")
            if isinstance(error, BrokenPool):
                self._discard(endpoint, delete=False)  # the shell is already gone
            elif isinstance(error, EndpointUnreachable):
                self._orphan(endpoint)
            else:
                self._discard(endpoint, delete=True)
            if error.retryable:
                error.args = (f"{error.args[0]} (not resent: {cmdlet} may have reached the server)",)
            raise error from None

    def _invoke_once(self, entry: _Pool, endpoint: Endpoint, cmdlet: str,
                     params: list[tuple[str, Any]]) -> CommandResult:
        ps = _pipeline(entry.pool, cmdlet, params)
        entry.last_used = time.monotonic()
        try:
            try:
                output = ps.invoke()
            except WSManFaultError as exc:
                if exc.code not in _WSMAN_COMMAND_QUOTA or not entry.finished:
                    raise
                # The server caps commands per shell (lower than max_finished_commands): make room and send again.
                entry.pool.pipelines.pop(ps.id, None)
                self._release(endpoint)
                if self._pools.get(endpoint) is not entry:
                    # Making room lost the pool: the command was never created, so the caller may send it again.
                    error = BrokenPool(f"{self.server_name} {endpoint.value} {cmdlet}: the pool was lost while "
                                       "making room for the command (not sent)")
                    error.sent = False
                    raise error from None
                ps = _pipeline(entry.pool, cmdlet, params)
                output = ps.invoke()
        except (KeyError, ElementTree.ParseError) as exc:
            # pypsrp could not read the reply (it keeps lists of unknown types as raw XML, so a type name defined
            # inside one and referenced later is unknown to it): a clear error rather than a crash in the step.
            self._discard(endpoint, delete=True)
            raise RemotingError(f"{self.server_name} {endpoint.value} {cmdlet}: the reply could not be deserialized "
                                f"by pypsrp ({type(exc).__name__}: {exc})") from None
        entry.last_used = time.monotonic()
        # invoke() never sends Terminate; the finished command lingers on the server until it is terminated or the
        # shell is deleted. Terminating it here would cost every command a round trip: it waits for a sweep.
        entry.finished.append(ps)
        if len(entry.finished) > self.endpoints[endpoint].max_finished_commands:
            self._release(endpoint)

        secrets = _secret_strings(params)
        records = [_error_record(r, secrets) for r in ps.streams.error]
        warnings = [_scrub(str(getattr(w, "message", w) or ""), secrets) for w in ps.streams.warning]
        result = CommandResult(cmdlet=cmdlet, output=[to_plain(o) for o in output], warnings=warnings)
        if ps.had_errors or ps.state == PSInvocationState.FAILED:
            # pypsrp appends the pipeline's terminating record (PIPELINE_STATE) after any non-terminating ones.
            terminating = records[-1] if records else ErrorRecord(message="the pipeline failed without an error record")
            result.errors = records[:-1]
            error = CmdletError(cmdlet, terminating)
            error.result = result  # type: ignore[attr-defined] # what ran before the failure, for the engine's log
            raise error
        result.errors = records
        return result

    def _release(self, endpoint: Endpoint) -> None:
        entry = self._pools.get(endpoint)
        if entry is None:
            return
        finished, entry.finished = entry.finished, []
        for ps in finished:
            try:
                ps.close()
            except _TRANSPORT_ERRORS as exc:
                # The shell's Delete releases whatever is left; a pool that cannot take a Signal is not worth keeping.
                error = _map_error(exc, f"{self.server_name} {endpoint.value} terminate")
                log.warning("%s; dropping the pool", error)
                if isinstance(error, EndpointUnreachable):
                    self._orphan(endpoint)  # a dead host would cost a timeout per Delete: deleted when it answers
                else:
                    self._discard(endpoint, delete=not isinstance(error, BrokenPool))
                return

    def _orphan(self, endpoint: Endpoint) -> None:
        entry = self._pools.pop(endpoint, None)
        if entry is not None:
            self._orphans.append(entry)

    def _reap_orphans(self) -> None:
        orphans, self._orphans = self._orphans, []
        for entry in orphans:
            self._close_quietly(entry.pool, entry.wsman, delete=True)

    def _discard(self, endpoint: Endpoint, *, delete: bool) -> None:
        entry = self._pools.pop(endpoint, None)
        if entry is not None:
            self._close_quietly(entry.pool, entry.wsman, delete=delete)

    def _close_quietly(self, pool: RunspacePool, wsman: WSMan, *, delete: bool) -> None:
        try:
            if delete:
                if pool.state == RunspacePoolState.OPENED or getattr(pool.shell, "opened", False):
                    # pool.close() is a no-op once is_alive() marked the pool closed; the shell may still exist.
                    pool.shell.close()
        except _TRANSPORT_ERRORS as exc:
            log.warning("%s: could not delete the remote shell (%s)", self.server_name, type(exc).__name__)
        finally:
            try:
                wsman.close()
            except Exception:  # closing the HTTP session must not mask the caller's error
                log.debug("%s: closing the HTTP session failed", self.server_name, exc_info=True)
