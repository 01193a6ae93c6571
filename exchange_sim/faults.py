"""Named faults that put a simulated server into a state real maintenance runs meet.

Inject from code (``sim.inject("queue-stuck", "EX01", queue="fabrikam.com")``) or from a CLI string
``NAME@SERVER[:N]`` where N fills the fault's count option (``unreachable@EX01:3`` = the next 3 requests fail).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from .transport import TRANSPORT_RESOURCES
from .windows import CBS_REBOOT, EXSETUP, SESSION_MANAGER, key

if TYPE_CHECKING:
    from .model import SimulatedExchange
    from .servers import Server
    from .transport import Queue


class FaultSpec(NamedTuple):
    name: str
    server: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Fault:
    name: str
    apply: Callable[[SimulatedExchange, Server, dict[str, Any]], None]
    count_option: str | None = None  # what ":N" sets
    doc: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


FAULTS: dict[str, Fault] = {}


def _fault(name: str, *, count_option: str | None = None, doc: str = "") -> Callable:
    def register(apply: Callable[[SimulatedExchange, Server, dict[str, Any]], None]) -> Callable:
        FAULTS[name] = Fault(name, apply, count_option, doc)
        return apply

    return register


def parse_fault(spec: str) -> FaultSpec:
    """Parse ``NAME@SERVER[:N]``; raises ValueError for malformed text or unknown fault names."""
    text = spec.strip()
    if "@" not in text:
        raise ValueError(f"fault {spec!r} must look like NAME@SERVER[:N]")
    name, _, rest = text.partition("@")
    server, _, count = rest.partition(":")
    name = name.strip().lower()
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
    if not server.strip():
        raise ValueError(f"fault {spec!r} names no server")
    options: dict[str, Any] = {}
    if count:
        if FAULTS[name].count_option is None:
            raise ValueError(f"fault {name!r} takes no count")
        try:
            options[FAULTS[name].count_option] = int(count)
        except ValueError:
            raise ValueError(f"fault {spec!r}: count must be an integer") from None
    return FaultSpec(name, server.strip(), options)


def _databases_on(sim: SimulatedExchange, server: Server, options: dict[str, Any], *, active_only: bool = True):
    wanted = options.get("database")
    for db in sim.databases.values():
        if wanted and db.name.lower() != str(wanted).lower():
            continue
        if (db.active == server.name) if active_only else (server.name in db.copies):
            yield db


@_fault("backup-stale", doc="the last full backup is days old (option days=9) and no incremental since")
def _backup_stale(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    now = sim.clock.now()
    for db in _databases_on(sim, server, options, active_only=False):
        db.last_full = now - timedelta(days=options.get("days", 9)) if not options.get("never") else None
        db.last_incremental = None
        db.last_differential = None


@_fault("backup-in-progress", doc="BackupInProgress is True on the server's databases")
def _backup_in_progress(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    for db in _databases_on(sim, server, options, active_only=False):
        db.backup_in_progress = True


def _delivery_queue(server: Server, wanted: str) -> Queue:
    """The delivery queue named by hop or id; by default the external one."""
    wanted = wanted.lower()
    candidates = [
        q for q in server.transport.queues.values()
        if q.drains and q.queue_id != "Submission"
        and (not wanted or wanted in (q.next_hop.lower(), q.queue_id.lower()))
    ]
    if not candidates:
        raise ValueError(f"no delivery queue on {server.name} matches {wanted!r}")
    # Prefer the external hop: a smart host or remote domain that stopped answering is the usual stuck queue.
    return next((q for q in candidates if q.external), candidates[0])


@_fault("queue-stuck", doc="a delivery queue in Retry that never drains and Redirect-Message cannot empty")
def _queue_stuck(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    queue = _delivery_queue(server, str(options.get("queue", "")))
    queue.stuck = True
    queue.status = "Retry"
    queue.last_error = options.get(
        "error",
        "451 4.4.0 Primary target IP address responded with: \"421 4.4.2 Connection dropped.\" Attempted failover "
        "to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all "
        "alternate hosts. The last endpoint attempted was 192.0.2.25:25",
    )
    if options.get("messages"):
        server.transport.add_messages(queue, int(options["messages"]), sim.clock.now())


@_fault("queue-retry", count_option="every",
        doc="a delivery queue in Retry whose hop refuses mail; it grows by one message every N s (default 10; 0 = "
            "it does not grow) while transport accepts mail (options queue=<hop or id>, default the external hop; "
            "messages=N already queued)")
def _queue_retry(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    # Growth first: a stuck queue no longer counts as a delivery queue that drains, and queued messages start it.
    _delivery_queue(server, str(options.get("queue", ""))).grows_every = float(options.get("every", 10))
    _queue_stuck(sim, server, {"error": (
        "451 4.4.0 Primary target IP address responded with: \"454 4.7.5 Certificate validation failure.\" Attempted "
        "failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery "
        "failed to all alternate hosts."), **options})


@_fault("queue-suspended", doc="a queue an admin suspended (option queue=<hop or id>, default the Submission queue)")
def _queue_suspended(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    wanted = str(options.get("queue", "Submission")).lower()
    queue = next((q for q in server.transport.queues.values() if wanted in (q.next_hop.lower(), q.queue_id.lower())),
                 None)
    if queue is None:
        raise ValueError(f"no queue on {server.name} matches {wanted!r}")
    queue.status = "Suspended"


@_fault("queue-slow", count_option="polls", doc="queues make no progress until N Get-Queue polls (default 5)")
def _queue_slow(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    server.transport.slow_polls_remaining = int(options.get("polls", 5))


@_fault("poison-message", count_option="messages", doc="a Poison queue holding N messages (default 1)")
def _poison(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    transport = server.transport
    queue = transport.queues.get("Poison")
    if queue is None:
        queue = transport.add_queue("Undefined", "Poison Message", 0, sim.clock.now(), queue_id="Poison")
    # Poison messages sit suspended until an admin resumes or exports them; transport never retries them.
    transport.add_messages(queue, int(options.get("messages", 1)), sim.clock.now(), status="Suspended")


@_fault("transport-restart-fails", count_option="times",
        doc="the next N restarts of MSExchangeTransport (default 1) fail and leave it stopped")
def _restart_fails(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    service = options.get("service", "MSExchangeTransport")
    server.restart_failures[service] = int(options.get("times", 1))


@_fault("um-call-stuck", count_option="calls",
        doc="N Unified Messaging calls (default 1) that never end, whatever UMCallRouter does (Exchange 2016 only)")
def _um_call_stuck(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    if server.um is None:
        raise ValueError(f"{server.name} runs Exchange {server.version}: no Unified Messaging")
    for _ in range(int(options.get("calls", 1))):
        server.um.add(sim.clock.now(), None, "SubscriberAccess", "ReadingCalendar")


@_fault("pam-stuck", count_option="seconds",
        doc="the server holds the Primary Active Manager role and keeps it N s after its node is paused (default: "
            "until the cluster group is moved by hand)")
def _pam_stuck(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    if server.dag is None:
        raise ValueError(f"{server.name} is not a DAG member")
    dag = sim.dags[server.dag]
    dag.primary_active_manager = server.name
    dag.pam_hold = float(options.get("seconds", -1))


@_fault("held-by-other-requester",
        doc="another requester holds a component Inactive (default HealthApi on OwaProxy)")
def _held(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    component = server.components.canonical(options.get("component", "OwaProxy"))
    if component is None:
        raise ValueError(f"no component {options.get('component')!r} on {server.name}")
    server.components.set(component, "Inactive", options.get("requester", "HealthApi"), sim.clock.now())


@_fault("setup-leftover",
        doc="Functional Inactive votes on ServerWideOffline, Monitoring, RecoveryActionsEnabled from a failed CU")
def _setup_leftover(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    for component in ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled"):
        server.components.set(component, "Inactive", "Functional", sim.clock.now())


@_fault("db-move-refused", count_option="times",
        doc="moves of the databases active on the server are refused N times (default: always)")
def _move_refused(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    for db in _databases_on(sim, server, options):
        db.moves_refused = int(options.get("times", -1))


@_fault("copy-unhealthy", doc="the server's passive copies fall behind (CopyQueueLength 250) or get another status")
def _copy_unhealthy(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    server.copy_unhealthy = True
    for db in sim.databases.values():
        copy = db.copies.get(server.name)
        if copy is None or db.active == server.name:
            continue
        copy.copy_queue = int(options.get("copy_queue", 250))
        copy.replay_queue = int(options.get("replay_queue", 40))
        copy.status = options.get("status", copy.status)


@_fault("unreachable", count_option="times",
        doc="the next N HTTP requests to the server fail (default 1; -1 = until cleared)")
def _unreachable(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    server.http_failures = int(options.get("times", 1))


@_fault("cluster-resume-fails", count_option="times", doc="Resume-ClusterNode fails N times (default 1)")
def _resume_fails(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    if server.dag is None:
        raise ValueError(f"{server.name} is not a DAG member")
    server.cluster_resume_failures = int(options.get("times", 1))


@_fault("already-in-maintenance", doc="the server is already fully in maintenance (as a finished entry run leaves it)")
def _already(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    now = sim.clock.now() - timedelta(minutes=30)
    server.components.set("HubTransport", "Draining", "Maintenance", now)
    server.components.set("ServerWideOffline", "Inactive", "Maintenance", now + timedelta(minutes=10))
    transport = server.transport
    transport.note_hub_state("Inactive", now)
    transport.pick_up_state(now)
    for queue in transport.queues.values():
        if queue.redirectable:
            queue.messages.clear()
    if server.dag:
        dag = sim.dags[server.dag]
        server.activation_policy = "Blocked"
        server.move_now = True
        server.cluster_state = "Paused"
        if dag.primary_active_manager == server.name:
            dag.primary_active_manager = next(m for m in dag.members if m != server.name)
        for db in sim.databases.values():
            if db.active == server.name:
                target, _ = sim.move_target(db, exclude=server.name, skip_health=True)
                if target:
                    db.activate(target)


# --- Exchange updates (the Windows view, exchange_sim/windows.py) ---------------------------------------------------


def _windows(server: Server) -> Any:
    if server.windows is None:  # pragma: no cover - every simulated server has one
        raise ValueError(f"{server.name} has no Windows view")
    return server.windows


@_fault("setup-fails", doc="CU setup stops half way: watermark left, services Disabled, ServerWideOffline, Monitoring "
                           "and RecoveryActionsEnabled Inactive by Functional (an SU fails with exit code 1603)")
def _setup_fails(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    _windows(server).setup_outcome = "fail"


@_fault("setup-hangs", doc="setup never ends: the process keeps running past any budget")
def _setup_hangs(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    _windows(server).setup_outcome = "hang"


@_fault("reboot-never-returns", doc="after Restart-Computer the server never answers again")
def _reboot_never_returns(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    _windows(server).never_returns = True


@_fault("service-stays-disabled", doc="setup leaves one service Disabled (option service=, default "
                                      "MSExchangeFrontEndTransport)")
def _service_stays_disabled(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    _windows(server).stays_disabled = str(options.get("service", "MSExchangeFrontEndTransport"))


@_fault("low-disk", count_option="gb", doc="the system drive has N GB free (default 4)")
def _low_disk(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    _windows(server).free["C"] = int(float(options.get("gb", 4)) * 1024**3)


@_fault("pending-reboot", doc="Windows waits for a restart: PendingFileRenameOperations and the CBS RebootPending key")
def _pending_reboot(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    win = _windows(server)
    win.set_value(SESSION_MANAGER, "PendingFileRenameOperations", ["\\??\\C:\\Windows\\Temp\\kb.tmp", ""])
    win.set_value(CBS_REBOOT, "(default)", "")


@_fault("package-missing", doc="the update packages (D:\\Exchange, the share) are not there")
def _package_missing(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    _windows(server).packages_missing = True


@_fault("already-at-target", doc="the server already runs 2019 CU15 (option build=15.2.1748.10)")
def _already_at_target(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    build = tuple(int(p) for p in str(options.get("build", "15.2.1748.10")).split("."))
    win = _windows(server)
    win.files[key(EXSETUP)].version = build
    win.cu_build = build


@_fault("mailbox-move-in-progress", doc="a mailbox move to the server's first database is InProgress (option "
                                        "status=, default InProgress)")
def _mailbox_move_in_progress(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    target = next(name for name, db in sim.databases.items() if server.name in db.copies)
    sim.move_requests.append({"DisplayName": "Ellen Adams", "Alias": "ellen.adams", "BatchName": "",
                              "Status": str(options.get("status", "InProgress")),
                              "SourceDatabase": "Mailbox Database 0815", "TargetDatabase": target})


@_fault("auth-cert-expiring", count_option="days", doc="the Exchange Auth certificate expires in N days (default "
                                                       "10; 0 or less: already expired)")
def _auth_cert_expiring(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    for each in sim.servers.values():  # one certificate for the organisation, on every server
        each.auth_cert_not_after = sim.clock.now() + timedelta(days=int(options.get("days", 10)))


@_fault("back-pressure", doc="transport is under back pressure: the queue database's disk space at High (option "
                             "resource=, level=)")
def _back_pressure(sim: SimulatedExchange, server: Server, options: dict[str, Any]) -> None:
    resource = str(options.get("resource", TRANSPORT_RESOURCES[2]))
    server.resource_use[resource] = str(options.get("level", "High"))
