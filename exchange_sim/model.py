"""A stateful, deterministic simulated Exchange organisation.

``SimulatedExchange`` holds servers (standalone or in DAGs), their component votes, transport queues, services,
databases and cluster nodes, and answers cmdlets the maintenance procedure uses with objects shaped like real
Exchange output. Time is a controllable clock; nothing sleeps. Faults are injected by name. Every command received
is recorded (secrets redacted). One re-entrant lock makes it safe to serve from several HTTP threads.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import errors
from .binding import DEFAULT, EXCHANGE, bind
from .call import Call
from .clock import DEFAULT_START, RunningSimClock, SimClock
from .databases import Copy, Dag, Database, Mailbox
from .faults import FAULTS, FaultSpec, parse_fault
from .objects import SimObject, SimResult, SimTerminatingError
from .registry import REGISTRY
from .servers import Server, Service

ENDPOINTS = (EXCHANGE, DEFAULT)
_SECRET_NAME = re.compile(r"password|passwd|pwd|credential|secret|token|securestring|apikey", re.IGNORECASE)
_SECRET_TYPES = ("SecureString", "PSCredential", "PSSecureString")


@dataclass
class CommandRecord:
    """One command as the simulator received it: who, where, what (secrets redacted) and when (simulated)."""

    at: datetime
    server: str
    endpoint: str
    cmdlet: str
    parameters: list[tuple[str, Any]]
    user: str = ""
    is_script: bool = False
    outcome: str = ""  # "ok", "errors" (non-terminating records written) or the terminating FullyQualifiedErrorId

    def get(self, name: str, default: Any = None) -> Any:
        """A parameter's recorded value by case-insensitive name."""
        return next((v for n, v in self.parameters if (n or "").lower() == name.lower()), default)


