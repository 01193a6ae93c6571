"""Exchange endpoint cmdlets: component states, servers, databases, DAGs, mailboxes, health tests."""
from __future__ import annotations

from datetime import timedelta
from xml.sax.saxutils import escape

from .binding import BOOL, EXCHANGE, INT, RESULT_SIZE, STR, SWITCH, cmdlet, enum_param
from .call import Call
from .components import DRAINABLE, REQUESTERS, SERVICE_STATE
from .databases import (
    ADMIN_GROUP_DN,
    Database,
    Mailbox,
    copy_status_object,
    dag_dn,
    dag_object,
    database_object,
    mailbox_object,
    move_result_object,
    server_dn,
    stable_guid,
)
from .errors import PARAMETER_BINDING_EXCEPTION, missing_mandatory
from .filters import FilterError, compile_filter
from .objects import OBJECT, EnumType, SimObject, ad_object_id, enum
from .servers import ACTIVATION_POLICY, MOUNT_DIAL, Server
from .transport import TRANSPORT_RESOURCES

ARGUMENT_EXCEPTION = "System.ArgumentException"
AM_EXCEPTION = "Microsoft.Exchange.Cluster.Replay.AmDbActionWrapperException"
SWITCHOVER_SECONDS = 15.0  # a lossless switchover of one database
DEFAULT_RESULT_SIZE = 1000
MOUNT_DIAL_OVERRIDE = EnumType(
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.DatabaseMountDialOverride",
    {"None": -1, "Lossless": 0, "BestEffort": 3, "BestAvailability": 5, "GoodAvailability": 6},
)


def _target_server(call: Call, identity: str | None) -> Server | None:
    """The server a cmdlet addresses; without an identity, the server the session is connected to."""
    if identity is None:
        return call.server
    server = call.sim.find_server(identity)
    if server is None:
        call.not_found(identity)
    return server


# --- component states -----------------------------------------------------------------------------------------


@cmdlet("Get-ServerComponentState", EXCHANGE, params={"Identity": STR, "Component": STR}, positional=("Identity",),
        mandatory=("Identity",))
def get_server_component_state(call: Call) -> None:
    server = _target_server(call, call.get("Identity"))
    if server is None:
        return
    table = server.components
    names = table.names
    if call.get("Component"):
        component = table.canonical(call.get("Component"))
        if component is None:
            # Exchange throws for a component that does not exist on the build (SDSM relies on it for
            # HighAvailability; UMCallRouter is gone on 2019).
            raise call.fail(f"Component '{call.get('Component')}' is not a valid server component on this server.",
                            exception=ARGUMENT_EXCEPTION, category="InvalidArgument",
                            target=call.get("Component"))
        names = (component,)

    for name in names:
        call.output(table.presentation(name, server_name=server.name, fqdn=server.fqdn,
                                       server_dn=server_dn(server.name)))


@cmdlet(
    "Set-ServerComponentState", EXCHANGE,
    params={"Identity": STR, "Component": STR, "State": enum_param(SERVICE_STATE), "Requester": enum_param(REQUESTERS),
            "LocalOnly": SWITCH, "RemoteOnly": SWITCH, "TimeOut": STR},
    positional=("Identity",), mandatory=("Identity", "Component", "State", "Requester"), should_process=True,
)  # fmt: skip
def set_server_component_state(call: Call) -> None:
    server = _target_server(call, call.get("Identity"))
    if server is None:
        return
    component = server.components.canonical(call.get("Component"))
    if component is None:
        raise call.fail(f"Component '{call.get('Component')}' is not a valid server component on this server.",
                        exception=ARGUMENT_EXCEPTION, category="InvalidArgument", target=call.get("Component"))
    state = call.get("State")
    if state == "Draining" and component not in DRAINABLE:
        # Only the transport components (and UMCallRouter on 2013/2016) implement Draining.
        raise call.fail(f"The state 'Draining' isn't supported for component '{component}'.",
                        exception=ARGUMENT_EXCEPTION, category="InvalidArgument", target=component)
    if call.get("WhatIf"):
        return
    local_only, remote_only = call.get("LocalOnly", False), call.get("RemoteOnly", False)
    server.components.set(component, state, call.get("Requester"), call.now,
                          local=not remote_only, remote=not local_only)
    call.sim.components_changed(server)


