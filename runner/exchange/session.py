"""The one small interface between the runner and an Exchange server.

A session runs one cmdlet with parameters on one endpoint of one server and returns parsed objects plus the error
records and warnings. Transport failures raise typed errors with a ``retryable`` flag. Implementations: the pypsrp
adapter (``runner.exchange.pypsrp_session``, the only module that imports pypsrp) and the in-process simulator
session (``exchange_sim.session``).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class Endpoint(enum.StrEnum):
    """Which remoting endpoint a cmdlet runs on."""

    EXCHANGE = "Microsoft.Exchange"  # http://<fqdn>/PowerShell/ - Exchange cmdlets
    DEFAULT = "Microsoft.PowerShell"  # the server's WinRM endpoint (5985/5986) - services, FailoverClusters


@dataclass(frozen=True)
class ErrorRecord:
    """A PowerShell error record, as Exchange reports it (non-terminating or terminating)."""

    message: str
    error_id: str = ""  # FullyQualifiedErrorId
    category: str = ""  # e.g. ObjectNotFound, InvalidArgument, NotSpecified
    target: str = ""
    exception_type: str = ""


@dataclass
class CommandResult:
    """What one cmdlet returned: parsed objects (plain dicts), non-terminating error records and warnings."""

    cmdlet: str
    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class ExchangeSessionError(Exception):
    """Base of every session error. ``retryable`` says whether the same call may succeed if tried again."""

    retryable: bool = False
    # False only when the command certainly never reached the server (the connection or the pool could not be
    # opened): then even a write may be sent elsewhere.
    sent: bool = True


class AuthenticationFailed(ExchangeSessionError):
    """The endpoint refused the credentials (HTTP 401). Never retried: it would lock the account."""


class EndpointUnreachable(ExchangeSessionError):
    """Connection refused, reset or timed out. Retryable."""

    retryable = True


class BrokenPool(ExchangeSessionError):
    """The runspace pool died (idle expiry, server restart). Retryable after reconnecting."""

    retryable = True


class Throttled(ExchangeSessionError):
    """WinRM or Exchange refused for now: a per-user quota or budget is used up (concurrent shells, Exchange's
    throttling policy). Retryable once the budget recovers: reads by the context's retry policy, like any transport
    error (docs/failures-and-retries.md)."""

    retryable = True


class CmdletError(ExchangeSessionError):
    """A terminating error from the cmdlet, carrying Exchange's error record."""

    def __init__(self, cmdlet: str, record: ErrorRecord) -> None:
        super().__init__(f"{cmdlet}: {record.message} [{record.error_id}]")
        self.cmdlet = cmdlet
        self.record = record


@runtime_checkable
class ExchangeSession(Protocol):
    """One server's remoting session, the only way the runner reaches Exchange. Every implementation has every member
    (checked by tests/runner/exchange/test_session_protocol.py); the runner never probes for optional ones.

    Implementations: ``runner.exchange.pypsrp_session.PypsrpSession`` (one endpoint set of one server),
    ``runner.sessions.RelayedSession`` (the Exchange endpoint through healthy DAG peers) and
    ``exchange_sim.session.SimulatorSession`` (in-process).
    """

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        endpoint: Endpoint = Endpoint.EXCHANGE,
    ) -> CommandResult:
        """Run one cmdlet. Raises CmdletError for a terminating error, another ExchangeSessionError for transport."""
        ...

    def release_finished(self) -> None:
        """Free server-side resources of finished commands. The runner calls it before each deliberate wait, off the
        commands' critical path; a session holding none does nothing. Never raises."""
        ...

    def take_notices(self) -> list[str]:
        """What the session did on its own since the last call (e.g. moved to another DAG member's endpoint), for
        the step log; emptied by the call."""
        ...

    @property
    def mechanisms(self) -> Mapping[Endpoint, str]:
        """What authenticated each endpoint's open pool (kerberos, ntlm, basic), for the step log and the server
        check; empty where nothing authenticates (in-process)."""
        ...

    @property
    def relay(self) -> str | None:
        """The server whose endpoint ran the last command, or None for a session bound to its own server's endpoints.
        The step log records it as ``via`` when it is not the target."""
        ...

    def close(self) -> None:
        """Close every pool (deleting its shell on the server: Exchange throttles concurrent shells per user). Safe
        to call twice; never raises."""
        ...
