"""The WS-Management shell actions of the simulated WinRM endpoint: Create, Command, Send, Receive, Signal, Delete
and Get, each turning a parsed request into a response envelope against the endpoint's shells. The HTTP side (routing,
authentication, message encryption) is ``exchange_sim.endpoint``; the PSRP side of a shell is
``exchange_sim.psrp_server``."""
from __future__ import annotations

import base64
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from exchange_sim import wsman
from exchange_sim.objects import SimResult
from exchange_sim.psrp_server import Shell

if TYPE_CHECKING:  # the endpoint's state is passed in; the endpoint imports this module
    from exchange_sim.endpoint import EndpointState

log = logging.getLogger(__name__)

EXCHANGE = "Microsoft.Exchange"  # the configuration /<SERVER>/PowerShell hosts
RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"


# --- WS-Man actions -----------------------------------------------------------------------------------------------


def dispatch(
    state: EndpointState, server: str, configuration: str, user: str, body: bytes, client_ip: str
) -> tuple[int, bytes]:
    message_id = ""
    try:
        request = wsman.parse_request(body)
        message_id = request.message_id
        with state.lock:
            state.stats.requests[request.action] += 1
        handler = _ACTIONS[request.action]
        return 200, handler(state, request, server, configuration, user, client_ip)
    except wsman.WSManFault as fault:
        with state.lock:
            state.stats.faults[fault.code] += 1
        return 500, wsman.fault_envelope(fault, message_id, state.machine(server))
    except ET.ParseError as exc:
        fault = wsman.WSManFault(wsman.ERROR_ACTION_NOT_SUPPORTED, f"The request is not valid XML: {exc}")
        return 400, wsman.fault_envelope(fault, message_id, state.machine(server))
    except Exception as exc:  # an endpoint bug becomes a fault the client can report, not a dropped connection
        log.exception("WS-Man request failed")
        fault = wsman.WSManFault(wsman.ERROR_INTERNAL, f"The simulated WinRM service failed: {exc}")
        return 500, wsman.fault_envelope(fault, message_id, state.machine(server))


