"""Transport: queues and messages of one server, draining over simulated time.

Model (simplified, deterministic): while HubTransport is Active, mail in equals mail out, so queue counts stand
still. Once the transport service has *picked up* a non-Active HubTransport state (at its next restart, or after
``STATE_PICKUP_SECONDS`` - the reason runbooks restart MSExchangeTransport after setting Draining), nothing new is
accepted and every delivery queue loses one message per ``SECONDS_PER_MESSAGE``. Shadow-redundancy and poison
queues never drain by themselves, and Redirect-Message does not touch them. A queue whose next hop refuses mail
(the ``queue-retry`` fault) sits in Retry and, while transport still accepts mail, grows by one message every
``grows_every`` seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .objects import INT_ARRAY_TYPES, OBJECT, EnumType, SimList, SimObject, byte_size

SECONDS_PER_MESSAGE = 5.0
STATE_PICKUP_SECONDS = 300.0
SERVICE_RESTART_SECONDS = 20.0  # Restart-Service blocks while the service stops and starts
BOOTLOADER_SECONDS = 60.0  # after "Running", Get-Queue still fails until the BootLoader has loaded the queue DB

QUEUE_STATUS = EnumType(
    "Microsoft.Exchange.Data.QueueViewer.QueueStatus",
    {"None": 0, "Active": 1, "Ready": 2, "Retry": 3, "Suspended": 4, "Connecting": 5},
)
DELIVERY_TYPE = EnumType(
    "Microsoft.Exchange.Data.DeliveryType",
    {
        "Undefined": 0, "DnsConnectorDelivery": 1, "MapiDelivery": 2, "NonSmtpGatewayDelivery": 3,
        "SmartHostConnectorDelivery": 4, "SmtpRelayToRemoteAdSite": 5, "SmtpRelayToTiRg": 6,
        "SmtpRelayWithinAdSite": 7, "SmtpRelayWithinAdSiteToEdge": 8, "Unreachable": 9, "ShadowRedundancy": 10,
        "Heartbeat": 11, "DeliveryAgent": 12, "SmtpDeliveryToMailbox": 13, "SmtpRelayToDag": 14,
        "SmtpRelayToMailboxDeliveryGroup": 15, "SmtpRelayToConnectorSourceServers": 16, "SmtpRelayToServers": 17,
        "SmtpRelayToRemoteForest": 18,
    },
)  # fmt: skip
MESSAGE_STATUS = EnumType(
    "Microsoft.Exchange.Data.QueueViewer.MessageStatus",
    {"None": 0, "Active": 1, "Retry": 2, "Suspended": 3, "Ready": 4, "Locked": 5, "PendingRemove": 6,
     "PendingSuspend": 7},
)
NEXT_HOP_CATEGORY = EnumType("Microsoft.Exchange.Data.QueueViewer.NextHopCategory", {"Internal": 0, "External": 1})
RISK_LEVEL = EnumType("Microsoft.Exchange.Data.Transport.RiskLevel", {"Normal": 0, "Bulk": 1, "High": 2})
QUEUE_TYPES = (
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
    "Microsoft.Exchange.Data.QueueViewer.PagedDataObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    OBJECT,
)
MESSAGE_TYPES = (
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleMessageInfo",
    "Microsoft.Exchange.Data.QueueViewer.PagedDataObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    OBJECT,
)
QUEUE_IDENTITY_TYPES = ("Microsoft.Exchange.Data.QueueViewer.QueueIdentity", "Microsoft.Exchange.Data.ObjectId", OBJECT)
MESSAGE_IDENTITY_TYPES = (
    "Microsoft.Exchange.Data.QueueViewer.MessageIdentity",
    "Microsoft.Exchange.Data.ObjectId",
    OBJECT,
)
POISON_HOP = "Poison Message"
NOT_DRAINED = frozenset({"ShadowRedundancy"})
# Transport's resources as Get-ExchangeDiagnosticInfo -Component ResourceThrottling names them.
TRANSPORT_RESOURCES = ("PrivateBytes", "SystemMemory", "UsedDiskSpace[C:\\Program Files\\Microsoft\\Exchange Server\\"
                       "V15\\TransportRoles\\data\\Queue]", "UsedVersionBuckets[C:\\Program Files\\Microsoft\\"
                       "Exchange Server\\V15\\TransportRoles\\data\\Queue\\mail.que]", "SubmissionQueue")



@dataclass
class Message:
    message_id: int
    from_address: str
    subject: str
    size: int
    recipients: list[str]
    received: datetime
    status: str = "Ready"


@dataclass
class Queue:
    queue_id: str  # "Submission", "Poison", "7", "Shadow\\9"
    delivery_type: str
    next_hop: str
    status: str = "Ready"
    messages: list[Message] = field(default_factory=list)
    last_error: str | None = None
    stuck: bool = False
    credit: float = 0.0
    external: bool = False
    grows_every: float = 0.0  # queue-retry: seconds between new messages for this hop while mail is accepted
    growth_credit: float = 0.0

    @property
    def is_poison(self) -> bool:
        return self.next_hop == POISON_HOP

    @property
    def drains(self) -> bool:
        """Whether delivery empties this queue (shadow and poison queues only empty by other means)."""
        return not (self.is_poison or self.delivery_type in NOT_DRAINED or self.stuck or self.status == "Suspended")

    @property
    def redirectable(self) -> bool:
        return not (self.is_poison or self.delivery_type in NOT_DRAINED or self.stuck)


@dataclass
class Transport:
    """One server's transport service: its state as the service sees it, its queues and its restart window."""

    server: str
    queues: dict[str, Queue] = field(default_factory=dict)
    service_running: bool = True
    ready_at: datetime | None = None  # Get-Queue errors until then (BootLoader still loading)
    observed_hub_state: str = "Active"  # the HubTransport state the running service acted on
    pending_hub_state: str = "Active"
    pending_since: datetime | None = None
    draining_since: datetime | None = None
    slow_polls_remaining: int = 0
    next_queue_number: int = 3
    next_message_id: int = 1

    # --- seeding -------------------------------------------------------------------------------------------
    def add_queue(self, delivery_type: str, next_hop: str, count: int, now: datetime, *, shadow: bool = False,
                  queue_id: str | None = None, external: bool = False) -> Queue:
        if queue_id is None:
            queue_id = f"Shadow\\{self.next_queue_number}" if shadow else str(self.next_queue_number)
            self.next_queue_number += 1
        queue = Queue(queue_id, delivery_type, next_hop, external=external)
        self.queues[queue_id] = queue
        self.add_messages(queue, count, now)
        return queue

    def add_messages(self, queue: Queue, count: int, now: datetime, *, status: str = "Ready") -> None:
        for _ in range(count):
            number = self.next_message_id
            self.next_message_id += 1
            queue.messages.append(
                Message(
                    message_id=number,
                    from_address=f"sender{number:03d}@contoso.com",
                    subject=f"Simulated message {number}",
                    size=20_000 + 1_000 * (number % 7),
                    recipients=[f"user{number % 40:03d}@{queue.next_hop if queue.external else 'contoso.com'}"],
                    received=now - timedelta(seconds=30 * (count - _)),
                    status=status,
                )
            )

    # --- state ---------------------------------------------------------------------------------------------
    def note_hub_state(self, state: str, now: datetime) -> None:
        """HubTransport's effective state changed (or not); the service only acts on it later."""
        if state != self.pending_hub_state:
            self.pending_hub_state = state
            self.pending_since = now

    def pick_up_state(self, when: datetime) -> None:
        if self.observed_hub_state != self.pending_hub_state:
            self.observed_hub_state = self.pending_hub_state
            self.draining_since = when if self.observed_hub_state != "Active" else None

    def is_ready(self, now: datetime) -> bool:
        return self.service_running and (self.ready_at is None or now >= self.ready_at)

    def restart(self, now: datetime) -> None:
        """The service came back: it re-reads HubTransport's state, then the BootLoader loads the queue DB."""
        self.service_running = True
        self.ready_at = now + timedelta(seconds=BOOTLOADER_SECONDS)
        self.pick_up_state(self.ready_at)

    def stop(self) -> None:
        self.service_running = False

    def advance(self, start: datetime, end: datetime) -> None:
        """Let mail flow between two instants of simulated time."""
        if self.pending_since is not None and self.pending_hub_state != self.observed_hub_state:
            pickup = self.pending_since + timedelta(seconds=STATE_PICKUP_SECONDS)
            if pickup <= end:
                self.pick_up_state(pickup)
        self._arrive(start, end)
        if not self.service_running or self.draining_since is None or self.slow_polls_remaining > 0:
            return
        window_start = max(t for t in (start, self.draining_since, self.ready_at) if t is not None)
        seconds = (end - window_start).total_seconds()
        if seconds <= 0:
            return
        for queue in self.queues.values():
            if not queue.drains or not queue.messages:
                continue
            queue.credit += seconds / SECONDS_PER_MESSAGE
            delivered = min(int(queue.credit), len(queue.messages))
            queue.credit -= delivered
            del queue.messages[:delivered]
            if not queue.messages:
                queue.credit = 0.0

    def _arrive(self, start: datetime, end: datetime) -> None:
        """New mail for the hops that refuse it piles up while transport accepts mail (HubTransport Active)."""
        if not self.service_running or self.observed_hub_state != "Active":
            return
        window_start = max(start, self.ready_at) if self.ready_at is not None else start
        seconds = (end - window_start).total_seconds()
        if seconds <= 0:
            return
        for queue in self.queues.values():
            if queue.grows_every <= 0:
                continue
            queue.growth_credit += seconds / queue.grows_every
            arrived = int(queue.growth_credit)
            queue.growth_credit -= arrived
            if arrived:
                self.add_messages(queue, arrived, end)

    def active_message_count(self) -> int:
        """Messages that still need to leave: what a drain check counts (not shadow, not poison)."""
        return sum(len(q.messages) for q in self.queues.values() if q.delivery_type not in NOT_DRAINED
                   and not q.is_poison)