# --- servers ---------------------------------------------------------------------------------------------------


@cmdlet("Get-ExchangeServer", EXCHANGE, params={"Identity": STR, "Status": SWITCH}, positional=("Identity",))
def get_exchange_server(call: Call) -> None:
    if call.get("Identity") is None:
        call.output(*(s.exchange_server_object() for s in call.sim.servers.values()))
        return
    server = _target_server(call, call.get("Identity"))
    if server is not None:
        call.output(server.exchange_server_object())


@cmdlet("Get-MailboxServer", EXCHANGE, params={"Identity": STR, "Status": SWITCH}, positional=("Identity",))
def get_mailbox_server(call: Call) -> None:
    if call.get("Identity") is None:
        call.output(*(s.mailbox_server_object() for s in call.sim.servers.values()))
        return
    server = _target_server(call, call.get("Identity"))
    if server is not None:
        call.output(server.mailbox_server_object())


@cmdlet(
    "Set-MailboxServer", EXCHANGE,
    params={"Identity": STR, "DatabaseCopyAutoActivationPolicy": enum_param(ACTIVATION_POLICY),
            "DatabaseCopyActivationDisabledAndMoveNow": BOOL, "MaximumActiveDatabases": STR,
            "AutoDatabaseMountDial": enum_param(MOUNT_DIAL)},
    positional=("Identity",), mandatory=("Identity",), should_process=True,
)  # fmt: skip
def set_mailbox_server(call: Call) -> None:
    server = _target_server(call, call.get("Identity"))
    if server is None or call.get("WhatIf"):
        return
    if call.get("DatabaseCopyAutoActivationPolicy") is not None:
        server.activation_policy = call.get("DatabaseCopyAutoActivationPolicy")
    move_now = call.get("DatabaseCopyActivationDisabledAndMoveNow")
    if move_now is None:
        return
    server.move_now = move_now
    if not move_now:
        return
    # MoveNow asks Active Manager to move mounted databases off now, but only "if copies exist and are healthy",
    # and never onto servers that are Blocked. What cannot move stays mounted here.
    for db in [d for d in call.sim.databases.values() if d.active == server.name]:
        if not db.replicated:
            call.warn(f"Database '{db.name}' isn't replicated and remains mounted on server '{server.name}'.")
            continue
        target, reason = call.sim.move_target(db, exclude=server.name)
        if target is None:
            call.warn(f"Database '{db.name}' couldn't be moved off server '{server.name}'. {reason}")
            continue
        call.sim.advance(SWITCHOVER_SECONDS)
        db.activate(target)


# --- databases -------------------------------------------------------------------------------------------------


def _db_object(call: Call, db: Database, status: bool) -> SimObject:
    return database_object(db, status=status, fqdn_of=call.sim.fqdn_map(),
                           dag_dn=dag_dn(db.dag) if db.dag else None, guid=stable_guid("db", db.name))


@cmdlet("Get-MailboxDatabase", EXCHANGE,
        params={"Identity": STR, "Server": STR, "Status": SWITCH, "IncludePreExchange2013": SWITCH,
                "IncludeCorrupted": SWITCH, "DumpsterStatistics": SWITCH},
        positional=("Identity",))
def get_mailbox_database(call: Call) -> None:
    status = bool(call.get("Status"))
    databases = list(call.sim.databases.values())
    if call.get("Identity") is not None:
        db = call.sim.find_database(call.get("Identity"))
        if db is None:
            call.not_found(call.get("Identity"))
            return
        databases = [db]
    if call.get("Server") is not None:
        server = _target_server(call, call.get("Server"))
        if server is None:
            return
        databases = [db for db in databases if server.name in db.copies]
    call.output(*(_db_object(call, db, status) for db in databases))


