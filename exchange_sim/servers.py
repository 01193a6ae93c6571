"""One simulated Exchange server: identity, components, transport, services, activation settings, cluster node."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .components import OBJECT_STATE, ComponentTable
from .databases import dag_dn, server_dn, server_id, stable_guid
from .objects import AD_PRESENTATION, CONFIGURABLE, OBJECT, EnumType, SimObject, ad_object_id, string_list
from .transport import Transport
from .um import UnifiedMessaging
from .windows import SHARE, Windows

VERSIONS = {
    # AdminDisplayVersion (major, minor, build, revision) of a recent CU per product line.
    "2016": (15, 1, 2507, 6),
    "2019": (15, 2, 1544, 4),
    "SE": (15, 2, 2562, 17),
}
# Update packages every simulated server can reach: a CU's extracted media (a folder) and an SU, locally and on a
# share. 2019 CU14 -> CU15 (15.2.1748.10); the CU14 SU (15.2.1544.14).
PACKAGES = {
    "2019": (("D:\\Exchange\\CU15", (15, 2, 1748, 10), True), (SHARE + "\\CU15", (15, 2, 1748, 10), True),
             ("D:\\Exchange\\Exchange2019-KB5049233-x64-en.msp", (15, 2, 1544, 14), False),
             (SHARE + "\\Exchange2019-KB5049233-x64-en.msp", (15, 2, 1544, 14), False)),
    "2016": (("D:\\Exchange\\Exchange2016-KB5049233-x64-en.msp", (15, 1, 2507, 44), False),),
}
ACTIVATION_POLICY = EnumType(
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.DatabaseCopyAutoActivationPolicyType",
    {"Unrestricted": 0, "IntrasiteOnly": 1, "Blocked": 2},
)
MOUNT_DIAL = EnumType(
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.AutoDatabaseMountDial",
    {"Lossless": 0, "BestEffort": 3, "BestAvailability": 5, "GoodAvailability": 6},
)
SERVER_ROLE = EnumType(
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ServerRole",
    {"None": 0, "Mailbox": 2, "Edge": 64},
)
SERVER_EDITION = EnumType(
    "Microsoft.Exchange.Data.ServerEditionType",
    {"Unknown": 0, "Standard": 1, "StandardEvaluation": 2, "Enterprise": 3, "EnterpriseEvaluation": 4},
)
SERVICE_STATUS = EnumType(
    "System.ServiceProcess.ServiceControllerStatus",
    {"Stopped": 1, "StartPending": 2, "StopPending": 3, "Running": 4, "ContinuePending": 5, "PausePending": 6,
     "Paused": 7},
)
START_TYPE = EnumType("System.ServiceProcess.ServiceStartMode",
                      {"Boot": 0, "System": 1, "Automatic": 2, "Manual": 3, "Disabled": 4})
CLUSTER_NODE_STATE = EnumType("Microsoft.FailoverClusters.PowerShell.ClusterNodeState",
                              {"Up": 0, "Down": 1, "Paused": 2, "Joining": 3, "Unknown": -1})
DRAIN_STATUS = EnumType("Microsoft.FailoverClusters.PowerShell.NodeDrainStatus",
                        {"NotInitiated": 0, "InProgress": 1, "Completed": 2, "Failed": 3})

# Role -> required services, from the Test-ServiceHealth captures (Unified Messaging only on 2016).
ROLE_SERVICES = {
    "Mailbox Server Role": [
        "IISAdmin", "MSExchangeADTopology", "MSExchangeDelivery", "MSExchangeIS", "MSExchangeMailboxAssistants",
        "MSExchangeRepl", "MSExchangeRPC", "MSExchangeServiceHost", "MSExchangeSubmission", "MSExchangeThrottling",
        "MSExchangeTransportLogSearch", "W3Svc", "WinRM",
    ],
    "Client Access Server Role": [
        "IISAdmin", "MSExchangeADTopology", "MSExchangeMailboxReplication", "MSExchangeRPC", "MSExchangeServiceHost",
        "W3Svc", "WinRM",
    ],
    "Unified Messaging Server Role": ["IISAdmin", "MSExchangeADTopology", "MSExchangeServiceHost", "MSExchangeUM",
                                      "W3Svc", "WinRM"],
    "Hub Transport Server Role": [
        "IISAdmin", "MSExchangeADTopology", "MSExchangeEdgeSync", "MSExchangeServiceHost", "MSExchangeTransport",
        "MSExchangeTransportLogSearch", "W3Svc", "WinRM",
    ],
}  # fmt: skip
DISPLAY_NAMES = {
    "MSExchangeTransport": "Microsoft Exchange Transport",
    "MSExchangeFrontEndTransport": "Microsoft Exchange Frontend Transport",
    "MSExchangeIS": "Microsoft Exchange Information Store",
    "MSExchangeRepl": "Microsoft Exchange Replication",
    "MSExchangeADTopology": "Microsoft Exchange Active Directory Topology",
    "MSExchangeHM": "Microsoft Exchange Health Manager",
    "MSExchangeIMAP4": "Microsoft Exchange IMAP4",
    "MSExchangeIMAP4BE": "Microsoft Exchange IMAP4 Backend",
    "MSExchangePOP3": "Microsoft Exchange POP3",
    "MSExchangePOP3BE": "Microsoft Exchange POP3 Backend",
    "ClusSvc": "Cluster Service",
    "W3Svc": "World Wide Web Publishing Service",
    "WinRM": "Windows Remote Management (WS-Management)",
}
# POP/IMAP are Manual by default and stop when their proxy component goes Inactive (they don't come back alone).
MANUAL_SERVICES = ("MSExchangeIMAP4", "MSExchangeIMAP4BE", "MSExchangePOP3", "MSExchangePOP3BE")


@dataclass
class Service:
    name: str
    running: bool = True
    start_type: str = "Automatic"


@dataclass
class Server:
    name: str
    fqdn: str
    version: str
    components: ComponentTable
    transport: Transport
    services: dict[str, Service] = field(default_factory=dict)
    activation_policy: str = "Unrestricted"
    move_now: bool = False
    dag: str | None = None
    cluster_state: str = "Up"
    cluster_id: int = 0
    restart_failures: dict[str, int] = field(default_factory=dict)  # service -> failures left
    cluster_resume_failures: int = 0
    http_failures: int = 0
    copy_unhealthy: bool = False
    um: UnifiedMessaging | None = None  # the UM call router (2016 only)
    windows: Windows | None = None  # the default endpoint's view: files, registry, tasks, restarts
    edge: bool = False  # an Edge Transport server (what an Exchange update refuses)
    # What an Exchange update's pre-window checks read (docs/exchange-install.md): the Auth certificate's validity
    # (setup makes it valid for five years from the install), and the transport resources' back-pressure levels
    # (Low is normal; Medium or High is back pressure).
    auth_cert_not_before: datetime | None = None
    auth_cert_not_after: datetime | None = None
    resource_use: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, fqdn: str, version: str, installed_at: datetime) -> Server:
        server = cls(name, fqdn, version, ComponentTable(version, installed_at), Transport(name))
        server.auth_cert_not_before, server.auth_cert_not_after = installed_at, installed_at + timedelta(days=5 * 365)
        names: list[str] = []
        for role, services in ROLE_SERVICES.items():
            if role.startswith("Unified") and version != "2016":
                continue
            names.extend(s for s in services if s not in names)
        names += ["MSExchangeFrontEndTransport", "MSExchangeHM"]
        for name_ in names:
            server.services[name_] = Service(name_)
        for name_ in MANUAL_SERVICES:
            server.services[name_] = Service(name_, running=False, start_type="Manual")
        for name_ in ("WinMgmt", "RemoteRegistry"):
            server.services[name_] = Service(name_)
        server.windows = Windows.create(VERSIONS[version], installed_at + timedelta(days=30))
        for path, build, cu in PACKAGES.get(version, ()):
            server.windows.add_package(path, build, cu=cu)
        if version == "2016":
            server.um = UnifiedMessaging()
        return server

    def roles(self) -> list[str]:
        return [r for r in ROLE_SERVICES if not (r.startswith("Unified") and self.version != "2016")]

    @property
    def guid(self) -> str:
        return stable_guid("server", self.name)

    def version_string(self) -> str:
        # AdminDisplayVersion shows the CU only: a Security Update leaves it as it was (docs/exchange-install.md).
        major, minor, build, revision = self.windows.cu_build if self.windows else VERSIONS[self.version]
        return f"Version {major}.{minor} (Build {build}.{revision})"

    # --- object builders ----------------------------------------------------------------------------------
    def exchange_server_object(self) -> SimObject:
        """Get-ExchangeServer, shaped like the E19 capture (the properties a runbook reads)."""
        major, minor, build, revision = self.windows.cu_build if self.windows else VERSIONS[self.version]
        domain = self.fqdn.split(".", 1)[1] if "." in self.fqdn else "contoso.com"
        return SimObject(
            ("Microsoft.Exchange.Data.Directory.Management.ExchangeServer", *AD_PRESENTATION),
            {
                "Name": self.name,
                "DataPath": SimObject(("Microsoft.Exchange.Data.LocalLongFullPath", "Microsoft.Exchange.Data.LongPath",
                                       OBJECT), {}, "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Mailbox"),
                "Domain": domain,
                "Edition": SERVER_EDITION("Enterprise"),
                "ExchangeLegacyDN": f"/o=ContosoORG/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
                f"/cn=Configuration/cn=Servers/cn={self.name}",
                "ExchangeLegacyServerRole": 0,
                "Fqdn": self.fqdn,
                "IsHubTransportServer": True,
                "IsClientAccessServer": True,
                "IsExchange2007OrLater": True,
                "IsEdgeServer": False,
                "IsMailboxServer": True,
                "IsE14OrLater": True,
                "IsE15OrLater": True,
                "IsProvisionedServer": False,
                "IsUnifiedMessagingServer": self.version == "2016",
                "IsFrontendTransportServer": True,
                "OrganizationalUnit": f"{domain}/{self.name}",
                "AdminDisplayVersion": SimObject(
                    ("Microsoft.Exchange.Data.ServerVersion", OBJECT),
                    {"Major": major, "Minor": minor, "Build": build, "Revision": revision,
                     "FilePatchLevelDescription": None},
                    self.version_string(),
                ),
                "Site": ad_object_id("Default-First-Site-Name",
                                     "CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=contoso,DC=com",
                                     to_string="contoso.com/Configuration/Sites/Default-First-Site-Name"),
                "ServerRole": SERVER_ROLE("Edge" if self.edge else "Mailbox"),
                "ErrorReportingEnabled": True,
                "MitigationsEnabled": True,
                "StaticDomainControllers": string_list([]),
                "CurrentDomainControllers": string_list(["DC01.contoso.com"]),
                "CurrentGlobalCatalogs": string_list(["DC01.contoso.com"]),
                "CurrentConfigDomainController": "DC01.contoso.com",
                "Identity": server_id(self.name),
                "IsValid": True,
                "DistinguishedName": server_dn(self.name),
                "Guid": self.guid,
                "ObjectClass": string_list(["top", "server", "msExchExchangeServer"]),
                "OriginatingServer": "DC01.contoso.com",
                "ObjectState": OBJECT_STATE("Unchanged"),
            },
            self.name,
        )

    def mailbox_server_object(self) -> SimObject:
        """Get-MailboxServer, with the activation settings maintenance changes."""
        return SimObject(
            ("Microsoft.Exchange.Data.Directory.Management.MailboxServer", *AD_PRESENTATION),
            {
                "Name": self.name,
                "AutoDatabaseMountDial": MOUNT_DIAL("GoodAvailability"),
                "DatabaseAvailabilityGroup": ad_object_id(self.dag, dag_dn(self.dag)) if self.dag else None,
                "DatabaseCopyAutoActivationPolicy": ACTIVATION_POLICY(self.activation_policy),
                "DatabaseCopyActivationDisabledAndMoveNow": self.move_now,
                "FaultZone": "FaultZone1",
                "AutoDagServerConfigured": False,
                "MaximumActiveDatabases": None,
                "MaximumPreferredActiveDatabases": None,
                "AdminDisplayVersion": SimObject(("Microsoft.Exchange.Data.ServerVersion", OBJECT), {},
                                                 self.version_string()),
                "ServerRole": SERVER_ROLE("Edge" if self.edge else "Mailbox"),
                "ExchangeLegacyServerRole": 0,
                "Identity": server_id(self.name),
                "IsValid": True,
                "DistinguishedName": server_dn(self.name),
                "Guid": self.guid,
                "OriginatingServer": "DC01.contoso.com",
                "ObjectState": OBJECT_STATE("Unchanged"),
            },
            self.name,
        )

    def service_status(self, name: str) -> str:
        service = self.services[name]
        return "Running" if service.running else "Stopped"

    def service_object(self, name: str) -> SimObject:
        service = self.services[name]
        return SimObject(
            ("System.ServiceProcess.ServiceController", "System.ComponentModel.Component",
             "System.MarshalByRefObject", OBJECT),
            {
                "Name": name,
                "ServiceName": name,
                "DisplayName": DISPLAY_NAMES.get(name, name),
                "Status": SERVICE_STATUS(self.service_status(name)),
                "StartType": START_TYPE(service.start_type),
                "MachineName": ".",
                "CanStop": service.running,
                "ServiceType": "Win32OwnProcess",
            },
            name,
        )

    def service_health_objects(self) -> list[SimObject]:
        """Test-ServiceHealth: one ExchangeServicesStatus per role, as in the captures."""
        out = []
        for role in self.roles():
            required = ROLE_SERVICES[role]
            running = [s for s in required if self.services[s].running]
            not_running = [s for s in required if not self.services[s].running]
            out.append(
                SimObject(
                    ("Microsoft.Exchange.Monitoring.ExchangeServicesStatus", CONFIGURABLE, OBJECT),
                    {
                        "Role": role,
                        "RequiredServicesRunning": not not_running,
                        "ServicesNotRunning": string_list(not_running),
                        "ServicesRunning": string_list(running),
                        "Identity": None,
                        "IsValid": True,
                        "ObjectState": OBJECT_STATE("New"),
                    },
                    "Microsoft.Exchange.Monitoring.ExchangeServicesStatus",
                )
            )
        return out

    def cluster_node_object(self, cluster: str) -> SimObject:
        return SimObject(
            ("Microsoft.FailoverClusters.PowerShell.ClusterNode",
             "Microsoft.FailoverClusters.PowerShell.ClusterObject", OBJECT),
            {
                "Name": self.name,
                "NodeName": self.name,
                "State": CLUSTER_NODE_STATE(self.cluster_state),
                "DrainStatus": DRAIN_STATUS("Completed" if self.cluster_state == "Paused" else "NotInitiated"),
                "Id": str(self.cluster_id),
                "Cluster": cluster,
                "NodeWeight": 1,
                "DynamicWeight": 1 if self.cluster_state == "Up" else 0,
                "Description": "",
            },
            self.name,
        )