def queue_identity(server: str, queue_id: str) -> str:
    return f"{server}\\{queue_id}"


def queue_object(server: str, queue: Queue, now: datetime) -> SimObject:
    """An ExtensibleQueueInfo as Get-Queue returns it."""
    count = len(queue.messages)
    retrying = queue.status == "Retry"
    return SimObject(
        QUEUE_TYPES,
        {
            "DeliveryType": DELIVERY_TYPE(queue.delivery_type),
            "NextHopDomain": queue.next_hop,
            "TlsDomain": "",
            "NextHopConnector": "00000000-0000-0000-0000-000000000000",
            "Status": QUEUE_STATUS(queue.status),
            "MessageCount": count,
            "LastError": queue.last_error,
            "RetryCount": 3 if retrying else 0,
            "LastRetryTime": now - timedelta(minutes=1) if retrying else None,
            "NextRetryTime": now + timedelta(minutes=1) if retrying else None,
            "FirstRetryTime": now - timedelta(minutes=20) if retrying else None,
            "DeferredMessageCount": 0,
            "LockedMessageCount": 0,
            "MessageCountsPerPriority": SimList(INT_ARRAY_TYPES, [0, count, 0, 0]),
            "DeferredMessageCountsPerPriority": SimList(INT_ARRAY_TYPES, [0, 0, 0, 0]),
            "RiskLevel": RISK_LEVEL("Normal"),
            "OutboundIPPool": 0,
            "NextHopCategory": NEXT_HOP_CATEGORY("External" if queue.external else "Internal"),
            "IncomingRate": 0.0,
            "OutgoingRate": 0.0,
            "Velocity": 0.0,
            "OverrideSource": "",
            "Identity": SimObject(QUEUE_IDENTITY_TYPES, {}, queue_identity(server, queue.queue_id)),
            "IsValid": True,
        },
        queue_identity(server, queue.queue_id),
    )


def message_object(server: str, queue: Queue, message: Message) -> SimObject:
    """An ExtensibleMessageInfo as Get-Message returns it."""
    identity = f"{queue_identity(server, queue.queue_id)}\\{message.message_id}"
    return SimObject(
        MESSAGE_TYPES,
        {
            "FromAddress": message.from_address,
            "Status": MESSAGE_STATUS(message.status),
            "Size": byte_size(message.size),
            "MessageSourceName": "SMTP:Default " + server,
            "SourceIP": "10.0.0.10",
            "SCL": -1,
            "DateReceived": message.received,
            "ExpirationTime": message.received + timedelta(days=2),
            "LastError": queue.last_error,
            "RetryCount": 0,
            "Recipients": SimList(("System.String[]", "System.Array", OBJECT), list(message.recipients)),
            "Subject": message.subject,
            "InternetMessageId": f"<{message.message_id}.sim@contoso.com>",
            "Queue": SimObject(QUEUE_IDENTITY_TYPES, {}, queue_identity(server, queue.queue_id)),
            "Identity": SimObject(MESSAGE_IDENTITY_TYPES, {}, identity),
            "IsValid": True,
        },
        identity,
    )