def _copies_for(call: Call, identity: str) -> list[tuple[Database, str]] | None:
    db_name, _, server_part = identity.partition("\\")
    db = call.sim.find_database(db_name)
    if db is None:
        call.not_found(identity)
        return None
    if server_part in ("", "*"):
        return [(db, s) for s in db.copies]
    copy = db.copy_on(server_part)
    if copy is None:
        call.not_found(identity)
        return None
    return [(db, copy.server)]


@cmdlet("Get-MailboxDatabaseCopyStatus", EXCHANGE,
        params={"Identity": STR, "Server": STR, "Active": SWITCH, "Local": SWITCH, "ConnectionStatus": SWITCH,
                "ExtendedErrorInfo": SWITCH, "UseServerCache": SWITCH},
        positional=("Identity",))
def get_mailbox_database_copy_status(call: Call) -> None:
    pairs: list[tuple[Database, str]] = []
    if call.get("Identity") is not None:
        found = _copies_for(call, call.get("Identity"))
        if found is None:
            return
        pairs = found
    else:
        # Without -Identity or -Server the cmdlet reports the copies on the server it runs on.
        server = _target_server(call, call.get("Server")) if call.get("Server") is not None else call.server
        if server is None:
            return
        pairs = [(db, server.name) for db in call.sim.databases.values() if server.name in db.copies]
    if call.get("Active"):
        pairs = [(db, s) for db, s in pairs if db.active == s]
    fqdns = call.sim.fqdn_map()
    call.output(*(copy_status_object(db, db.copies[s], fqdn_of=fqdns, now=call.now) for db, s in pairs))


@cmdlet(
    "Move-ActiveMailboxDatabase", EXCHANGE,
    params={"Identity": STR, "Server": STR, "ActivatePreferredOnServer": STR, "ActivateOnServer": STR,
            "MoveComment": STR, "MountDialOverride": enum_param(MOUNT_DIAL_OVERRIDE),
            "SkipActiveCopyChecks": SWITCH, "SkipClientExperienceChecks": SWITCH, "SkipHealthChecks": SWITCH,
            "SkipLagChecks": SWITCH, "SkipMaximumActiveDatabasesChecks": SWITCH, "SkipCpuChecks": SWITCH,
            "SkipMoveSuppressionChecks": SWITCH, "MoveAllDatabasesOrNone": SWITCH, "TerminateOnWarning": SWITCH},
    positional=("Identity",), should_process=True,
)  # fmt: skip
def move_active_mailbox_database(call: Call) -> None:
    sim = call.sim
    moves: list[tuple[Database, str | None]] = []  # (database, preferred target)
    if call.get("Identity") is not None:
        db = sim.find_database(call.get("Identity"))
        if db is None:
            call.not_found(call.get("Identity"))
            return
        moves.append((db, call.get("ActivateOnServer")))
    elif call.get("Server") is not None:
        server = _target_server(call, call.get("Server"))
        if server is None:
            return
        moves += [(db, call.get("ActivateOnServer")) for db in sim.databases.values() if db.active == server.name]
    elif call.get("ActivatePreferredOnServer") is not None:
        server = _target_server(call, call.get("ActivatePreferredOnServer"))
        if server is None:
            return
        moves += [(db, server.name) for db in sim.databases.values()
                  if server.name in db.copies and db.copies[server.name].preference == 1 and db.active != server.name]
    else:
        raise missing_mandatory(call.cmdlet, ["Identity"])
    if call.get("WhatIf"):
        return
    skip_health = bool(call.get("SkipHealthChecks"))
    skip_lag = bool(call.get("SkipLagChecks"))
    for db, preferred in moves:
        start = db.active
        if not db.replicated:
            call.error(f"Database '{db.name}' has only one copy and can't be moved.", exception=AM_EXCEPTION,
                       category="InvalidOperation", target=db.name)
            continue
        if call.get("SkipMoveSuppressionChecks") and db.moves_refused:
            db.moves_refused = 0
        target, reason = sim.move_target(db, exclude=start, preferred=preferred, skip_health=skip_health,
                                         skip_lag=skip_lag)
        if target is None:
            call.error(reason, exception=AM_EXCEPTION, category="InvalidOperation", target=db.name)
            continue
        sim.advance(SWITCHOVER_SECONDS)
        db.activate(target)
        call.output(move_result_object(db, start, target, "Succeeded", None))


