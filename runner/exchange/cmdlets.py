"""Every cmdlet the project sends, in one table: whether it only reads or may change the server, where it runs and
what it needs to run unattended.

This table is the only read/write classifier. It decides:

- what a dry run may send (reads only: ``runner.context.ExecutionContext.run``);
- what the step log records as a write (``CommandRecord.access``, shown in the report);
- which failed commands may be tried again or moved to another DAG member's endpoint (reads only:
  ``runner.context``, ``runner.sessions.RelayedSession``);
- which commands the pypsrp adapter probes the idle shell for first and sends with ``-Confirm:$false``
  (``runner.exchange.pypsrp_session``);
- which cmdlets a plan may send at all, and on which endpoint: ``ExecutionContext.run`` refuses any other before it
  leaves the runner.

A cmdlet missing here is treated as a write (never retried, never in a dry run). Adding a cmdlet to a step means
adding its row here; ``tests/runner/exchange/test_cmdlets.py`` fails otherwise.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from runner.exchange.session import Endpoint


class Access(enum.StrEnum):
    READ = "read"  # reads the server's state only: safe to send again, allowed in a dry run
    WRITE = "write"  # may change the server: sent once, never replayed, refused in a dry run


@dataclass(frozen=True)
class CmdletSpec:
    """What the runner knows about one cmdlet."""

    name: str
    access: Access
    endpoint: Endpoint = Endpoint.EXCHANGE
    # Prompts for confirmation by default (a "built-in pause" in the Exchange cmdlet reference), which nobody can
    # answer without an interactive host: the adapter adds -Confirm:$false unless the caller passed Confirm.
    confirm_false: bool = False

    @property
    def is_read(self) -> bool:
        return self.access == Access.READ


class UnknownCmdlet(ValueError):
    """A plan tried a cmdlet that is not in ``CMDLETS``: a plan bug, never sent."""


R, W = Access.READ, Access.WRITE
_EX, _WIN = Endpoint.EXCHANGE, Endpoint.DEFAULT

# Deliberately without confirm_false: Set-* (Set-ServerComponentState, Set-MailboxServer) have no built-in pause, and
# passing -Confirm would *add* one; Suspend-/Resume-ClusterNode and the service cmdlets run on the default endpoint
# and do not prompt at the default $ConfirmPreference (docs/exchange-procedure.md).
_TABLE = (
    # Exchange endpoint (Microsoft.Exchange), run from a healthy peer where one exists
    CmdletSpec("Get-ServerComponentState", R),
    CmdletSpec("Set-ServerComponentState", W),
    CmdletSpec("Get-ExchangeServer", R),
    CmdletSpec("Get-MailboxServer", R),
    CmdletSpec("Set-MailboxServer", W),
    CmdletSpec("Get-MailboxDatabase", R),
    CmdletSpec("Get-MailboxDatabaseCopyStatus", R),
    CmdletSpec("Move-ActiveMailboxDatabase", W, confirm_false=True),  # a switchover; prompts "Are you sure...?"
    CmdletSpec("Suspend-MailboxDatabaseCopy", W, confirm_false=True),  # Microsoft's examples all pass -Confirm:$false
    CmdletSpec("Resume-MailboxDatabaseCopy", W, confirm_false=True),  # same pairing in the maintenance procedure
    CmdletSpec("Get-DatabaseAvailabilityGroup", R),
    CmdletSpec("Test-ServiceHealth", R),
    CmdletSpec("Test-ReplicationHealth", R),
    CmdletSpec("Get-Mailbox", R),  # notifications: the users a window affects
    CmdletSpec("Get-Queue", R),
    CmdletSpec("Get-Message", R),
    CmdletSpec("Redirect-Message", W, confirm_false=True),  # drains the queues to another server; built-in pause
    CmdletSpec("Resume-Queue", W, confirm_false=True),  # prompts per queue
    CmdletSpec("Retry-Queue", W),
    CmdletSpec("Get-UMActiveCalls", R),
    # An Exchange update's pre-window checks (docs/exchange-install.md): moves, the Auth certificate, back pressure
    CmdletSpec("Get-MoveRequest", R),
    CmdletSpec("Get-AuthConfig", R),
    CmdletSpec("Get-ExchangeCertificate", R),
    CmdletSpec("Get-ExchangeDiagnosticInfo", R),
    # The server's default WinRM endpoint (Microsoft.PowerShell): services and FailoverClusters
    CmdletSpec("Get-Service", R, _WIN),
    CmdletSpec("Start-Service", W, _WIN),
    CmdletSpec("Restart-Service", W, _WIN),
    CmdletSpec("Get-ClusterNode", R, _WIN),
    CmdletSpec("Suspend-ClusterNode", W, _WIN),
    CmdletSpec("Resume-ClusterNode", W, _WIN),
    # The default endpoint again, for an Exchange update (docs/exchange-install.md): what setup needs and leaves
    # (files, registry values, free disk, processes, the boot time), the one-shot scheduled task that runs the
    # installer, service start types and the restart.
    CmdletSpec("Get-Item", R, _WIN),
    CmdletSpec("Get-ItemProperty", R, _WIN),
    CmdletSpec("Get-Content", R, _WIN),
    CmdletSpec("Get-FileHash", R, _WIN),
    CmdletSpec("Get-PSDrive", R, _WIN),
    CmdletSpec("Get-Process", R, _WIN),
    CmdletSpec("Get-CimInstance", R, _WIN),
    CmdletSpec("Get-ScheduledTask", R, _WIN),
    CmdletSpec("Get-ScheduledTaskInfo", R, _WIN),
    CmdletSpec("New-Item", W, _WIN),
    CmdletSpec("Copy-Item", W, _WIN),
    CmdletSpec("Register-ScheduledTask", W, _WIN),  # -Password: redacted by name in every record
    CmdletSpec("Start-ScheduledTask", W, _WIN),
    CmdletSpec("Unregister-ScheduledTask", W, _WIN, confirm_false=True),  # ConfirmImpact High: it prompts
    CmdletSpec("Set-Service", W, _WIN),
    CmdletSpec("Restart-Computer", W, _WIN),
)

# PowerShell resolves cmdlet names case-insensitively: so does the table.
CMDLETS: dict[str, CmdletSpec] = {spec.name.lower(): spec for spec in _TABLE}


def spec(cmdlet: str) -> CmdletSpec:
    """The table's row for ``cmdlet``. Raises UnknownCmdlet for a cmdlet the project does not know."""
    try:
        return CMDLETS[cmdlet.lower()]
    except KeyError:
        raise UnknownCmdlet(f"{cmdlet!r} is not in the cmdlet table (runner/exchange/cmdlets.py)") from None


def known(cmdlet: str) -> bool:
    return cmdlet.lower() in CMDLETS


def is_read(cmdlet: str) -> bool:
    """Whether ``cmdlet`` only reads. Unknown cmdlets count as writes: the safe side for every decision above."""
    found = CMDLETS.get(cmdlet.lower())
    return found is not None and found.is_read


def access(cmdlet: str) -> Access:
    return Access.READ if is_read(cmdlet) else Access.WRITE


def needs_confirm_false(cmdlet: str) -> bool:
    found = CMDLETS.get(cmdlet.lower())
    return found is not None and found.confirm_false
