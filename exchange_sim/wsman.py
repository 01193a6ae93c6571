"""WS-Management (MS-WSMV) SOAP envelopes for the simulated WinRM endpoint: parse requests, build responses.

Only what pypsrp's ``RunspacePool``/``PowerShell`` send is understood: transfer Create/Get/Delete and the shell
Command/Send/Receive/Signal actions. Faults are shaped like real WinRM's so pypsrp's ``WSManFaultError`` carries the
same ``code`` a real server would produce.
"""
from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS = {
    TRANSFER + "Create": "Create",
    TRANSFER + "Get": "Get",
    TRANSFER + "Delete": "Delete",
    SHELL + "Command": "Command",
    SHELL + "Send": "Send",
    SHELL + "Receive": "Receive",
    SHELL + "Signal": "Signal",
}
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
COMMAND_DONE = SHELL + "CommandState/Done"
COMMAND_RUNNING = SHELL + "CommandState/Running"

# WinRM error codes (HRESULTs as unsigned ints), as pypsrp's WSManFaultError.code reports them.
ERROR_OPERATION_TIMEDOUT = 0x80338029  # 2150858793: an empty Receive; pypsrp retries it
ERROR_INVALID_SELECTORS = 0x8033805B  # 2150858843: unknown ShellId ("shell was not found on the server")
ERROR_QUOTA_MAX_SHELLS = 0x803381A5  # the per-user concurrent shell quota (wsman:QuotaLimit)
ERROR_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ = 0x803381E9  # the plugin's MaxConcurrentCommandsPerShell
ERROR_ACTION_NOT_SUPPORTED = 0x80338003
ERROR_INVALID_COMMAND = 0x80338012
ERROR_INTERNAL = 0x80338000  # ERROR_WSMAN_INTERNAL_ERROR


class WSManFault(Exception):
    """A SOAP fault to return to the client (HTTP 500, like WinRM)."""

    def __init__(self, code: int, message: str, *, subcode: str = "w:InternalError", reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.reason = reason or message


def operation_timeout() -> WSManFault:
    return WSManFault(
        ERROR_OPERATION_TIMEDOUT,
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
        subcode="w:TimedOut",
    )


def shell_not_found(shell_id: str) -> WSManFault:
    return WSManFault(
        ERROR_INVALID_SELECTORS,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found "
        "on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the "
        "server. Provide the correct ShellId or create a new shell and retry the operation.",
        subcode="w:InvalidSelectors",
    )


def shell_quota_exceeded(limit: int) -> WSManFault:
    return WSManFault(
        ERROR_QUOTA_MAX_SHELLS,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} "
        "concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user.",
        subcode="w:QuotaLimit",
    )


def command_quota_exceeded(limit: int) -> WSManFault:
    return WSManFault(
        ERROR_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ,
        f"The WS-Management service cannot process the request. The maximum number of concurrent commands per shell "
        f"({limit}) has been exceeded for this plugin. Close existing commands or raise the quota for this plugin.",
        subcode="w:QuotaLimit",
    )


@dataclass
class Request:
    """The parts of a WS-Man request the endpoint acts on."""

    action: str  # short name: Create, Get, Delete, Command, Send, Receive, Signal
    message_id: str
    resource_uri: str
    operation_timeout: float
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None


def _seconds(value: str | None, default: float = 20.0) -> float:
    # xs:duration as WinRM clients send it: PT20S / PT20.000S.
    if not value or not value.startswith("PT") or not value.endswith("S"):
        return default
    try:
        return float(value[2:-1])
    except ValueError:
        return default


def parse_request(data: bytes) -> Request:
    """Parse a SOAP envelope; raise WSManFault for anything the endpoint does not implement."""
    root = ET.fromstring(data)  # noqa: S314 - local loopback client, no external entities in ElementTree
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None:
        raise WSManFault(ERROR_ACTION_NOT_SUPPORTED, "The SOAP envelope has no header.")

    def text(path: str) -> str:
        element = header.find(path, NS)
        return (element.text or "") if element is not None else ""

    action_uri = text("wsa:Action")
    action = ACTIONS.get(action_uri)
    if action is None:
        raise WSManFault(
            ERROR_ACTION_NOT_SUPPORTED,
            f"The WS-Management service does not support the action {action_uri}.",
            subcode="wsa:ActionNotSupported",
        )
    selectors = {s.get("Name", ""): s.text or "" for s in header.findall("wsman:SelectorSet/wsman:Selector", NS)}
    options = {o.get("Name", ""): o.text or "" for o in header.findall("wsman:OptionSet/wsman:Option", NS)}
    return Request(
        action=action,
        message_id=text("wsa:MessageID"),
        resource_uri=text("wsman:ResourceURI"),
        operation_timeout=_seconds(text("wsman:OperationTimeout")),
        selectors=selectors,
        options=options,
        body=body[0] if body is not None and len(body) else None,
    )