@cmdlet("Get-DatabaseAvailabilityGroup", EXCHANGE, params={"Identity": STR, "Status": SWITCH},
        positional=("Identity",))
def get_database_availability_group(call: Call) -> None:
    dags = list(call.sim.dags.values())
    if call.get("Identity") is not None:
        dag = call.sim.find_dag(call.get("Identity"))
        if dag is None:
            call.not_found(call.get("Identity"))
            return
        dags = [dag]
    for dag in dags:
        members = [call.sim.servers[m] for m in dag.members]
        stopped = [m.name for m in members if m.cluster_state == "Down"]
        # The task counts a Paused node as up (operational) and lists it in ServersInMaintenance too.
        operational = [m.name for m in members if m.cluster_state in ("Up", "Paused")]
        paused = [m.name for m in members if m.cluster_state == "Paused"]
        call.output(dag_object(dag, status=bool(call.get("Status")), operational=operational, paused=paused,
                               stopped=stopped, fqdn_of=call.sim.fqdn_map()))


# --- health ----------------------------------------------------------------------------------------------------


@cmdlet("Test-ServiceHealth", EXCHANGE, params={"Server": STR}, positional=("Server",))
def test_service_health(call: Call) -> None:
    server = _target_server(call, call.get("Server"))
    if server is not None:
        call.output(*server.service_health_objects())


_CHECK_RESULT_TYPES = ("Microsoft.Exchange.Management.SystemConfigurationTasks.ReplicationCheckResult", OBJECT)
_CHECK_OUTPUT_TYPES = ("Microsoft.Exchange.Management.SystemConfigurationTasks.ReplicationCheckOutputObject",
                       "Microsoft.Exchange.Data.ConfigurableObject", OBJECT)


def _check(server: Server, name: str, description: str, failure: str | None, warning: bool = False) -> SimObject:
    result = "Passed" if failure is None else ("Warning" if warning else "Failed")
    return SimObject(
        _CHECK_OUTPUT_TYPES,
        {
            "Server": server.name,
            "Check": name,
            "CheckDescription": description,
            "Result": SimObject(_CHECK_RESULT_TYPES,
                                {"Value": enum("Microsoft.Exchange.Management.SystemConfigurationTasks."
                                               "ReplicationCheckResultEnum", result,
                                               {"Passed": 0, "Warning": 1, "Failed": 2}[result])},
                                result),
            "Error": failure,
            "Identity": None,
            "IsValid": True,
        },
        None,
    )


@cmdlet("Test-ReplicationHealth", EXCHANGE,
        params={"Identity": STR, "MonitoringContext": BOOL, "ActiveDirectoryTimeout": INT,
                "TransientEventSuppressionWindow": INT, "OutputObjects": SWITCH},
        positional=("Identity",))
