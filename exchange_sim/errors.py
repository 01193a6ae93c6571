"""Error records shaped like the ones Exchange and PowerShell write.

Exchange prefixes its FullyQualifiedErrorId with the server and request that ran the cmdlet, then a failure
category, then a hash and the cmdlet's .NET class, e.g.
``[Server=EX01,RequestId=…,TimeStamp=…] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 1F1E6C1,
Microsoft.Exchange.Management.SystemConfigurationTasks.GetServerComponentState``. Callers must match on the tail.
"""
from __future__ import annotations

import uuid
import zlib
from datetime import datetime

from .objects import SimError, SimTerminatingError, timestamp_to_string

_SYS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
_QUEUE = "Microsoft.Exchange.Management.QueueViewerTasks"
CMDLET_CLASSES = {
    "Get-ServerComponentState": f"{_SYS}.GetServerComponentState",
    "Set-ServerComponentState": f"{_SYS}.SetServerComponentState",
    "Get-ExchangeServer": f"{_SYS}.GetExchangeServer",
    "Get-MailboxServer": f"{_SYS}.GetMailboxServer",
    "Set-MailboxServer": f"{_SYS}.SetMailboxServer",
    "Get-MailboxDatabase": f"{_SYS}.GetMailboxDatabase",
    "Get-MailboxDatabaseCopyStatus": f"{_SYS}.GetMailboxDatabaseCopyStatus",
    "Move-ActiveMailboxDatabase": f"{_SYS}.MoveActiveMailboxDatabase",
    "Get-DatabaseAvailabilityGroup": f"{_SYS}.GetDatabaseAvailabilityGroup",
    "Test-ReplicationHealth": "Microsoft.Exchange.Monitoring.TestReplicationHealth",
    "Test-ServiceHealth": "Microsoft.Exchange.Monitoring.TestServiceHealth",
    "Get-Mailbox": "Microsoft.Exchange.Management.RecipientTasks.GetMailbox",
    "Get-Queue": f"{_QUEUE}.GetQueue",
    "Get-Message": f"{_QUEUE}.GetMessage",
    "Redirect-Message": f"{_QUEUE}.RedirectMessage",
    "Retry-Queue": f"{_QUEUE}.RetryQueue",
    "Resume-Queue": f"{_QUEUE}.ResumeQueue",
    "Get-Service": "Microsoft.PowerShell.Commands.GetServiceCommand",
    "Restart-Service": "Microsoft.PowerShell.Commands.RestartServiceCommand",
    "Start-Service": "Microsoft.PowerShell.Commands.StartServiceCommand",
    "Get-ClusterNode": "Microsoft.FailoverClusters.PowerShell.GetNodeCommand",
    "Suspend-ClusterNode": "Microsoft.FailoverClusters.PowerShell.SuspendClusterNodeCommand",
    "Resume-ClusterNode": "Microsoft.FailoverClusters.PowerShell.ResumeClusterNodeCommand",
}

PARAMETER_BINDING_EXCEPTION = "System.Management.Automation.ParameterBindingException"
NOT_FOUND_EXCEPTION = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"


def cmdlet_class(cmdlet: str) -> str:
    return CMDLET_CLASSES.get(cmdlet, cmdlet)


class ErrorFactory:
    """Builds Exchange-style error ids; request ids are deterministic so recorded runs compare equal."""

    def __init__(self) -> None:
        self._requests = 0

    def exchange_id(self, *, server: str, now: datetime, failure: str, cmdlet: str) -> str:
        self._requests += 1
        request_id = uuid.UUID(int=(0x5E1 << 112) | self._requests)
        digest = f"{zlib.crc32(f'{failure}:{cmdlet}'.encode()):X}"
        return (
            f"[Server={server},RequestId={request_id},TimeStamp={timestamp_to_string(now)}] "
            f"[FailureCategory=Cmdlet-{failure}] {digest},{cmdlet_class(cmdlet)}"
        )

    def not_found(self, *, server: str, now: datetime, cmdlet: str, identity: str, dc: str) -> SimError:
        """Exchange's non-terminating "couldn't be found" record (ManagementObjectNotFoundException)."""
        return SimError(
            message=f"The operation couldn't be performed because object '{identity}' couldn't be found on '{dc}'.",
            error_id=self.exchange_id(
                server=server, now=now, failure="ManagementObjectNotFoundException", cmdlet=cmdlet
            ),
            category="ObjectNotFound",
            target=identity,
            exception_type=NOT_FOUND_EXCEPTION,
        )

    def task_error(
        self, *, server: str, now: datetime, cmdlet: str, message: str, exception: str, category: str, target: str = ""
    ) -> SimError:
        """Any other Exchange task error; ``exception`` is the .NET exception's full name."""
        short = exception.rsplit(".", 1)[-1]
        return SimError(
            message=message,
            error_id=self.exchange_id(server=server, now=now, failure=short, cmdlet=cmdlet),
            category=category,
            target=target,
            exception_type=exception,
        )


