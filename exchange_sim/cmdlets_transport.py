"""Queue cmdlets (Exchange endpoint): Get-Queue, Get-Message, Redirect-Message, Retry-Queue, Resume-Queue."""
from __future__ import annotations

from .binding import BOOL, EXCHANGE, RESULT_SIZE, STR, STRLIST, SWITCH, cmdlet
from .call import Call
from .errors import missing_mandatory
from .filters import FilterError, compile_filter
from .servers import Server
from .transport import Queue, message_object, queue_object

QUEUE_VIEWER_EXCEPTION = "Microsoft.Exchange.Data.QueueViewer.QueueViewerException"
FILTER_EXCEPTION = "Microsoft.Exchange.Management.QueueViewerTasks.InvalidFilterException"


def _transport_ready(call: Call, server: Server) -> None:
    """Right after a restart the BootLoader is still loading the queue database and Get-Queue fails (DSC waits
    up to 5 minutes for it); a stopped service fails the same way."""
    if not server.transport.is_ready(call.now):
        raise call.fail(
            f"The Microsoft Exchange Transport service on server '{server.fqdn}' isn't running or is still starting. "
            "Queue information isn't available. Try again later.",
            exception=QUEUE_VIEWER_EXCEPTION, category="ResourceUnavailable", target=server.name,
        )


def _resolve_queues(call: Call, *, default_all: bool = True) -> list[tuple[Server, Queue]] | None:
    """Queues named by -Identity ``SERVER\\id`` (or ``id`` on the connected server) or all of -Server's."""
    identity = call.get("Identity")
    if identity is not None:
        server_part, sep, queue_id = identity.partition("\\")
        server = call.sim.find_server(server_part) if sep else call.server
        if not sep:
            queue_id = identity
        if server is None:
            call.not_found(identity)
            return None
        _transport_ready(call, server)
        queue = next((q for q in server.transport.queues.values() if q.queue_id.lower() == queue_id.lower()), None)
        if queue is None:
            call.not_found(identity)
            return None
        return [(server, queue)]
    server = call.server
    if call.get("Server") is not None:
        server = call.sim.find_server(call.get("Server"))
        if server is None:
            call.not_found(call.get("Server"))
            return None
    _transport_ready(call, server)
    return [(server, q) for q in server.transport.queues.values()] if default_all else []


def _filtered(call: Call, pairs: list[tuple[Server, Queue]]) -> list[tuple[Server, Queue]]:
    text = call.get("Filter")
    # The poison queue is hidden while empty, as in Queue Viewer.
    pairs = [(s, q) for s, q in pairs if not (q.is_poison and not q.messages)]
    if not text:
        return pairs
    objects = [(s, q, queue_object(s.name, q, call.now)) for s, q in pairs]
    properties = set(objects[0][2].props) if objects else set(queue_object("X", Queue("0", "Undefined", ""),
                                                                             call.now).props)
    try:
        predicate = compile_filter(text, properties)
    except FilterError as exc:
        raise call.fail(f"The filter \"{text}\" is invalid: {exc}", exception=FILTER_EXCEPTION,
                        category="InvalidArgument", target=text) from None
    return [(s, q) for s, q, obj in objects if predicate(obj.props)]


@cmdlet("Get-Queue", EXCHANGE,
        params={"Identity": STR, "Server": STR, "Filter": STR, "ResultSize": RESULT_SIZE, "SortOrder": STR,
                "Include": STRLIST, "Exclude": STRLIST, "BookmarkIndex": STR, "BookmarkObject": STR,
                "IncludeBookmark": BOOL, "ReturnPageInfo": BOOL, "SearchForward": BOOL},
        positional=("Identity",))
def get_queue(call: Call) -> None:
    pairs = _resolve_queues(call)
    if pairs is None:
        return
    for server in {s.name: s for s, _ in pairs}.values():
        transport = server.transport
        # queue-slow: each poll while draining is one step closer to the queues moving again.
        if transport.slow_polls_remaining > 0 and transport.draining_since is not None:
            transport.slow_polls_remaining -= 1
    pairs = _filtered(call, pairs)
    limit = call.get("ResultSize")
    if limit is not None:
        pairs = pairs[:limit]
    call.output(*(queue_object(s.name, q, call.now) for s, q in pairs))