def test_replication_health(call: Call) -> None:
    server = _target_server(call, call.get("Identity"))
    if server is None:
        return
    if server.dag is None:
        call.error(f"The server '{server.name}' isn't a member of a database availability group.",
                   exception="Microsoft.Exchange.Monitoring.ReplicationCheckException", category="InvalidOperation",
                   target=server.name)
        return
    sim = call.sim
    dag = sim.dags[server.dag]
    members = [sim.servers[m] for m in dag.members]
    down = [m.name for m in members if m.cluster_state == "Down"]
    mine = [(db, db.copies[server.name]) for db in sim.databases.values() if server.name in db.copies]
    passive = [(db, c) for db, c in mine if db.active != server.name]
    redundancy = [db.name for db, _ in mine
                  if sum(1 for c in db.copies.values() if c.status in ("Mounted", "Healthy")) < 2]
    slow_copy = [f"{db.name}\\{server.name}" for db, c in passive if c.copy_queue > 10]
    slow_replay = [f"{db.name}\\{server.name}" for db, c in passive if c.replay_queue > 100 and not c.lagged]
    suspended = [f"{db.name}\\{server.name}" for db, c in mine if "Suspended" in c.status]
    failed = [f"{db.name}\\{server.name}" for db, c in mine if c.status.startswith("Failed")]
    checks = [
        ("ClusterService", "Checks if the cluster service is healthy.",
         None if server.cluster_state != "Down" else "The cluster service on server is not running."),
        ("ReplayService", "Checks if the Microsoft Exchange Replication service is running.",
         None if server.services["MSExchangeRepl"].running else "The Microsoft Exchange Replication service is "
                                                                   "not running."),
        ("ActiveManager", "Checks that Active Manager is running and has a valid role.", None),
        ("TasksRpcListener", "Checks that the Tasks RPC Listener is running and is responding to remote requests.",
         None),
        ("TcpListener", "Checks that the TCP Listener is running and is responding to requests.", None),
        ("ServerLocatorService", "Checks that the Server Locator Service is running and is responding to requests.",
         None),
        ("DagMembersUp", "Verifies that the members of a database availability group are up and running.",
         None if not down else "The following servers in the DAG are down: " + ", ".join(down)),
        ("ClusterNetwork", "Checks that the networks are healthy.", None),
        ("QuorumGroup", "Checks that the quorum and witness for the DAG is healthy.", None),
        ("FileShareQuorum", "Verifies that the path used for the file share witness can be reached.", None),
        ("DatabaseRedundancy", "Checks whether databases have sufficient redundancy.",
         None if not redundancy else "Databases with less than two healthy copies: " + ", ".join(redundancy)),
        ("DatabaseAvailability", "Checks whether databases have sufficient availability.", None),
        ("DBCopySuspended", "Checks whether 'suspended' database copies exist.",
         None if not suspended else "Suspended copies: " + ", ".join(suspended)),
        ("DBCopyFailed", "Checks whether 'failed' database copies exist.",
         None if not failed else "Failed copies: " + ", ".join(failed)),
        ("DBInitializing", "Checks whether 'initializing' database copies exist.", None),
        ("DBDisconnected", "Checks whether 'disconnected' database copies exist.", None),
        ("DBLogCopyKeepingUp", "Verifies log copying and inspection by the passive databases.",
         None if not slow_copy else "Copy queue length too high for: " + ", ".join(slow_copy)),
        ("DBLogReplayKeepingUp", "Verifies replay activity for the passive databases.",
         None if not slow_replay else "Replay queue length too high for: " + ", ".join(slow_replay)),
    ]
    call.output(*(_check(server, *check) for check in checks))


# --- mailboxes -------------------------------------------------------------------------------------------------


# The properties Get-Mailbox -SortBy accepts (Microsoft's Get-Mailbox reference); ascending, one at a time.
MAILBOX_SORT_PROPERTIES = ("Name", "DisplayName", "Alias", "Office", "ServerLegacyDN")


@cmdlet("Get-Mailbox", EXCHANGE,
        params={"Identity": STR, "Server": STR, "Database": STR, "ResultSize": RESULT_SIZE, "Filter": STR,
                "SortBy": STR},
        positional=("Identity",))