def _create(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    requested = req.resource_uri[len(RESOURCE_PREFIX):] if req.resource_uri.startswith(RESOURCE_PREFIX) else ""
    if requested.lower() != configuration.lower():
        # /PowerShell only hosts Microsoft.Exchange; /wsman only the default configuration.
        raise wsman.WSManFault(
            wsman.ERROR_INVALID_COMMAND,
            f"The WS-Management service cannot process the request. Cannot find the {requested or req.resource_uri} "
            f"session configuration in the WSMan: drive on the {server} computer.",
            subcode="w:InvalidResourceURI",
        )
    if req.body is None:
        raise wsman.WSManFault(wsman.ERROR_INVALID_COMMAND, "The Create request has no rsp:Shell.")
    creation = req.body.find("{http://schemas.microsoft.com/powershell}creationXml")
    shell_id = (req.body.get("ShellId") or str(uuid.uuid4())).upper()

    def invoke(cmdlet: str, parameters: list[tuple[str | None, Any]], is_script: bool) -> SimResult:
        with state.lock:
            state.stats.commands[(server, configuration)] += 1
            state.stats.cmdlets[cmdlet] += 1
        return state.sim.invoke(server, configuration, cmdlet, parameters, user=user, is_script=is_script)

    shell = Shell(shell_id, server, configuration, user, invoke, machine=state.machine(server))
    with state.lock:
        # Check and register under one lock so concurrent Creates cannot both slip under the quota.
        mine = sum(1 for s in state.shells.values() if s.user.lower() == user.lower() and s.server == server)
        if mine >= state.shell_quota:
            raise wsman.shell_quota_exceeded(state.shell_quota)
        state.stats.creates[(server, configuration)] += 1
        state.shells[shell_id] = shell
    if creation is not None and creation.text:
        try:
            with shell.lock:
                shell.feed(base64.b64decode(creation.text))
        except Exception:
            with state.lock:
                state.shells.pop(shell_id, None)
            raise
    url = f"{state.scheme}://127.0.0.1:{state.port}/{server}/{'PowerShell' if configuration == EXCHANGE else 'wsman'}"
    body = wsman.create_response(shell_id, req.resource_uri, url, user, ip)
    return _wrapped_envelope(wsman.TRANSFER + "CreateResponse", req.message_id, body)


def _wrapped_envelope(action: str, relates_to: str, wrapper: ET.Element) -> bytes:
    # create_response returns several body children under a throwaway wrapper element.
    root = ET.fromstring(wsman.envelope(action, relates_to))  # noqa: S314 - our own XML
    body = root.find("s:Body", wsman.NS)
    for child in list(wrapper):
        body.append(child)
    return ET.tostring(root, encoding="utf-8")


def _shell_id(req: wsman.Request) -> str:
    shell_id = req.selectors.get("ShellId")
    if not shell_id:
        raise wsman.WSManFault(
            wsman.ERROR_INVALID_SELECTORS, "The request has no ShellId selector.", subcode="w:InvalidSelectors"
        )
    return shell_id


def _pipeline_id(value: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(value or "")
    except ValueError:
        raise wsman.WSManFault(wsman.ERROR_INVALID_COMMAND, f"Invalid CommandId {value!r}.") from None


def _command(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    shell = state.shell(_shell_id(req), server)
    body = req.body
    if body is None:
        raise wsman.WSManFault(wsman.ERROR_INVALID_COMMAND, "The Command request has no rsp:CommandLine.")
    # pypsrp sends the pipeline id as CommandId; the first CREATE_PIPELINE fragment is in rsp:Arguments.
    command_id = body.get("CommandId") or str(uuid.uuid4()).upper()
    pipeline_id = _pipeline_id(command_id)
    arguments = body.find("rsp:Arguments", wsman.NS)
    with shell.lock:
        if shell.open_commands() >= state.commands_per_shell:
            # Finished commands count until the client terminates them (PowerShell.close()) or deletes the shell.
            raise wsman.command_quota_exceeded(state.commands_per_shell)
        shell.add_command(pipeline_id)
        if arguments is not None and arguments.text:
            shell.feed(base64.b64decode(arguments.text), pipeline_id)
    response = wsman.rsp("CommandResponse")
    wsman.sub(response, "rsp", "CommandId", command_id)
    return wsman.envelope(wsman.SHELL + "CommandResponse", req.message_id, response)


def _send(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    shell = state.shell(_shell_id(req), server)
    streams = req.body.findall("rsp:Stream", wsman.NS) if req.body is not None else []
    with shell.lock:
        for stream in streams:
            command_id = stream.get("CommandId")
            pipeline_id = _pipeline_id(command_id) if command_id else None
            if stream.text:
                shell.feed(base64.b64decode(stream.text), pipeline_id)
    return wsman.envelope(wsman.SHELL + "SendResponse", req.message_id, wsman.rsp("SendResponse"))


def _receive(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    shell = state.shell(_shell_id(req), server)
    desired = req.body.find("rsp:DesiredStream", wsman.NS) if req.body is not None else None
    command_id = desired.get("CommandId") if desired is not None else None
    pipeline_id = _pipeline_id(command_id) if command_id else None
    # Real WinRM holds a Receive open until data arrives or OperationTimeout passes; a short wait keeps tests fast
    # while still exercising pypsrp's retry of the OperationTimeout fault.
    deadline = time.monotonic() + min(state.receive_wait, req.operation_timeout)
    with shell.lock:
        while not shell.has_data(pipeline_id):
            if pipeline_id is not None and shell.is_done(pipeline_id):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise wsman.operation_timeout()
            shell.lock.wait(remaining)
        if state.shells.get(shell.shell_id) is not shell:
            raise wsman.shell_not_found(shell.shell_id)
        chunks = shell.take(pipeline_id)
        done = pipeline_id is not None and shell.is_done(pipeline_id) and not shell.has_data(pipeline_id)
    response = wsman.receive_response(chunks, command_id, done)
    return wsman.envelope(wsman.SHELL + "ReceiveResponse", req.message_id, response)


def _signal(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    shell = state.shell(_shell_id(req), server)
    body = req.body
    command_id = body.get("CommandId") if body is not None else None
    code_el = body.find("rsp:Code", wsman.NS) if body is not None else None
    code = (code_el.text or "") if code_el is not None else ""
    if command_id:
        pipeline_id = _pipeline_id(command_id)
        with shell.lock:
            if code.endswith("Terminate"):
                shell.terminate(pipeline_id)
            elif code.endswith("ctrl_c"):
                shell.stop(pipeline_id)
    return wsman.envelope(wsman.SHELL + "SignalResponse", req.message_id, wsman.rsp("SignalResponse"))


def _delete(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    shell = state.shell(_shell_id(req), server)
    with state.lock:
        state.shells.pop(shell.shell_id, None)
        state.stats.deletes[(server, shell.configuration)] += 1
    with shell.lock:
        shell.lock.notify_all()  # wake a Receive still waiting on this shell
    return wsman.envelope(wsman.TRANSFER + "DeleteResponse", req.message_id)


def _get(state: EndpointState, req: wsman.Request, server: str, configuration: str, user: str, ip: str) -> bytes:
    shell = state.shell(_shell_id(req), server)
    body = wsman.shell_state(shell.shell_id, RESOURCE_PREFIX + shell.configuration, shell.user)
    return wsman.envelope(wsman.TRANSFER + "GetResponse", req.message_id, body)


_ACTIONS = {
    "Create": _create,
    "Command": _command,
    "Send": _send,
    "Receive": _receive,
    "Signal": _signal,
    "Delete": _delete,
    "Get": _get,
}
