"""Server component states with per-requester votes, as Exchange stores them (registry = local, AD = remote)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .objects import (
    OBJECT,
    REQUESTER_DETAILS_LIST_TYPES,
    EnumType,
    SimList,
    SimObject,
    ad_object_id,
    timestamp_to_string,
)

# Order and membership as in the real Get-ServerComponentState captures (CSS-Exchange HealthChecker test data).
COMPONENTS_2019 = (
    "ServerWideOffline", "HubTransport", "FrontendTransport", "Monitoring", "RecoveryActionsEnabled",
    "AutoDiscoverProxy", "ActiveSyncProxy", "EcpProxy", "EwsProxy", "ImapProxy", "OabProxy", "OwaProxy", "PopProxy",
    "PushNotificationsProxy", "RpsProxy", "RwsProxy", "RpcProxy", "XropProxy", "HttpProxyAvailabilityGroup",
    "ForwardSyncDaemon", "ProvisioningRps", "MapiProxy", "EdgeTransport", "HighAvailability", "SharedCache",
    "MailboxDeliveryProxy", "RoutingUpdates", "RestProxy", "DefaultProxy", "Lsass", "RoutingService", "E4EProxy",
    "CafeLAMv2", "LogExportProvider",
)  # fmt: skip
# Exchange 2016 still has Unified Messaging; the E16 capture lists UMCallRouter after RpcProxy.
COMPONENTS_2016 = (*COMPONENTS_2019[:17], "UMCallRouter", *COMPONENTS_2019[17:])

# On-premises these two are Inactive without anybody's vote; HealthChecker skips them.
INACTIVE_BY_DESIGN = frozenset({"ForwardSyncDaemon", "ProvisioningRps"})
# ServerWideOffline Inactive takes every other component down except these two.
IMMUNE_TO_SERVER_WIDE_OFFLINE = frozenset({"ServerWideOffline", "Monitoring", "RecoveryActionsEnabled"})
DRAINABLE = frozenset({"HubTransport", "FrontendTransport", "UMCallRouter"})

REQUESTERS = EnumType(
    "Microsoft.Exchange.Data.ServerComponentRequest",
    {"HealthApi": 1, "Maintenance": 2, "Sidelined": 3, "Functional": 4, "Deployment": 5},
)
SERVICE_STATE = EnumType("Microsoft.Exchange.Data.ServiceState", {"Inactive": 0, "Active": 1, "Draining": 2})
OBJECT_STATE = EnumType("Microsoft.Exchange.Data.ObjectState", {"New": 0, "Unchanged": 1, "Changed": 2, "Deleted": 3})

PRESENTATION_TYPES = (
    "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    OBJECT,
)
REQUESTER_DETAILS_TYPES = (
    "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject+RequesterDetails",
    OBJECT,
)


@dataclass
class Vote:
    state: str  # Active | Inactive | Draining
    timestamp: datetime


@dataclass
class ComponentVotes:
    """One component's votes: requester -> vote, kept separately for the registry (local) and AD (remote)."""

    local: dict[str, Vote] = field(default_factory=dict)
    remote: dict[str, Vote] = field(default_factory=dict)

    def latest(self) -> dict[str, str]:
        """Per requester, the newer of its local and remote vote (what the server acts on)."""
        merged: dict[str, Vote] = {}
        for store in (self.local, self.remote):
            for requester, vote in store.items():
                if requester not in merged or vote.timestamp > merged[requester].timestamp:
                    merged[requester] = vote
        return {requester: vote.state for requester, vote in merged.items()}


class ComponentTable:
    """All components of one server and the rules that turn votes into an effective state."""

    def __init__(self, version: str, installed_at: datetime) -> None:
        self.names = COMPONENTS_2016 if version == "2016" else COMPONENTS_2019
        self.votes: dict[str, ComponentVotes] = {name: ComponentVotes() for name in self.names}
        # Setup leaves Functional=Active votes on these three when a CU completes (see the captures).
        for name in ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled"):
            self.set(name, "Active", "Functional", installed_at)

    def canonical(self, component: str) -> str | None:
        folded = component.strip().lower()
        return next((name for name in self.names if name.lower() == folded), None)

    def set(self, component: str, state: str, requester: str, when: datetime, *, local: bool = True,
            remote: bool = True) -> None:
        votes = self.votes[component]
        if local:
            votes.local[requester] = Vote(state, when)
        if remote:
            # AD and the registry are written a moment apart on a real server; keep them distinct but ordered.
            votes.remote[requester] = Vote(state, when + timedelta(microseconds=1))

    def own_state(self, component: str) -> str:
        """The component's state from its own votes: any Inactive wins, then Draining, then Active."""
        states = set(self.votes[component].latest().values())
        if "Inactive" in states:
            return "Inactive"
        if "Draining" in states:
            return "Draining"
        if "Active" in states:
            return "Active"
        return "Inactive" if component in INACTIVE_BY_DESIGN else "Active"

    def server_wide_offline(self) -> bool:
        return self.own_state("ServerWideOffline") == "Inactive"

    def effective(self, component: str) -> str:
        """What Get-ServerComponentState reports: ServerWideOffline overrides all but Monitoring/Recovery."""
        if component not in IMMUNE_TO_SERVER_WIDE_OFFLINE and self.server_wide_offline():
            return "Inactive"
        return self.own_state(component)

    def holders(self, component: str) -> dict[str, str]:
        return self.votes[component].latest()

    def presentation(self, component: str, *, server_name: str, fqdn: str, server_dn: str) -> SimObject:
        """The ServerComponentStatePresentationObject, shaped like the E16/E19 captures."""
        votes = self.votes[component]
        return SimObject(
            PRESENTATION_TYPES,
            {
                "ServerFqdn": fqdn,
                "Component": component,
                "State": SERVICE_STATE(self.effective(component)),
                "ServerWideOfflineIsOffline": self.server_wide_offline(),
                "RemoteStates": _details(votes.remote, component),
                "LocalStates": _details(votes.local, component),
                "Identity": ad_object_id(server_name, server_dn),
                "IsValid": True,
                "ObjectState": OBJECT_STATE("New"),
            },
            PRESENTATION_TYPES[0],
        )


def _details(store: dict[str, Vote], component: str) -> SimList:
    items = []
    for requester, vote in store.items():
        items.append(
            SimObject(
                REQUESTER_DETAILS_TYPES,
                {
                    "Requester": requester,
                    "State": vote.state,
                    "Timestamp": vote.timestamp,
                    "Component": component,
                },
                # Exchange spells it "Requestor" in the ToString (sic).
                f"Requestor:{requester}; State:{vote.state}; Timestamp:{timestamp_to_string(vote.timestamp)}",
            )
        )
    return SimList(REQUESTER_DETAILS_LIST_TYPES, items)