def get_mailbox(call: Call) -> None:
    sim = call.sim
    databases = list(sim.databases.values())
    if call.get("Server") is not None:
        server = _target_server(call, call.get("Server"))
        if server is None:
            return
        databases = [db for db in databases if db.active == server.name]
    if call.get("Database") is not None:
        db = sim.find_database(call.get("Database"))
        if db is None:
            call.error(f"Couldn't find database \"{call.get('Database')}\". Make sure you have typed it correctly.",
                       exception="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                       category="ObjectNotFound", target=call.get("Database"))
            return
        databases = [d for d in databases if d is db]
    mailboxes = [(mb, db) for db in databases for mb in db.mailboxes]
    if call.get("Identity") is not None:
        wanted = call.get("Identity").lower()
        mailboxes = [(mb, db) for mb, db in mailboxes
                     if wanted in (mb.name.lower(), mb.alias.lower(), f"{mb.alias}@contoso.com")]
        if not mailboxes:
            call.not_found(call.get("Identity"))
            return
    objects = [mailbox_object(mb, server=db.active) for mb, db in mailboxes]
    # As in Exchange (a sorted, filtered directory search): filter, then sort, then cut at ResultSize - so a
    # caller can page with -SortBy <key> -Filter "<key> -ge '<last key>'" -ResultSize <n>.
    if call.get("Filter"):
        objects = _filter_mailboxes(call, objects)
    if call.get("SortBy") is not None:
        objects = _sort_mailboxes(call, objects)
    limit = call.get("ResultSize", DEFAULT_RESULT_SIZE) if "ResultSize" in call.args else DEFAULT_RESULT_SIZE
    if limit is not None and len(objects) > limit:
        objects = objects[:limit]
        if "ResultSize" not in call.args:
            call.warn(f"By default, only the first {DEFAULT_RESULT_SIZE} items are returned. Use the ResultSize "
                      "parameter to specify the number of items returned. To return all items, specify "
                      "\"-ResultSize Unlimited\".")
    call.output(*objects)


def _filter_mailboxes(call: Call, objects: list[SimObject]) -> list[SimObject]:
    """The OPATH -Filter, over the mailbox's properties (case-insensitive text comparison, as AD compares)."""

    text = call.get("Filter")
    properties = set(objects[0].props) if objects else set(mailbox_object(Mailbox("x", "x", "x"), server="x").props)
    try:
        predicate = compile_filter(text, properties)
    except FilterError as exc:
        # Exchange parses the filter while binding the parameter: a terminating binding error.
        raise call.fail(f"Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"{exc}\"",
                        exception=PARAMETER_BINDING_EXCEPTION, category="InvalidArgument", target=text) from None
    return [o for o in objects if predicate(o.props)]


def _sort_mailboxes(call: Call, objects: list[SimObject]) -> list[SimObject]:
    wanted = str(call.get("SortBy")).strip()
    key = next((p for p in MAILBOX_SORT_PROPERTIES if p.lower() == wanted.lower()), None)
    if key is None:
        raise call.fail(f"The value \"{wanted}\" of the SortBy parameter isn't valid. Valid values are: "
                        f"{', '.join(MAILBOX_SORT_PROPERTIES)}.", exception=ARGUMENT_EXCEPTION,
                        category="InvalidArgument", target=wanted)
    # Stable: mailboxes that share the key keep their directory order.
    return sorted(objects, key=lambda o: str(_plain_text(o.props.get(key))).lower())


def _plain_text(value: object) -> str:
    if isinstance(value, SimObject):
        return value.to_string
    return "" if value is None else str(value)


# --- what an Exchange update checks before its window (docs/exchange-install.md) ---------------------------------

AUTH_THUMBPRINT = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
AUTH_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"
AUTH_VALIDITY = timedelta(days=5 * 365)  # the Auth certificate setup creates is valid for five years
REQUEST_STATUS = EnumType(
    "Microsoft.Exchange.Data.Directory.Recipient.RequestStatus",
    {"None": 0, "Queued": 1, "InProgress": 2, "AutoSuspended": 3, "CompletionInProgress": 4, "Synced": 5,
     "Completed": 10, "CompletedWithWarning": 11, "Suspended": 98, "Failed": 99},
)


def _database_id(name: str) -> SimObject:
    return ad_object_id(name, f"CN={name},CN=Databases,{ADMIN_GROUP_DN}", guid=stable_guid("db", name))


@cmdlet("Get-MoveRequest", EXCHANGE,
        params={"Identity": STR, "SourceDatabase": STR, "TargetDatabase": STR, "MoveStatus": STR, "BatchName": STR,
                "ResultSize": RESULT_SIZE},
        positional=("Identity",))
def get_move_request(call: Call) -> None:
    rows = call.sim.move_requests
    for name in ("SourceDatabase", "TargetDatabase"):
        if call.get(name) is not None:
            rows = [r for r in rows if r[name].lower() == str(call.get(name)).lower()]
    if call.get("MoveStatus") is not None:
        rows = [r for r in rows if r["Status"].lower() == str(call.get("MoveStatus")).lower()]
    call.output(*(SimObject(("Microsoft.Exchange.Management.RecipientTasks.MoveRequest", OBJECT),
                            {"DisplayName": r["DisplayName"], "Alias": r["Alias"], "Identity": r["DisplayName"],
                             "Status": REQUEST_STATUS(r["Status"]),
                             "SourceDatabase": _database_id(r["SourceDatabase"]),
                             "TargetDatabase": _database_id(r["TargetDatabase"]),
                             "BatchName": r.get("BatchName", "")}, r["DisplayName"])
                  for r in rows))


@cmdlet("Get-AuthConfig", EXCHANGE, params={})
def get_auth_config(call: Call) -> None:
    call.output(SimObject(("Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig", OBJECT),
                          {"CurrentCertificateThumbprint": AUTH_THUMBPRINT, "PreviousCertificateThumbprint": "",
                           "NextCertificateThumbprint": "", "NextCertificateEffectiveDate": None,
                           "ServiceName": "00000002-0000-0ff1-ce00-000000000000", "Realm": ""}, "Auth Configuration"))


@cmdlet("Get-ExchangeCertificate", EXCHANGE, params={"Thumbprint": STR, "Identity": STR, "Server": STR},
        positional=("Thumbprint",))
def get_exchange_certificate(call: Call) -> None:
    server = _target_server(call, call.get("Server"))
    if server is None:
        return
    wanted = call.get("Thumbprint") or call.get("Identity")
    if wanted is not None and str(wanted).upper() != AUTH_THUMBPRINT:
        call.not_found(str(wanted))
        return
    not_after = server.auth_cert_not_after or call.now + AUTH_VALIDITY
    call.output(SimObject(("System.Security.Cryptography.X509Certificates.X509Certificate2", OBJECT),
                          {"Thumbprint": AUTH_THUMBPRINT, "Subject": AUTH_SUBJECT, "Issuer": AUTH_SUBJECT,
                           "FriendlyName": "Microsoft Exchange Server Auth Certificate", "Services": "SMTP",
                           "NotBefore": server.auth_cert_not_before or not_after - AUTH_VALIDITY, "NotAfter": not_after,
                           "Status": "Valid" if not_after > call.now else "DateInvalid"},
                          f"[Subject]\n  {AUTH_SUBJECT}\n\n[Thumbprint]\n  {AUTH_THUMBPRINT}"))


@cmdlet("Get-ExchangeDiagnosticInfo", EXCHANGE,
        params={"Server": STR, "Process": STR, "Component": STR, "Argument": STR}, mandatory=("Server",))
def get_exchange_diagnostic_info(call: Call) -> None:
    server = _target_server(call, call.get("Server"))
    if server is None:
        return
    if str(call.get("Process") or "").lower() != "edgetransport" or \
            str(call.get("Component") or "").lower() != "resourcethrottling":
        call.error(f"The component '{call.get('Component')}' of process '{call.get('Process')}' is not simulated.",
                   exception=ARGUMENT_EXCEPTION, category="InvalidArgument")
        return
    meters = "".join(f"<ResourceMeter><Resource>{escape(name)}</Resource>"
                     f"<CurrentResourceUse>{server.resource_use.get(name, 'Low')}</CurrentResourceUse>"
                     f"<PreviousResourceUse>Low</PreviousResourceUse></ResourceMeter>"
                     for name in TRANSPORT_RESOURCES)
    xml = (f"<Diagnostics><ProcessInfo><id>4120</id><serverName>{server.name}</serverName>"
           f"<processName>EdgeTransport</processName></ProcessInfo><Components><ResourceThrottling>"
           f"<ResourceTracker>{meters}</ResourceTracker></ResourceThrottling></Components></Diagnostics>")
    call.output(SimObject(("Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeDiagnosticInfoResult",
                           OBJECT), {"Server": server.name, "Result": xml}, xml))