def named_parameter_not_found(cmdlet: str, name: str) -> SimTerminatingError:
    return SimTerminatingError(
        SimError(
            message=f"A parameter cannot be found that matches parameter name '{name}'.",
            error_id=f"NamedParameterNotFound,{cmdlet_class(cmdlet)}",
            category="InvalidArgument",
            target=name,
            exception_type=PARAMETER_BINDING_EXCEPTION,
        )
    )


def ambiguous_parameter(cmdlet: str, name: str, matches: list[str]) -> SimTerminatingError:
    listed = " ".join(f"-{m}" for m in matches)
    return SimTerminatingError(
        SimError(
            message=f"Parameter cannot be processed because the parameter name '{name}' is ambiguous. "
            f"Possible matches include: {listed}.",
            error_id=f"AmbiguousParameter,{cmdlet_class(cmdlet)}",
            category="InvalidArgument",
            target=name,
            exception_type=PARAMETER_BINDING_EXCEPTION,
        )
    )


def cannot_convert(cmdlet: str, parameter: str, value: object, type_name: str, detail: str) -> SimTerminatingError:
    """A bad enum/bool value: PowerShell's CannotConvertArgumentNoMessage binding failure."""
    return SimTerminatingError(
        SimError(
            message=f"Cannot bind parameter '{parameter}'. Cannot convert value \"{value}\" to type \"{type_name}\". "
            f"Error: \"{detail}\"",
            error_id=f"CannotConvertArgumentNoMessage,{cmdlet_class(cmdlet)}",
            category="InvalidArgument",
            target=str(value),
            exception_type=PARAMETER_BINDING_EXCEPTION,
        )
    )


def missing_mandatory(cmdlet: str, names: list[str]) -> SimTerminatingError:
    # A remote runspace has no host to prompt, so PowerShell fails the binding outright.
    return SimTerminatingError(
        SimError(
            message="Cannot process command because of one or more missing mandatory parameters: "
            + " ".join(names)
            + ".",
            error_id=f"MissingMandatoryParameter,{cmdlet_class(cmdlet)}",
            category="InvalidArgument",
            exception_type=PARAMETER_BINDING_EXCEPTION,
        )
    )


def command_not_found(cmdlet: str) -> SimTerminatingError:
    return SimTerminatingError(
        SimError(
            message=f"The term '{cmdlet}' is not recognized as the name of a cmdlet, function, script file, or "
            "operable program. Check the spelling of the name, or if a path was included, verify that the path is "
            "correct and try again.",
            error_id="CommandNotFoundException",
            category="ObjectNotFound",
            target=cmdlet,
            exception_type="System.Management.Automation.CommandNotFoundException",
        )
    )


def no_language() -> SimTerminatingError:
    # Since the April 2021 SU, the Exchange endpoint runs in no-language mode and refuses any script text.
    return SimTerminatingError(
        SimError(
            message="The syntax is not supported by this runspace. This can occur if the runspace is in "
            "no-language mode.",
            error_id="ScriptsNotAllowed",
            category="ParserError",
            exception_type="System.Management.Automation.ParseException",
        )
    )


def scripts_not_simulated() -> SimTerminatingError:
    return SimTerminatingError(
        SimError(
            message="The simulated default endpoint runs cmdlets only; script text is not executed.",
            error_id="ScriptsNotSimulated",
            category="NotImplemented",
            exception_type="System.NotSupportedException",
        )
    )
