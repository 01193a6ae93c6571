"""Mailbox databases, their copies, mailboxes and DAGs - and the Active Manager rules for moving them."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .objects import (
    AD_CONFIGURATION,
    CONFIGURABLE,
    MVP_ADOBJECTID_TYPES,
    OBJECT,
    EnumType,
    SimList,
    SimObject,
    ad_object_id,
    byte_size,
    string_list,
)

ORG_DN = "CN=ContosoORG,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,DC=com"
ADMIN_GROUP_DN = f"CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,{ORG_DN}"
# Above this many logs a passive copy is too far behind for a lossless switchover (Active Manager's check).
MAX_COPY_QUEUE_FOR_MOVE = 10
MAX_REPLAY_QUEUE_FOR_MOVE = 100

COPY_STATUS = EnumType(
    "Microsoft.Exchange.Management.SystemConfigurationTasks.CopyStatus",
    {
        "Unknown": 0, "Initializing": 1, "Resynchronizing": 2, "DisconnectedAndResynchronizing": 3,
        "DisconnectedAndHealthy": 4, "Healthy": 5, "Failed": 6, "FailedAndSuspended": 7, "Suspended": 8,
        "Seeding": 9, "Mounting": 10, "Mounted": 11, "Dismounting": 12, "Dismounted": 13,
        "NonExchangeReplication": 14, "SeedingSource": 15, "Misconfigured": 16, "ServiceDown": 17,
        "SinglePageRestore": 18,
    },
)  # fmt: skip
CONTENT_INDEX_STATE = EnumType(
    "Microsoft.Exchange.Management.SystemConfigurationTasks.ContentIndexStatusType",
    {"Unknown": 0, "Healthy": 1, "Crawling": 2, "Failed": 3, "Seeding": 4, "FailedAndSuspended": 5, "Suspended": 6,
     "Disabled": 7, "AutoSuspended": 8, "HealthyAndUpgrading": 9, "DiskUnavailable": 10, "NotApplicable": 11},
)
REPLICATION_TYPE = EnumType("Microsoft.Exchange.Data.Directory.SystemConfiguration.ReplicationType",
                            {"None": 0, "Remote": 1})
MOVE_STATUS = EnumType("Microsoft.Exchange.Management.SystemConfigurationTasks.MoveStatus",
                       {"Unknown": 0, "Succeeded": 1, "Failed": 2, "Warning": 3, "Skipped": 4})
RECIPIENT_TYPE_DETAILS = EnumType("Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails",
                                  {"UserMailbox": 1, "SharedMailbox": 4, "RoomMailbox": 16})
DATACENTER_ACTIVATION_MODE = EnumType(
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.DatacenterActivationModeOption", {"Off": 0, "DagOnly": 1}
)
COPY_STATUS_TYPES = (
    "Microsoft.Exchange.Management.SystemConfigurationTasks.DatabaseCopyStatusEntry",
    CONFIGURABLE,
    OBJECT,
)
MAILBOX_DATABASE_TYPES = (
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.MailboxDatabase",
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.Database",
    *AD_CONFIGURATION,
)
MOVE_RESULT_TYPES = ("Microsoft.Exchange.Management.SystemConfigurationTasks.DatabaseMoveResult", OBJECT)
DAG_TYPES = ("Microsoft.Exchange.Data.Directory.SystemConfiguration.DatabaseAvailabilityGroup", *AD_CONFIGURATION)
# Plain arrays on the DAG object, filled by the task (not AD multi-valued properties).
ADOBJECTID_ARRAY_TYPES = ("Microsoft.Exchange.Data.Directory.ADObjectId[]", "System.Array", OBJECT)
DEFERRED_RECOVERY_TYPES = ("Microsoft.Exchange.Data.Directory.SystemConfiguration.DeferredFailoverEntry[]",
                           "System.Array", OBJECT)
MAILBOX_TYPES = (
    "Microsoft.Exchange.Data.Directory.Management.Mailbox",
    "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
    "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    CONFIGURABLE,
    OBJECT,
)


def stable_guid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "exmaint-sim:" + "/".join(parts)))


def server_dn(name: str) -> str:
    return f"CN={name},CN=Servers,{ADMIN_GROUP_DN}"


def server_id(name: str) -> SimObject:
    return ad_object_id(name, server_dn(name), guid=stable_guid("server", name))


@dataclass
class Copy:
    server: str
    preference: int
    status: str = "Healthy"
    copy_queue: int = 0
    replay_queue: int = 0
    lagged: bool = False


@dataclass
class Mailbox:
    name: str
    alias: str
    database: str


@dataclass
class Database:
    name: str
    copies: dict[str, Copy]  # server -> copy, in activation-preference order
    active: str
    last_full: datetime | None
    last_incremental: datetime | None
    last_differential: datetime | None = None
    last_copy: datetime | None = None
    backup_in_progress: bool = False
    dag: str | None = None
    size: int = 12 * (1 << 30)
    mailboxes: list[Mailbox] = field(default_factory=list)
    moves_refused: int = 0  # db-move-refused fault: how many more moves fail (-1 = always)

    @property
    def replicated(self) -> bool:
        return len(self.copies) > 1

    def copy_on(self, server: str) -> Copy | None:
        return next((c for s, c in self.copies.items() if s.lower() == server.lower()), None)

    def activate(self, target: str) -> None:
        """Switch the active copy: the old one becomes a healthy passive, the new one mounts."""
        old = self.copies[self.active]
        old.status = "Healthy"
        new = self.copies[target]
        new.status = "Mounted"
        new.copy_queue = new.replay_queue = 0
        self.active = target


@dataclass
class Dag:
    name: str
    members: list[str]
    primary_active_manager: str
    witness_server: str = "FS01.contoso.com"
    pam_hold: float | None = None  # pam-stuck: seconds the role stays on a paused node (< 0: until moved by hand)
    pam_move_due: datetime | None = None


def copy_status_object(db: Database, copy: Copy, *, fqdn_of: dict[str, str], now: datetime) -> SimObject:
    """A DatabaseCopyStatusEntry (Get-MailboxDatabaseCopyStatus)."""
    name = f"{db.name}\\{copy.server}"
    active = copy.server == db.active
    lag = "00:00:00" if not copy.lagged else "7.00:00:00"
    return SimObject(
        COPY_STATUS_TYPES,
        {
            "Id": name,
            "Name": name,
            "DatabaseName": db.name,
            "Status": COPY_STATUS(copy.status),
            "InstanceStartTime": now - timedelta(days=3),
            "LastStatusTransitionTime": now - timedelta(days=3),
            "MailboxServer": copy.server,
            "ActiveDatabaseCopy": db.active.lower(),
            "ActiveCopy": active,
            "ActivationPreference": copy.preference,
            "StatusRetrievedTime": now,
            "WorkerProcessId": 4242 if active else None,
            "ActivationSuspended": copy.status in ("Suspended", "FailedAndSuspended"),
            "ActionInitiator": "Unknown",
            "ErrorMessage": None,
            "ErrorEventId": None,
            "ExtendedErrorInfo": None,
            "SuspendComment": None,
            "SinglePageRestore": 0,
            "ContentIndexState": CONTENT_INDEX_STATE("Healthy"),
            "ContentIndexErrorMessage": None,
            "CopyQueueLength": copy.copy_queue,
            "ReplayQueueLength": copy.replay_queue,
            "LatestAvailableLogTime": now - timedelta(seconds=20),
            "LastCopyNotificationedLogTime": now - timedelta(seconds=20),
            "LastCopiedLogTime": now - timedelta(seconds=20 + 30 * copy.copy_queue),
            "LastInspectedLogTime": now - timedelta(seconds=20 + 30 * copy.copy_queue),
            "LastReplayedLogTime": now - timedelta(seconds=20 + 30 * copy.replay_queue),
            "LatestFullBackupTime": db.last_full,
            "LatestIncrementalBackupTime": db.last_incremental,
            "LatestDifferentialBackupTime": db.last_differential,
            "LatestCopyBackupTime": db.last_copy,
            "SnapshotBackup": bool(db.last_full),
            "DatabaseSeedStatus": None,
            "DiskFreeSpacePercent": 61,
            "ReplayLagStatus": SimObject(
                ("Microsoft.Exchange.Management.SystemConfigurationTasks.ReplayLagStatus", OBJECT),
                {"Enabled": copy.lagged},
                f"Enabled:{copy.lagged}; PlayDownReason:None; ReplaySuspendReason:None; Percentage:0; "
                f"Configured:{lag}; MaxDelay:1.00:00:00; Actual:{lag}",
            ),
            "DatabaseVolumeMountPoint": "C:\\",
            "DatabaseVolumeName": "\\\\?\\Volume{4a3d7b1e-0000-0000-0000-100000000000}\\",
            "IncomingLogCopyingNetwork": None if active or not db.replicated else f"{db.dag}\\MapiDagNetwork",
            "ReplicationIsInBlockMode": False,
            "MaximumLogsToReplay": None,
            "Identity": name,
            "IsValid": True,
        },
        name,
    )


def database_object(
    db: Database, *, status: bool, fqdn_of: dict[str, str], dag_dn: str | None, guid: str
) -> SimObject:
    """A MailboxDatabase (Get-MailboxDatabase); the backup and mount properties are only filled with -Status."""
    dn = f"CN={db.name},CN=Databases,{ADMIN_GROUP_DN}"
    master = (
        ad_object_id(db.dag, dag_dn) if db.dag and dag_dn else server_id(db.active)
    )
    mounted = db.copies[db.active].status == "Mounted"
    return SimObject(
        MAILBOX_DATABASE_TYPES,
        {
            "Name": db.name,
            "Server": server_id(db.active),
            "Servers": SimList(MVP_ADOBJECTID_TYPES, [server_id(s) for s in db.copies]),
            "MasterServerOrAvailabilityGroup": master,
            "ReplicationType": REPLICATION_TYPE("Remote" if db.replicated else "None"),
            "Recovery": False,
            "Mounted": mounted if status else None,
            "MountedOnServer": fqdn_of[db.active] if status and mounted else None,
            "BackupInProgress": db.backup_in_progress if status else None,
            "LastFullBackup": db.last_full if status else None,
            "LastIncrementalBackup": db.last_incremental if status else None,
            "LastDifferentialBackup": db.last_differential if status else None,
            "LastCopyBackup": db.last_copy if status else None,
            "SnapshotLastFullBackup": (db.last_full is not None) if status else None,
            "SnapshotLastIncrementalBackup": (db.last_incremental is not None) if status else None,
            "SnapshotLastDifferentialBackup": None,
            "SnapshotLastCopyBackup": None,
            "DatabaseSize": byte_size(db.size) if status else None,
            "AvailableNewMailboxSpace": byte_size(db.size // 20) if status else None,
            "EdbFilePath": f"C:\\ExchangeDatabases\\{db.name}\\{db.name}.edb",
            "LogFolderPath": f"C:\\ExchangeDatabases\\{db.name}\\Logs",
            "CircularLoggingEnabled": False,
            "ProhibitSendReceiveQuota": byte_size(0, unlimited=True),
            "Identity": ad_object_id(db.name, dn, guid=guid),
            "Guid": guid,
            "DistinguishedName": dn,
            "IsValid": True,
        },
        db.name,
    )


def mailbox_object(mailbox: Mailbox, *, server: str) -> SimObject:
    ident = f"contoso.com/Users/{mailbox.name}"
    guid = stable_guid("mailbox", mailbox.alias)
    smtp = f"{mailbox.alias}@contoso.com"
    return SimObject(
        MAILBOX_TYPES,
        {
            "Name": mailbox.name,
            "Alias": mailbox.alias,
            "DisplayName": mailbox.name,
            "PrimarySmtpAddress": SimObject(("Microsoft.Exchange.Data.SmtpAddress", "System.ValueType", OBJECT), {},
                                            smtp),
            "UserPrincipalName": smtp,
            "WindowsEmailAddress": smtp,
            "EmailAddresses": string_list([f"SMTP:{smtp}"]),
            "Database": ad_object_id(mailbox.database, f"CN={mailbox.database},CN=Databases,{ADMIN_GROUP_DN}"),
            "ServerName": server.lower(),
            "RecipientTypeDetails": RECIPIENT_TYPE_DETAILS("UserMailbox"),
            "ExchangeGuid": guid,
            "Guid": guid,
            "Identity": ad_object_id(mailbox.name, f"CN={mailbox.name},CN=Users,DC=contoso,DC=com", to_string=ident),
            "IsValid": True,
        },
        mailbox.name,
    )


def move_result_object(db: Database, start: str, end: str, status: str, error: str | None) -> SimObject:
    return SimObject(
        MOVE_RESULT_TYPES,
        {
            "Identity": db.name,
            "ActiveServerAtStart": start.lower(),
            "ActiveServerAtEnd": end.lower(),
            "Status": MOVE_STATUS(status),
            "NumberOfLogsLost": 0 if status == "Succeeded" else None,
            "RecoveryPointObjective": None,
            "MountStatusAtMoveStart": "Mounted",
            "MountStatusAtMoveEnd": "Mounted",
            "ErrorMessage": error,
        },
        db.name,
    )


def dag_object(dag: Dag, *, status: bool, operational: list[str], paused: list[str], stopped: list[str],
               fqdn_of: dict[str, str]) -> SimObject:
    """A DatabaseAvailabilityGroup. With -Status the task asks the cluster: OperationalServers are the nodes Up or
    Paused, ServersInMaintenance the Paused ones, PrimaryActiveManager the owner of the cluster group; without it
    they are blank."""
    dn = dag_dn(dag.name)
    return SimObject(
        DAG_TYPES,
        {
            "Name": dag.name,
            "Servers": SimList(MVP_ADOBJECTID_TYPES, [server_id(s) for s in dag.members]),
            "WitnessServer": dag.witness_server,
            "WitnessDirectory": f"C:\\DAGFileShareWitnesses\\{dag.name}.contoso.com",
            "DatacenterActivationMode": DATACENTER_ACTIVATION_MODE("Off"),
            "StoppedMailboxServers": string_list([fqdn_of[s] for s in stopped]),
            "StartedMailboxServers": string_list([fqdn_of[s] for s in dag.members if s not in stopped]),
            "OperationalServers": SimList(ADOBJECTID_ARRAY_TYPES, [server_id(s) for s in operational])
            if status else None,
            "PrimaryActiveManager": server_id(dag.primary_active_manager) if status else None,
            "ServersInMaintenance": SimList(ADOBJECTID_ARRAY_TYPES, [server_id(s) for s in paused]) if status else None,
            "ServersInDeferredRecovery": SimList(DEFERRED_RECOVERY_TYPES, []) if status else None,
            "ThirdPartyReplication": "Disabled",
            "PreferenceMoveFrequency": "01:00:00",
            "Identity": ad_object_id(dag.name, dn),
            "IsValid": True,
        },
        dag.name,
    )


def dag_dn(name: str) -> str:
    return f"CN={name},CN=Database Availability Groups,{ADMIN_GROUP_DN}"