class SimulatedExchange:
    """A simulated Exchange organisation answering cmdlets through ``invoke``; see the module docstring."""

    parse_fault = staticmethod(parse_fault)

    def __init__(self, *, start: datetime = DEFAULT_START, auto_advance_seconds: float = 0.0,
                 domain: str = "contoso.com", speed: float | None = None) -> None:
        self.lock = threading.RLock()
        # speed: the clock runs on its own (serving a real engine); None: time moves only when told (tests).
        self.clock = SimClock(start, lock=self.lock) if speed is None else RunningSimClock(start, speed=speed,
                                                                                          lock=self.lock)
        self.domain = domain
        self.auto_advance_seconds = auto_advance_seconds
        self.servers: dict[str, Server] = {}
        self.databases: dict[str, Database] = {}
        self.dags: dict[str, Dag] = {}
        # Get-MoveRequest's rows: DisplayName, Alias, Status, SourceDatabase, TargetDatabase (the organisation's).
        self.move_requests: list[dict[str, str]] = []
        self.commands: list[CommandRecord] = []
        self.error_factory = errors.ErrorFactory()
        self._last_tick = self.clock.now()
        self._mailbox_counter = 0

    # --- building the organisation -------------------------------------------------------------------------
    def add_standalone(self, name: str, *, fqdn: str | None = None, version: str = "2019",
                       databases: int = 1) -> Server:
        """A Mailbox server outside any DAG, with ``databases`` non-replicated databases and some queued mail."""
        with self.lock:
            server = self._new_server(name, fqdn, version)
            for _ in range(databases):
                self._new_database([name], active=name, dag=None)
            self._seed_queues(server)
            return server

    def add_dag(self, dag_name: str, members: list[str], *, version: str = "2019",
                databases: int | None = None, fqdns: dict[str, str] | None = None) -> Dag:
        """A DAG of new member servers; each database has a copy on every member, active copies spread evenly."""
        if len(members) < 2:
            raise ValueError("a DAG needs at least two members")
        with self.lock:
            if dag_name.lower() in (d.lower() for d in self.dags):
                raise ValueError(f"DAG {dag_name} already exists")
            servers = [self._new_server(m, (fqdns or {}).get(m), version) for m in members]
            dag = Dag(dag_name, list(members), primary_active_manager=members[0])
            self.dags[dag_name] = dag
            for index, server in enumerate(servers):
                server.dag = dag_name
                server.cluster_id = index + 1
                server.services["ClusSvc"] = server.services.get("ClusSvc") or Service("ClusSvc")
            count = databases if databases is not None else 2 * len(members)
            for index in range(count):
                first = index % len(members)
                order = members[first:] + members[:first]
                self._new_database(order, active=order[0], dag=dag_name)
            for server in servers:
                self._seed_queues(server)
            return dag

    def _new_server(self, name: str, fqdn: str | None, version: str) -> Server:
        if version not in ("2016", "2019", "SE"):
            raise ValueError(f"unsupported version {version!r} (2016, 2019 or SE)")
        if self.find_server(name) is not None:
            raise ValueError(f"server {name} already exists")
        installed = self.clock.now() - timedelta(days=30)
        server = Server.create(name, fqdn or f"{name}.{self.domain}", version, installed)
        if server.um is not None:
            server.um.seed(self.clock.now())
        self.servers[name] = server
        return server

    def _new_database(self, order: list[str], *, active: str, dag: str | None) -> Database:
        name = f"DB{len(self.databases) + 1:02d}"
        now = self.clock.now()
        copies = {s: Copy(s, i + 1, status="Mounted" if s == active else "Healthy") for i, s in enumerate(order)}
        db = Database(name, copies, active, last_full=now - timedelta(hours=20),
                      last_incremental=now - timedelta(hours=4), dag=dag)
        for _ in range(8):
            self._mailbox_counter += 1
            n = self._mailbox_counter
            db.mailboxes.append(Mailbox(f"User {n:03d}", f"user{n:03d}", name))
        self.databases[name] = db
        return db

    def _seed_queues(self, server: Server) -> None:
        now = self.clock.now()
        transport = server.transport
        transport.add_queue("Undefined", "Submission", 2, now, queue_id="Submission")
        for db in self.databases.values():
            if db.active == server.name:
                transport.add_queue("SmtpDeliveryToMailbox", db.name.lower(), 3, now)
        if server.dag:
            transport.add_queue("SmtpRelayToDag", server.dag.lower(), 2, now)
            for peer in self.dags[server.dag].members:
                if peer != server.name:
                    transport.add_queue("ShadowRedundancy", self.servers[peer].fqdn.lower(), 2, now, shadow=True)
        transport.add_queue("DnsConnectorDelivery", "fabrikam.com", 3, now, external=True)

    # --- faults --------------------------------------------------------------------------------------------
    def inject(self, fault: str, server: str, **options: Any) -> None:
        """Inject a named fault on a server (see ``faults.FAULTS``); raises ValueError on unknown names."""
        with self.lock:
            target = self.find_server(server)
            if target is None:
                raise ValueError(f"unknown server {server!r}")
            name = fault.strip().lower()
            if name not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
            self._tick()
            FAULTS[name].apply(self, target, options)
            self.components_changed(target)

    def inject_spec(self, spec: str | FaultSpec) -> None:
        """Inject from ``NAME@SERVER[:N]`` (the CLI's ``--fault``)."""
        parsed = parse_fault(spec) if isinstance(spec, str) else spec
        self.inject(parsed.name, parsed.server, **parsed.options)

    def take_http_failure(self, server: str) -> bool:
        """Consume one pending HTTP-level failure for ``server`` (the ``unreachable`` fault). True = fail this one."""
        with self.lock:
            target = self.find_server(server)
            if target is None:
                return False
            self._tick()
            if target.windows is not None and target.windows.is_down(self.clock.now()):
                return True  # restarting (or setup restarted WinRM): nothing answers
            if target.http_failures == 0:
                return False
            if target.http_failures > 0:
                target.http_failures -= 1
            return True

    # --- the one verb ---------------------------------------------------------------------------------------
    def invoke(self, server: str, endpoint: str, cmdlet: str, parameters: Sequence[tuple[str | None, Any]],
               *, user: str = "", is_script: bool = False, auto_advance_seconds: float | None = None) -> SimResult:
        """Run one cmdlet received on ``server``'s ``endpoint``. Raises SimTerminatingError for terminating errors."""
        with self.lock:
            step = self.auto_advance_seconds if auto_advance_seconds is None else auto_advance_seconds
            if step:
                self.clock.advance(step)
            self._tick()
            record = CommandRecord(self.clock.now(), server, endpoint, cmdlet, _redact(parameters), user, is_script)
            self.commands.append(record)
            try:
                result = self._dispatch(server, endpoint, cmdlet, list(parameters), is_script)
            except SimTerminatingError as exc:
                record.outcome = exc.error.error_id
                raise
            record.outcome = "errors" if result.errors else "ok"
            return result

    def _dispatch(self, server_name: str, endpoint: str, cmdlet: str, parameters: list[tuple[str | None, Any]],
                  is_script: bool) -> SimResult:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        server = self.find_server(server_name)
        if server is None:
            raise ValueError(f"no simulated server answers as {server_name!r}")
        if is_script:
            raise errors.no_language() if endpoint == EXCHANGE else errors.scripts_not_simulated()
        spec = REGISTRY.get(cmdlet.strip().lower())
        if spec is None or spec.endpoint != endpoint:
            # Exchange cmdlets exist only in the Exchange endpoint; services and FailoverClusters only outside it.
            raise errors.command_not_found(cmdlet)
        call = Call(self, server, spec.name, bind(spec, parameters))
        spec.handler(call)
        self._tick()
        return call.result

    # --- time ------------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.clock.now()
        if now > self._last_tick:
            for server in self.servers.values():
                server.transport.advance(self._last_tick, now)
                if server.windows is not None:
                    server.windows.advance(server, now, self._setup_failed)
            for dag in self.dags.values():
                self._settle_pam(dag, now)
            self._last_tick = now

    def _setup_failed(self, server: Server, now: datetime) -> None:
        """A CU stopped half way: the watermark and Disabled services, and the Functional votes it set."""
        assert server.windows is not None  # noqa: S101 - only called from a server's own Windows view
        server.windows.fail_half_way(server)
        for component in ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled"):
            server.components.set(component, "Inactive", "Functional", now)
        self.components_changed(server)

    def advance(self, seconds: float) -> None:
        """Advance the clock and let mail flow (same as ``clock.advance``; state catches up lazily anyway)."""
        with self.lock:
            self.clock.advance(seconds)
            self._tick()

    # --- lookups and shared rules used by the cmdlet handlers ---------------------------------------------
    def find_server(self, identity: str) -> Server | None:
        """By name or FQDN, case-insensitively (Exchange also accepts either)."""
        wanted = str(identity).strip().lower()
        for server in self.servers.values():
            if wanted in (server.name.lower(), server.fqdn.lower()):
                return server
        return None

    def find_database(self, identity: str) -> Database | None:
        wanted = str(identity).strip().lower()
        return next((db for name, db in self.databases.items() if name.lower() == wanted), None)

    def find_dag(self, identity: str) -> Dag | None:
        wanted = str(identity).strip().lower()
        return next((d for name, d in self.dags.items() if name.lower() == wanted), None)

    def fqdn_map(self) -> dict[str, str]:
        return {name: s.fqdn for name, s in self.servers.items()}

    def components_changed(self, server: Server) -> None:
        """Propagate a vote change: transport notices HubTransport (later), UM stops or resumes taking calls with
        UMCallRouter, POP/IMAP stop with their proxies."""
        now = self.clock.now()
        server.transport.note_hub_state(server.components.effective("HubTransport"), now)
        if server.um is not None:
            server.um.router_state(server.components.effective("UMCallRouter"), now)
        for proxy, services in (("ImapProxy", ("MSExchangeIMAP4", "MSExchangeIMAP4BE")),
                                ("PopProxy", ("MSExchangePOP3", "MSExchangePOP3BE"))):
            if server.components.effective(proxy) == "Inactive":
                for name in services:
                    server.services[name].running = False

    # --- the Primary Active Manager ---------------------------------------------------------------------------
    def node_paused(self, dag: Dag, node: Server) -> None:
        """A paused node gives up the PAM role: at once, or after the ``pam-stuck`` fault's hold (never if < 0)."""
        if dag.primary_active_manager != node.name:
            return
        if dag.pam_hold is None:
            self.move_pam(dag)
        elif dag.pam_hold >= 0:
            dag.pam_move_due = self.clock.now() + timedelta(seconds=dag.pam_hold)

    def move_pam(self, dag: Dag, to: str | None = None) -> bool:
        """Move the cluster group - and with it the PAM role - to ``to`` or the first other member that is Up."""
        candidates = [m for m in dag.members if m != dag.primary_active_manager
                      and self.servers[m].cluster_state == "Up" and (to is None or m.lower() == to.lower())]
        if not candidates:
            return False
        dag.primary_active_manager = candidates[0]
        dag.pam_move_due = None
        return True

    def _settle_pam(self, dag: Dag, now: datetime) -> None:
        if dag.pam_move_due is None or now < dag.pam_move_due:
            return
        if self.servers[dag.primary_active_manager].cluster_state == "Up":
            dag.pam_move_due = None  # resumed before the role moved: it stays
        else:
            self.move_pam(dag)

    def activation_blocker(self, server: Server) -> str | None:
        """Why Active Manager would not activate a copy on ``server`` (None = it may)."""
        if server.activation_policy == "Blocked":
            return f"Server '{server.name}' has database copy auto activation policy configuration of 'Blocked'."
        if server.move_now:
            return f"Server '{server.name}' has DatabaseCopyActivationDisabledAndMoveNow set to true."
        if server.cluster_state != "Up":
            return f"The cluster node '{server.name}' is {server.cluster_state.lower()}."
        if server.components.effective("HighAvailability") != "Active":
            return f"The HighAvailability component on server '{server.name}' is not Active."
        return None

    def move_target(self, db: Database, *, exclude: str, preferred: str | None = None,
                    skip_health: bool = False, skip_lag: bool = False) -> tuple[str | None, str]:
        """The best copy to activate instead of ``exclude`` and, when there is none, why not."""
        if db.moves_refused:
            if db.moves_refused > 0:
                db.moves_refused -= 1
            return None, ("An Active Manager operation failed. Error: Move was suppressed because the database "
                          "recently failed over (AmDbMoveMoveSuppressedBlackoutException).")
        reasons = []
        candidates = sorted(db.copies.values(), key=lambda c: c.preference)
        if preferred:
            candidates = [c for c in candidates if c.server.lower() == preferred.lower()]
            if not candidates:
                return None, f"Database '{db.name}' has no copy on server '{preferred}'."
        for copy in candidates:
            if copy.server == exclude or copy.server == db.active:
                continue
            server = self.servers[copy.server]
            blocker = self.activation_blocker(server)
            if blocker and not preferred:
                reasons.append(blocker)
                continue
            if not skip_health and copy.status not in ("Healthy", "DisconnectedAndHealthy"):
                reasons.append(f"Database copy '{db.name}' on server '{copy.server}' has status '{copy.status}'.")
                continue
            if not (skip_health or skip_lag) and (copy.copy_queue > 10 or copy.replay_queue > 100):
                reasons.append(
                    f"Database copy '{db.name}' on server '{copy.server}' has a copy queue length of "
                    f"{copy.copy_queue} logs, which is too high to enable automatic recovery. The maximum allowed "
                    "copy queue length is 10."
                )
                continue
            return copy.server, ""
        if not reasons:
            reasons.append(f"Database '{db.name}' has no other copy to activate.")
        return None, ("An Active Manager operation failed. Error: An error occurred while trying to validate the "
                      "specified database copy for possible activation. Error: " + " ".join(reasons))


def _redact(parameters: Sequence[tuple[str | None, Any]]) -> list[tuple[str, Any]]:
    """Copy parameters for the record, replacing SecureString/credential/password-like values with ``***``."""
    out: list[tuple[str, Any]] = []
    for name, value in parameters:
        out.append((name or "", "***" if _is_secret(name or "", value) else _snapshot(value)))
    return out


def _is_secret(name: str, value: Any) -> bool:
    if _SECRET_NAME.search(name):
        return True
    if type(value).__name__ in _SECRET_TYPES:
        return True
    if isinstance(value, SimObject):
        return any(t.endswith(("SecureString", "PSCredential")) for t in value.type_names)
    return False


def _snapshot(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_snapshot(v) for v in value]
    return value


__all__ = ["Call", "CommandRecord", "FaultSpec", "SimulatedExchange", "parse_fault"]