@cmdlet("Get-Message", EXCHANGE,
        params={"Identity": STR, "Queue": STR, "Server": STR, "Filter": STR, "ResultSize": RESULT_SIZE,
                "IncludeRecipientInfo": SWITCH, "IncludeComponentLatencyInfo": SWITCH, "SortOrder": STR},
        positional=("Identity",))
def get_message(call: Call) -> None:
    if call.get("Queue") is not None:
        call.args["Identity"], message_id = call.get("Queue"), None
    elif call.get("Identity") is not None:
        queue_part, _, message_id = call.get("Identity").rpartition("\\")
        call.args["Identity"] = queue_part
    else:
        message_id = None
    pairs = _resolve_queues(call)
    if pairs is None:
        return
    objects = [message_object(s.name, q, m) for s, q in pairs for m in q.messages
               if message_id is None or str(m.message_id) == message_id]
    if call.get("Filter") and objects:
        try:
            predicate = compile_filter(call.get("Filter"), set(objects[0].props))
        except FilterError as exc:
            raise call.fail(f"The filter \"{call.get('Filter')}\" is invalid: {exc}", exception=FILTER_EXCEPTION,
                            category="InvalidArgument", target=call.get("Filter")) from None
        objects = [o for o in objects if predicate(o.props)]
    limit = call.get("ResultSize")
    call.output(*(objects if limit is None else objects[:limit]))


@cmdlet("Redirect-Message", EXCHANGE, params={"Server": STR, "Target": STRLIST}, mandatory=("Server", "Target"),
        should_process=True)
def redirect_message(call: Call) -> None:
    source = call.sim.find_server(call.get("Server"))
    if source is None:
        call.not_found(call.get("Server"))
        return
    _transport_ready(call, source)
    targets: list[Server] = []
    for text in call.get("Target"):
        target = call.sim.find_server(text)
        if target is None or target is source:
            call.error(f"The target server '{text}' isn't a valid Mailbox server for redirection.",
                       exception=QUEUE_VIEWER_EXCEPTION, category="InvalidArgument", target=text)
            continue
        # A peer in maintenance answers SMTP with 421 4.3.2: nothing can be handed to it.
        if target.components.effective("HubTransport") != "Active" or not target.transport.is_ready(call.now):
            call.error(f"The target server '{target.fqdn}' isn't accepting messages: its HubTransport component "
                       "isn't Active.", exception=QUEUE_VIEWER_EXCEPTION, category="ResourceUnavailable",
                       target=text)
            continue
        targets.append(target)
    if not targets or call.get("WhatIf"):
        return
    for index, queue in enumerate(q for q in source.transport.queues.values() if q.redirectable and q.messages):
        target = targets[index % len(targets)]
        inbox = target.transport.queues["Submission"]
        inbox.messages.extend(queue.messages)
        queue.messages.clear()
        queue.credit = 0.0


def _queue_action(call: Call) -> list[tuple[Server, Queue]] | None:
    if call.get("Identity") is None and call.get("Filter") is None:
        raise missing_mandatory(call.cmdlet, ["Identity"])
    pairs = _resolve_queues(call)
    if pairs is None:
        return None
    return _filtered(call, pairs)


@cmdlet("Retry-Queue", EXCHANGE, params={"Identity": STR, "Server": STR, "Filter": STR, "Resubmit": BOOL},
        positional=("Identity",), should_process=True)
def retry_queue(call: Call) -> None:
    pairs = _queue_action(call)
    if pairs is None or call.get("WhatIf"):
        return
    for _, queue in pairs:
        if queue.delivery_type == "ShadowRedundancy":
            # Forcing a heartbeat lets the shadow server learn which of the primary's messages were delivered and
            # discard its redundant copies - possible only once the primary has nothing left in flight.
            primary = call.sim.find_server(queue.next_hop)
            if primary is not None and primary.transport.active_message_count() == 0:
                queue.messages.clear()
        elif queue.status == "Retry" and not queue.stuck:
            queue.status = "Ready"


@cmdlet("Resume-Queue", EXCHANGE, params={"Identity": STR, "Server": STR, "Filter": STR}, positional=("Identity",),
        should_process=True)
def resume_queue(call: Call) -> None:
    pairs = _queue_action(call)
    if pairs is None or call.get("WhatIf"):
        return
    for _, queue in pairs:
        if queue.status == "Suspended":
            queue.status = "Ready"