def envelope(action: str, relates_to: str, body: ET.Element | None = None) -> bytes:
    """A response envelope; RelatesTo must echo the request's MessageID or pypsrp rejects the reply."""
    root = ET.Element(f"{{{NS['s']}}}Envelope")
    header = ET.SubElement(root, f"{{{NS['s']}}}Header")
    ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = action
    ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, f"{{{NS['wsa']}}}To").text = ANONYMOUS
    ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
    body_element = ET.SubElement(root, f"{{{NS['s']}}}Body")
    if body is not None:
        body_element.append(body)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


def fault_envelope(fault: WSManFault, relates_to: str, machine: str) -> bytes:
    """A SOAP 1.2 fault with the WSManFault detail pypsrp reads the code and message from."""
    s, f = NS["s"], NS["f"]
    root = ET.Element(f"{{{s}}}Envelope")
    header = ET.SubElement(root, f"{{{s}}}Header")
    ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
    ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, f"{{{NS['wsa']}}}To").text = ANONYMOUS
    if relates_to:
        ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
    body = ET.SubElement(root, f"{{{s}}}Body")
    fault_el = ET.SubElement(body, f"{{{s}}}Fault")
    code = ET.SubElement(fault_el, f"{{{s}}}Code")
    ET.SubElement(code, f"{{{s}}}Value").text = "s:Receiver"
    ET.SubElement(ET.SubElement(code, f"{{{s}}}Subcode"), f"{{{s}}}Value").text = fault.subcode
    reason = ET.SubElement(fault_el, f"{{{s}}}Reason")
    ET.SubElement(reason, f"{{{s}}}Text", {f"{{{NS['xml']}}}lang": "en-US"}).text = fault.reason
    detail = ET.SubElement(fault_el, f"{{{s}}}Detail")
    wsman_fault = ET.SubElement(detail, f"{{{f}}}WSManFault", Code=str(fault.code), Machine=machine)
    ET.SubElement(wsman_fault, f"{{{f}}}Message").text = fault.message
    return ET.tostring(root, encoding="utf-8")


def rsp(tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.Element(f"{{{NS['rsp']}}}{tag}", attrib)
    element.text = text
    return element


def sub(parent: ET.Element, ns: str, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NS[ns]}}}{tag}", attrib)
    element.text = text
    return element


def create_response(shell_id: str, resource_uri: str, endpoint_url: str, owner: str, client_ip: str) -> ET.Element:
    """Body of a CreateResponse: pypsrp takes the SelectorSet from ResourceCreated for every later request."""
    wrapper = ET.Element("wrapper")
    created = sub(wrapper, "wst", "ResourceCreated")
    sub(created, "wsa", "Address", endpoint_url)
    params = sub(created, "wsa", "ReferenceParameters")
    sub(params, "wsman", "ResourceURI", resource_uri)
    sub(sub(params, "wsman", "SelectorSet"), "wsman", "Selector", shell_id, Name="ShellId")
    shell = sub(wrapper, "rsp", "Shell")
    for tag, value in [
        ("ShellId", shell_id),
        ("ResourceUri", resource_uri),
        ("Owner", owner),
        ("ClientIP", client_ip),
        ("IdleTimeOut", "PT7200.000S"),
        ("InputStreams", "stdin pr"),
        ("OutputStreams", "stdout"),
        ("ShellRunTime", "P0DT0H0M0S"),
        ("ShellInactivity", "P0DT0H0M0S"),
    ]:
        sub(shell, "rsp", tag, value)
    return wrapper


def shell_state(shell_id: str, resource_uri: str, owner: str, state: str = "Connected") -> ET.Element:
    """Body of a GetResponse on a shell; pypsrp's is_alive() reads rsp:Shell/rsp:State."""
    shell = rsp("Shell")
    for tag, value in [("ShellId", shell_id), ("ResourceUri", resource_uri), ("Owner", owner), ("State", state)]:
        sub(shell, "rsp", tag, value)
    return shell


def receive_response(chunks: list[bytes], command_id: str | None, done: bool) -> ET.Element:
    """Body of a ReceiveResponse: one stdout Stream per PSRP payload, then the command state."""
    response = rsp("ReceiveResponse")
    for chunk in chunks:
        attrib = {"Name": "stdout"}
        if command_id:
            attrib["CommandId"] = command_id
        sub(response, "rsp", "Stream", base64.b64encode(chunk).decode(), **attrib)
    if command_id:
        sub(response, "rsp", "CommandState", CommandId=command_id, State=COMMAND_DONE if done else COMMAND_RUNNING)
    return response
