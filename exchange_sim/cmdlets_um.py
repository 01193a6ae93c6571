"""Unified Messaging cmdlets (Exchange endpoint, Exchange 2016 only): Get-UMActiveCalls."""
from __future__ import annotations

from . import errors
from .binding import EXCHANGE, STR, cmdlet
from .call import Call
from .um import active_call_object

LOCALIZED_EXCEPTION = "Microsoft.Exchange.Data.Common.LocalizedException"


@cmdlet("Get-UMActiveCalls", EXCHANGE, params={"Server": STR})
def get_um_active_calls(call: Call) -> None:
    if call.server.um is None:
        # UM was removed in Exchange 2019: its cmdlets are not in the 2019/SE management shell at all.
        raise errors.command_not_found(call.cmdlet)
    server = call.server
    if call.get("Server") is not None:
        server = call.sim.find_server(call.get("Server"))
        if server is None:
            call.not_found(call.get("Server"))
            return
    if server.um is None:
        # The task's ValidateServerIsCompatible: the target runs no UM service to ask over RPC.
        call.error(f"The Unified Messaging RPC task can't run against server '{server.name}' because it doesn't run "
                   "a compatible version of the Microsoft Exchange Unified Messaging service.",
                   exception=LOCALIZED_EXCEPTION, category="InvalidData", target=server.name)
        return
    call.output(*(active_call_object(server.fqdn, c) for c in server.um.active(call.now)))
