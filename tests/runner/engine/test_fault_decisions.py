"""Every named fault of the simulator through the real engine (``run_window``), the real pypsrp client and the
simulator's WinRM/PSRP endpoint: the pause, refusal or automatic resolution the fault causes, then each operator
decision that applies to it — retry, skip with a reason, abort — up to the change's final state.

For every decision: the reason is stored as the step's resolution and the decision is an audit event; a retry sends
no mutating command twice except the one the retried step exists to send; a finished window leaves the server out of
maintenance (ServerWideOffline and HubTransport Active, transport acting on Active, cluster node Up and activation
settings restored on a DAG member) — or, when the run never touched the server, exactly as it was found.

What each fault does to the plan step by step is specified in tests/runner/plans/ (test_faults.py and the UM, PAM
and queue tests); this file checks the same faults end to end, with the operator in the loop.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from changes import services
from changes.errors import StateConflict
from changes.models import Alert, AuditEvent, Change, StepRun, WindowRun
from changes.run_services import change_resume, change_start, change_work_done
from changes.states import State
from exchange_sim.binding import DEFAULT, EXCHANGE
from exchange_sim.faults import FAULTS
from exchange_sim.model import SimulatedExchange
from exchange_sim.transport import BOOTLOADER_SECONDS
from runner.clock import SimulatedClock
from runner.engine import run_window
from runner.scheduler import start_due_windows
from tests.support.catalogue import pre_approved

from .support import maintenance_leftovers, mutating_commands, organisation
from .test_install_window import INSTALL_FAULT_CASES

pytestmark = pytest.mark.django_db

S = StepRun.Status
DAG = {"DAG1": ("EX02", "EX03", "EX04")}
# EX02's activation policy before every DAG window: the exit must restore it, not set Unrestricted blindly.
SAVED_POLICY = "IntrasiteOnly"
# Transport is restarted on the way in (to pick up Draining) and on the way out (to pick up Active).
RESTART_TRANSPORT = "Restart-Service Name=MSExchangeTransport"
RESTART_FRONTEND = "Restart-Service Name=MSExchangeFrontEndTransport"
TWO_RESTARTS = {RESTART_TRANSPORT: 2, RESTART_FRONTEND: 2}
# Databases that will not move are moved explicitly, twice at most, a minute apart, in each run of the step (§5.4).
MOVE_DATABASES = "Move-ActiveMailboxDatabase MoveComment=Maintenance Server=EX02"
REASON = {
    "retry": "cause fixed (CHG ticket notes); retrying the step",
    "skip": "accepted by the on-call Exchange admin; go on without this step",
    "abort": "window called off by the change manager; take the server out of maintenance",
}
REFUSED = "refused"
COMPLETED = "completed"


# --- driving a window --------------------------------------------------------------------------------------------


@dataclass
class Window:
    """One change on one simulated server, run by the real engine over pypsrp with the simulated clock."""

    sim: SimulatedExchange
    name: str
    change: Change
    operator: Any
    clock: SimulatedClock
    by_hand: list[tuple] = field(default_factory=list)  # writes an operator sent outside the engine

    def engine(self) -> str:
        return run_window(self.change.pk, worker="w1", clock=self.clock)

    def run(self) -> str:
        """Run the engine until it stops; at the work hold the operator reports the work done (once)."""
        for _ in range(3):
            outcome = self.engine()
            if outcome != "held":
                return outcome
            change_work_done(self.change, actor=self.operator, notes="CU15 installed, server rebooted")
        raise AssertionError("the window still holds after the work was reported done")

    def decide(self, action: str, reason: str | None = None) -> str:
        change_resume(self.change, actor=self.operator, action=action, reason=reason or REASON[action])
        return self.run()

    @property
    def state(self) -> str:
        self.change.refresh_from_db()
        return self.change.state

    def step(self, key: str) -> StepRun:
        return StepRun.objects.get(change=self.change, key=key)

    def failed(self) -> StepRun:
        [row] = StepRun.objects.filter(change=self.change, status=S.FAILED)
        return row

    def open_alerts(self) -> list[str]:
        return list(Alert.objects.filter(change=self.change, cleared_at__isnull=True).values_list("kind", flat=True))

    def issues(self) -> list[dict]:
        return [i for row in StepRun.objects.filter(change=self.change).order_by("order") for i in row.issues]

    def hand(self, server: str, endpoint: str, cmdlet: str, **parameters: Any) -> None:
        """A command an operator runs by hand (not the engine): sent to the simulator, kept out of the engine's
        writes."""
        params = list(parameters.items())
        self.sim.invoke(server, endpoint, cmdlet, params)
        self.by_hand.append((cmdlet, tuple(sorted((str(n), str(v)) for n, v in params))))

    def engine_writes(self) -> Counter:
        return Counter(mutating_commands(self.sim)) - Counter(self.by_hand)

    def sent_more_than_once(self) -> dict[str, int]:
        """The engine's mutating commands sent more than once, e.g. {"Restart-Service Name=MSExchangeTransport": 2}."""
        return {_label(cmdlet, params): count for (cmdlet, params), count in self.engine_writes().items() if count > 1}


def _label(cmdlet: str, params: tuple) -> str:
    return " ".join([cmdlet, *(f"{n}={v}" for n, v in params if n != "Confirm")])


def found_state(sim: SimulatedExchange, name: str) -> dict[str, Any]:
    """What a run that never touched the server must leave exactly as it was."""
    server = sim.servers[name]
    return {
        "votes": {c: dict(server.components.holders(c)) for c in server.components.names},
        "cluster": server.cluster_state, "policy": server.activation_policy, "move_now": server.move_now,
    }


def assert_out_of_maintenance(w: Window, *, besides: tuple[str, ...] = ()) -> None:
    server = w.sim.servers[w.name]
    assert [left for left in maintenance_leftovers(w.sim, w.name) if not left.startswith(besides)] == []
    assert server.components.effective("ServerWideOffline") == "Active"
    assert server.components.effective("HubTransport") == "Active"
    assert server.transport.observed_hub_state == "Active"
    if server.dag is not None:
        assert (server.cluster_state, server.activation_policy, server.move_now) == ("Up", SAVED_POLICY, False)


def audited(w: Window, action: str) -> list[tuple[str, str, dict]]:
    """The decisions ``action`` on the change in the audit trail: (actor, reason, changes)."""
    events = AuditEvent.objects.filter(action=f"window.{action}", object_type="change", object_id=str(w.change.pk))
    return [(e.actor, e.reason, e.changes) for e in events.order_by("seq")]


def assert_decided(w: Window, key: str, action: str) -> StepRun:
    """The decision is on the step (its reason as the step's resolution) and in the audit trail."""
    row = w.step(key)
    assert (row.decision, row.resolution, row.decided_by) == (action, REASON[action], w.operator)
    assert ("user:olga", REASON[action], {"step": [None, key]}) in audited(w, action)
    return row


@pytest.fixture
def open_window(serve, requester, operator):
    """``open_window(server, faults, options=...)``: serve a fresh organisation (EX01 standalone, or DAG1 with
    EX02–EX04) over WinRM/PSRP, inject ``faults`` ((name, server, options) triples), schedule a change for
    ``server`` whose window is open and start it, as the scheduler (or, with ``options``, an operator) does."""

    def start(name: str, faults: tuple = (), *, options: dict | None = None, version: str = "2019") -> Window:
        if name == "EX01":
            sim = SimulatedExchange(start=timezone.now())
            sim.add_standalone("EX01", fqdn="ex01.corp.example", version=version)
        else:
            sim = organisation(dags=DAG)
            sim.servers["EX02"].activation_policy = SAVED_POLICY
        serve(sim)
        inject(sim, faults)
        now = timezone.now()
        change, _ = services.change_create(actor=requester, data={
            "source": "servicenow", "external_ref": "CHG-FAULT", "title": f"CU15 on {name}", "description": "",
            "change_type": "standard", "risk": "low", "impact": "low", "servers": [name], "plan": "maintenance",
            "window_start": now - timedelta(minutes=1), "window_end": now + timedelta(hours=4),
            "requested_by": "carol@example.com", "notify": [], "callback_url": "",
            "standard_template": pre_approved([name]),
        })
        change.servers.filter(name=name).update(version=f"Exchange Server {version}")
        if options:
            change_start(change, actor=operator, options=options)
        else:
            assert start_due_windows() == [change.pk]
        return Window(sim, name, change, operator, SimulatedClock(sim))

    return start


def inject(sim: SimulatedExchange, faults: tuple) -> None:
    for fault, server, options in faults:
        sim.inject(fault, server, **options)


# --- what operators (or the world) do to remove a fault's cause -----------------------------------------------


def nothing(w: Window) -> None:
    """Nothing to do: a one-off fault is gone by itself, a lasting one stays by itself."""


def fresh_backups(w: Window) -> None:
    for db in w.sim.databases.values():
        db.backup_in_progress = False
        db.last_full = w.sim.clock.now() - timedelta(hours=1)


def exit_by_hand(server: str, *, dag: bool = False) -> Callable[[Window], None]:
    """Someone finishes the earlier maintenance of ``server`` by hand, in the documented order."""
    policy = SAVED_POLICY if server == "EX02" else "Unrestricted"

    def run(w: Window) -> None:
        w.hand(server, EXCHANGE, "Set-ServerComponentState", Identity=server, Component="ServerWideOffline",
               State="Active", Requester="Maintenance")
        if dag:
            w.hand(server, DEFAULT, "Resume-ClusterNode", Name=server)
            w.hand(server, EXCHANGE, "Set-MailboxServer", Identity=server,
                   DatabaseCopyActivationDisabledAndMoveNow=False)
            w.hand(server, EXCHANGE, "Set-MailboxServer", Identity=server, DatabaseCopyAutoActivationPolicy=policy)
        w.hand(server, EXCHANGE, "Set-ServerComponentState", Identity=server, Component="HubTransport",
               State="Active", Requester="Maintenance")
        restart_transport_by_hand(w, server)

    return run


def restart_transport_by_hand(w: Window, server: str, cmdlet: str = "Restart-Service") -> None:
    """Restart (or start) transport so it acts on HubTransport's state, and wait until Get-Queue answers."""
    w.hand(server, DEFAULT, cmdlet, Name="MSExchangeTransport")
    w.sim.advance(BOOTLOADER_SECONDS + 30)


SETUP_COMPONENTS = ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled")


def only_setup_leftovers(w: Window) -> None:
    """The operator accepted setup's leftovers: this run's votes are gone, setup's Functional votes left in place."""
    votes = {c: w.sim.servers[w.name].components.holders(c) for c in w.sim.servers[w.name].components.names}
    assert [c for c, held in votes.items() if held.get("Maintenance") not in (None, "Active")] == []
    assert {c: votes[c].get("Functional") for c in SETUP_COMPONENTS} == dict.fromkeys(SETUP_COMPONENTS, "Inactive")


def copies_caught_up(w: Window) -> None:
    for db in w.sim.databases.values():
        for copy in db.copies.values():
            copy.copy_queue = copy.replay_queue = 0


def reachable_again(w: Window) -> None:
    w.sim.servers[w.name].http_failures = 0


def remote_end_answers(w: Window) -> None:
    for queue in w.sim.servers[w.name].transport.queues.values():
        if queue.next_hop == "fabrikam.com":
            queue.stuck, queue.status, queue.last_error, queue.grows_every = False, "Ready", None, 0.0


def blackout_over(w: Window) -> None:
    for db in w.sim.databases.values():
        db.moves_refused = 0


def start_transport_by_hand(w: Window) -> None:
    restart_transport_by_hand(w, w.name, "Start-Service")


def cluster_group_moved(w: Window) -> None:
    w.hand("EX03", DEFAULT, "Move-ClusterGroup", Name="Cluster Group", Node="EX04")


def caller_hung_up(w: Window) -> None:
    w.sim.servers[w.name].um.calls.clear()


def setup_leftovers_cleared(w: Window) -> None:
    """Microsoft's fix for a failed CU's leftovers (the same requester sets them Active). HubTransport is Active
    again only now: the exit's transport restart, which waited for this, makes transport act on it."""
    for component in SETUP_COMPONENTS:
        w.hand(w.name, EXCHANGE, "Set-ServerComponentState", Identity=w.name, Component=component, State="Active",
               Requester="Functional")


def queue_resumed(w: Window) -> None:
    [queue] = [q for q in w.sim.servers[w.name].transport.queues.values() if q.next_hop == "fabrikam.com"]
    w.hand(w.name, EXCHANGE, "Resume-Queue", Identity=f"{w.name}\\{queue.queue_id}")


def again(fault: str, **options: Any) -> Callable[[Window], None]:
    """The fault strikes once more (for a retry that fails again)."""
    return lambda w: w.sim.inject(fault, w.name, **options)


# --- what the pause must show --------------------------------------------------------------------------------------


def stale_backup(findings: dict) -> None:
    [db] = findings["databases"]
    assert (db["database"], db["backup_in_progress"]) == ("DB01", False)
    assert db["age_hours"] == pytest.approx(9 * 24, abs=1) and findings["max_age_hours"] == 24


def backup_running(findings: dict) -> None:
    assert [db["backup_in_progress"] for db in findings["databases"]] == [True]


def held_by_maintenance(findings: dict) -> None:
    assert findings["not_active"]["ServerWideOffline"] == [
        {"component": "ServerWideOffline", "requester": "Maintenance", "state": "Inactive"}]


def peer_in_maintenance(findings: dict) -> None:
    peers = {p["server"]: p for p in findings["peers"]}
    assert (peers["EX03"]["in_maintenance"], peers["EX03"]["cluster_node"]) == (True, "Paused")
    assert peers["EX04"]["in_maintenance"] is False


def no_usable_copy(findings: dict) -> None:
    refused = [row for row in findings["databases"] if not row["ok"]]
    assert [row["database"] for row in refused] == ["DB01", "DB04"]  # the two active on EX02
    assert {(c["server"], c["reason"]) for row in refused for c in row["other_copies"]} == {
        ("EX03", "copy queue 250"), ("EX04", "copy queue 250")}


def any_findings(findings: dict) -> None:
    """Nothing structured: the error says it all (an unreachable server answers nothing)."""


def stuck_queue(findings: dict) -> None:
    [queue] = findings["queues"]
    assert (queue["next_hop"], queue["status"], queue["message_count"]) == ("fabrikam.com", "Retry", 3)
    assert queue["last_error"].startswith("451 4.4.0") and findings["stalled"] is True


def slow_queues(findings: dict) -> None:
    assert findings["stalled"] is True and findings["queues"]


def transport_stopped(findings: dict) -> None:
    assert (findings["service"], findings["status"]) == ("MSExchangeTransport", "Stopped")


def moves_suppressed(findings: dict) -> None:
    assert {d["database"] for d in findings["databases"]} == {"DB01", "DB04"}
    assert all("AmDbMoveMoveSuppressedBlackoutException" in e for e in findings["errors"])


def pam_stays(findings: dict) -> None:
    assert findings["primary_active_manager"] == "EX02"


def call_stays(findings: dict) -> None:
    [call] = findings["calls"]
    assert (call["call_type"], call["call_state"]) == ("SubscriberAccess", "Connected")


def node_paused(findings: dict) -> None:
    assert findings["state"] == "Paused" and "RPC server is unavailable" in findings["error"]


def functional_votes(findings: dict) -> None:
    assert {"component": "ServerWideOffline", "requester": "Functional", "state": "Inactive"} in findings["holders"]
    assert [h for h in findings["holders"] if h["requester"] == "Maintenance"] == []  # this run's votes are gone


def copies_behind(findings: dict) -> None:
    assert findings["copies"] and set(findings["copies"].values()) == {"copy queue 250"}


def queue_growing(findings: dict) -> None:
    [problem] = findings["problems"].values()
    assert problem.startswith("in Retry and growing")


def queue_suspended(findings: dict) -> None:
    assert list(findings["problems"].values()) == ["Suspended"]


# --- the table: faults that stop the window ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """A fault that stops the window, and what each decision on it leads to."""

    id: str
    server: str  # the change's server
    faults: tuple  # (fault, server, options) injected before the window starts
    step: str  # the step that fails
    error: str  # part of its error
    findings: Callable[[dict], None]  # asserts what the step found
    clear: Callable[[Window], None]  # removes the cause, so a retry passes
    skip: str  # after a skip: REFUSED (unsafe to skip), COMPLETED, or the step the window pauses at next
    alert: str = Alert.Kind.PAUSED
    at_hold: tuple = ()  # faults injected once the server is in maintenance (they strike the exit)
    persist: Callable[[Window], None] = nothing  # keeps the fault for one retry more (a lasting fault needs nothing)
    retry_writes: dict[str, int] = field(default_factory=dict)  # writes a retry legitimately sends again
    before_skip: Callable[[Window], None] = nothing  # what the operator does by hand before skipping
    skip_issue: str = ""  # recorded in the report after the skip
    abort_pauses_again: bool = False  # the abort's exit/verification meets the fault again until it is cleared
    skipped_leaves: Callable[[Window], None] | None = None  # how a completed skip leaves the server, when not fully
    # out of maintenance (default: assert_out_of_maintenance)
    version: str = "2019"
    pause_issue: str = ""  # recorded on the failed step: what the engine tried on its own before pausing

    @property
    def touches(self) -> bool:
        """Whether the run has changed the server when it pauses (a refused pre-check has not)."""
        return not self.step.startswith("precheck.")


PAUSES = [
    # Pre-checks that gate the window: refused before anything is sent.
    Pause("backup-stale", "EX01", (("backup-stale", "EX01", {}),), "precheck.backups",
          "backup check failed: DB01: newest backup 216 h old (policy 24 h)", stale_backup, fresh_backups,
          skip=COMPLETED, alert=Alert.Kind.PRECHECK_BLOCKED),
    Pause("backup-in-progress", "EX01", (("backup-in-progress", "EX01", {}),), "precheck.backups",
          "backup check failed: DB01: backup in progress", backup_running, fresh_backups,
          skip=COMPLETED, alert=Alert.Kind.PRECHECK_BLOCKED),
    # Skipping the check does not make the run clear Maintenance votes it did not cast: the exit will not restart
    # transport onto a server they keep offline, and pauses there.
    Pause("already-in-maintenance", "EX01", (("already-in-maintenance", "EX01", {}),), "precheck.server_state",
          "already in maintenance: ServerWideOffline Inactive, HubTransport Draining", held_by_maintenance,
          exit_by_hand("EX01"), skip="exit.restart_transport", alert=Alert.Kind.PRECHECK_BLOCKED,
          skip_issue="ServerWideOffline is held Inactive by a Maintenance vote this run did not set"),
    Pause("already-in-maintenance-dag", "EX02", (("already-in-maintenance", "EX02", {}),), "precheck.server_state",
          "already in maintenance: MoveNow True, cluster node Paused", held_by_maintenance,
          exit_by_hand("EX02", dag=True), skip="exit.restart_transport", alert=Alert.Kind.PRECHECK_BLOCKED,
          skip_issue="ServerWideOffline is held Inactive by a Maintenance vote this run did not set"),
    # The operator may take two members down at once: mail is then redirected to the third.
    Pause("already-in-maintenance-peer", "EX02", (("already-in-maintenance", "EX03", {}),), "precheck.dag_members",
          "another DAG member is in maintenance or not operational: EX03", peer_in_maintenance,
          exit_by_hand("EX03", dag=True), skip=COMPLETED, alert=Alert.Kind.PRECHECK_BLOCKED),
    # Without a healthy copy elsewhere the databases cannot move: skipping the check only moves the pause there.
    Pause("copy-unhealthy-peers", "EX02", (("copy-unhealthy", "EX03", {}), ("copy-unhealthy", "EX04", {})),
          "precheck.redundancy", "redundancy: no other healthy copy for DB01, DB04", no_usable_copy,
          copies_caught_up, skip="enter.databases_moved", alert=Alert.Kind.PRECHECK_BLOCKED),
    Pause("unreachable", "EX01", (("unreachable", "EX01", {"times": -1}),), "precheck.backups",
          "EndpointUnreachable: EX01 Microsoft.Exchange open: endpoint unreachable", any_findings, reachable_again,
          skip="precheck.server_state", alert=Alert.Kind.UNREACHABLE, pause_issue="Get-MailboxDatabase failed"),
    # Entering maintenance.
    Pause("queue-stuck", "EX01", (("queue-stuck", "EX01", {}),), "enter.drain_queues",
          "queues did not drain: queue drain: no progress for 60 s; 3 message(s) in 1 queue(s)", stuck_queue,
          remote_end_answers, skip=COMPLETED, skip_issue="3 message(s) still queued on entering maintenance"),
    Pause("queue-slow", "EX01", (("queue-slow", "EX01", {"polls": 12}),), "enter.drain_queues",
          "queues did not drain: queue drain: no progress for 60 s", slow_queues, nothing,
          persist=again("queue-slow", polls=12), skip=COMPLETED, skip_issue="still queued on entering maintenance"),
    Pause("transport-restart-fails", "EX01", (("transport-restart-fails", "EX01", {}),), "enter.restart_transport",
          "MSExchangeTransport did not restart (status Stopped)", transport_stopped, nothing,
          persist=again("transport-restart-fails"), retry_writes={RESTART_TRANSPORT: 4},
          before_skip=start_transport_by_hand, skip=COMPLETED),
    Pause("db-move-refused", "EX02", (("db-move-refused", "EX02", {}),), "enter.databases_moved",
          "2 database(s) did not move off the server", moves_suppressed, blackout_over,
          retry_writes={MOVE_DATABASES: 5}, skip=COMPLETED,
          skip_issue="2 replicated database(s) still active on the server"),
    Pause("pam-stuck", "EX02", (("pam-stuck", "EX02", {}),), "enter.pam_moved",
          "EX02 still holds the Primary Active Manager role", pam_stays, cluster_group_moved,
          skip="enter.final_gate"),
    Pause("um-call-stuck", "EX01", (("um-call-stuck", "EX01", {}),), "enter.um_calls_drained",
          "1 UM call(s) still active after 300 s", call_stays, caller_hung_up, version="2016", skip=COMPLETED,
          skip_issue="1 UM call(s) still active on entering maintenance"),
    # Leaving maintenance: never skipped where that would leave the server (partly) in maintenance.
    Pause("cluster-resume-fails", "EX02", (), "exit.resume_cluster_node",
          "Resume-ClusterNode failed: An error occurred while resuming node 'EX02'. The RPC server is unavailable.",
          node_paused, nothing, at_hold=(("cluster-resume-fails", "EX02", {}),),
          persist=again("cluster-resume-fails"), retry_writes={"Resume-ClusterNode Name=EX02": 3}, skip=REFUSED),
    Pause("transport-restart-fails-exit", "EX01", (), "exit.restart_transport",
          "MSExchangeTransport did not restart (status Stopped)", transport_stopped, nothing,
          at_hold=(("transport-restart-fails", "EX01", {}),), persist=again("transport-restart-fails"),
          retry_writes={RESTART_TRANSPORT: 4}, before_skip=start_transport_by_hand, skip=COMPLETED),
    Pause("unreachable-exit", "EX01", (), "exit.serverwideoffline_active",
          "EndpointUnreachable: EX01 Microsoft.Exchange open: endpoint unreachable (ConnectionError) (after 4 "
          "attempts)", any_findings, reachable_again, at_hold=(("unreachable", "EX01", {"times": -1}),),
          skip=REFUSED, alert=Alert.Kind.UNREACHABLE, abort_pauses_again=True,
          pause_issue="server unreachable during the exit"),
    # A failed CU's Functional votes keep the server offline after this run's votes are gone: transport is not
    # restarted onto it (it would act on Inactive once they are cleared); skipping that moves the pause to the
    # verification.
    Pause("setup-leftover", "EX01", (("setup-leftover", "EX01", {}),), "exit.restart_transport",
          "HubTransport is still Inactive, held by Functional on ServerWideOffline",
          functional_votes, setup_leftovers_cleared, skip="verify.components", abort_pauses_again=True,
          skip_issue="setup leftover: ServerWideOffline is held Inactive by requester Functional",
          skipped_leaves=only_setup_leftovers),
    # Verifying: the exit ran, the server is not as it should be.
    Pause("copy-unhealthy", "EX02", (("copy-unhealthy", "EX02", {}),), "verify.copies",
          "database copies not healthy", copies_behind, copies_caught_up, skip="verify.replication",
          abort_pauses_again=True),
    Pause("queue-retry", "EX01", (), "verify.queues", "in Retry and growing", queue_growing, remote_end_answers,
          at_hold=(("queue-retry", "EX01", {}),), skip=COMPLETED, abort_pauses_again=True),
    Pause("queue-suspended", "EX01", (), "verify.queues", "to fabrikam.com: Suspended", queue_suspended,
          queue_resumed, at_hold=(("queue-suspended", "EX01", {"queue": "fabrikam.com"}),), skip=COMPLETED,
          abort_pauses_again=True),
]


def paused(open_window, case: Pause) -> Window:
    """Run the window until the fault stops it; check where, why, what was found and what was sent before."""
    w = open_window(case.server, case.faults, version=case.version)
    found = found_state(w.sim, w.name)
    if case.at_hold:
        assert w.engine() == "held"
        inject(w.sim, case.at_hold)
    assert w.run() == "paused"
    assert w.state == State.PAUSED
    row = w.failed()
    assert row.key == case.step
    assert case.error in row.error
    case.findings(row.findings)
    if case.pause_issue:
        assert any(case.pause_issue in i["summary"] and i["automatic"] for i in row.issues), row.issues
    assert w.open_alerts() == [case.alert]
    if not case.touches:
        assert w.engine_writes() == Counter()
        assert found_state(w.sim, w.name) == found
    return w


# --- retry ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PAUSES, ids=lambda c: c.id)
def test_a_retry_fails_again_while_the_cause_lasts_and_completes_once_it_is_gone(open_window, case: Pause) -> None:
    w = paused(open_window, case)
    attempts = w.step(case.step).attempts
    case.persist(w)
    assert w.decide("retry", "trying once more") == "paused"
    row = w.failed()
    assert (row.key, row.attempts > attempts) == (case.step, True)
    assert case.error in row.error
    assert w.open_alerts() == [case.alert]

    case.clear(w)
    assert w.decide("retry") == COMPLETED
    assert w.state == State.COMPLETED
    row = assert_decided(w, case.step, "retry")
    assert row.status in (S.PASSED, S.SKIPPED)  # skipped: the retry found the goal already reached
    assert [reason for _, reason, _ in audited(w, "retry")] == ["trying once more", REASON["retry"]]
    assert set(StepRun.objects.filter(change=w.change).values_list("status", flat=True)) <= {S.PASSED, S.SKIPPED}
    assert w.open_alerts() == []
    assert_out_of_maintenance(w)
    # Nothing was sent twice but transport's two restarts and what the retried step is there to send again.
    assert w.sent_more_than_once() == {**TWO_RESTARTS, **case.retry_writes}


# --- skip ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PAUSES, ids=lambda c: c.id)
def test_a_skip_with_a_reason_goes_on_past_the_step_or_is_refused_where_unsafe(open_window, case: Pause) -> None:
    w = paused(open_window, case)
    if case.skip == REFUSED:
        assert w.step(case.step).skippable is False
        with pytest.raises(StateConflict, match=r"is not safe to skip; retry or abort"):
            change_resume(w.change, actor=w.operator, action="skip", reason=REASON["skip"])
        assert w.state == State.PAUSED
        row = w.failed()
        assert (row.key, row.decision, row.resolution) == (case.step, "", "")
        assert not AuditEvent.objects.filter(action="window.skip").exists()
        assert w.open_alerts() == [case.alert]
        return

    assert w.step(case.step).skippable is True
    case.before_skip(w)
    outcome = w.decide("skip")
    row = assert_decided(w, case.step, "skip")
    assert row.status == S.SKIPPED
    assert case.error in row.error  # the failure stays on record next to its resolution
    if case.skip_issue:
        assert any(case.skip_issue in i["summary"] for i in w.issues()), w.issues()
    if case.skip == COMPLETED:
        assert (outcome, w.state) == (COMPLETED, State.COMPLETED)
        assert w.open_alerts() == []
        (case.skipped_leaves or assert_out_of_maintenance)(w)
    else:
        # Going on past the step meets the consequence of the fault at a later step: paused there, not ignored.
        assert (outcome, w.state) == ("paused", State.PAUSED)
        assert w.failed().key == case.skip
    assert set(w.sent_more_than_once()) <= {*TWO_RESTARTS, *case.retry_writes, MOVE_DATABASES}


# --- abort ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PAUSES, ids=lambda c: c.id)
def test_an_abort_runs_the_exit_and_leaves_the_server_out_of_maintenance(open_window, case: Pause) -> None:
    w = paused(open_window, case)
    found = found_state(w.sim, w.name)
    outcome = w.decide("abort")
    assert_decided(w, case.step, "abort")
    assert WindowRun.objects.get(change=w.change).aborting
    if case.abort_pauses_again:
        # The exit or verification the abort must finish fails again: the window stays paused, never "aborted" with
        # the server in an unknown state. Once the cause is gone, a retry finishes the abort.
        assert (outcome, w.state) == ("paused", State.PAUSED)
        assert (w.failed().key, w.open_alerts()) == (case.step, [case.alert])
        case.clear(w)
        outcome = w.decide("retry", "cause gone; finish the abort")
    assert (outcome, w.state) == ("aborted", State.ABORTED)
    assert w.open_alerts() == []
    rows = {r.key: r for r in StepRun.objects.filter(change=w.change)}
    assert [k for k, r in rows.items() if r.status in (S.PENDING, S.RUNNING)] == []
    if not case.touches:
        # Refused before anything was sent: nothing to undo, and nothing is sent to undo it.
        assert rows[case.step].status == S.FAILED
        after = [r for r in rows.values() if r.order > rows[case.step].order]
        assert {r.output_summary for r in after} == {f"aborted by operator: {REASON['abort']}"}
        assert {r.status for r in after} == {S.SKIPPED}
        assert w.engine_writes() == Counter()
        assert found_state(w.sim, w.name) == found
        return
    skipped_by_abort = {k for k, r in rows.items() if r.output_summary == f"aborted by operator: {REASON['abort']}"}
    if case.step.startswith("enter."):
        assert rows[case.step].status == S.FAILED  # the entry is given up where it failed...
        assert "work.hold" in skipped_by_abort
    exits = [r for k, r in rows.items() if k.startswith(("exit.", "verify."))]
    assert {r.status for r in exits} <= {S.PASSED, S.SKIPPED} and not skipped_by_abort & {r.key for r in exits}
    assert_out_of_maintenance(w)  # ...and the exit ran in full
    assert set(w.sent_more_than_once()) <= {*TWO_RESTARTS, *case.retry_writes, MOVE_DATABASES}


def test_skipping_the_exit_restart_at_once_after_starting_transport_by_hand_completes(open_window) -> None:
    w = paused(open_window, next(c for c in PAUSES if c.id == "transport-restart-fails-exit"))
    w.hand(w.name, DEFAULT, "Start-Service", Name="MSExchangeTransport")  # then skips straight away
    assert w.decide("skip") == COMPLETED
    assert_out_of_maintenance(w)


# --- faults resolved automatically or reported, without stopping the window ---------------------------------------


def poison_left_alone(w: Window) -> None:
    """Poison messages are exported or removed deliberately, by people: the window never touches them."""
    assert len(w.sim.servers[w.name].transport.queues["Poison"].messages) == 2
    assert [c.cmdlet for c in w.sim.commands if "Poison" in str(c.parameters) and not c.cmdlet.startswith("Get-")] \
        == []


def foreign_vote_left_alone(w: Window) -> None:
    """HealthApi's vote is someone else's hold: reported before and after the window, never cleared."""
    assert w.sim.servers[w.name].components.holders("OwaProxy").get("HealthApi") == "Inactive"
    assert [p for _, p in w.engine_writes() if ("Requester", "HealthApi") in p] == []
    [before] = [i for i in w.step("precheck.server_state").issues if "HealthApi" in i["summary"]]
    assert before["resolution"] == "reported; will not be cleared by this run"


@dataclass(frozen=True)
class Automatic:
    id: str
    server: str
    faults: tuple
    step: str  # where the issue is recorded
    issue: str  # part of its summary
    resolution: str  # part of its resolution
    automatic: bool  # resolved by the engine (True) or only reported for people (False)
    at_hold: tuple = ()
    options: dict | None = None
    besides: tuple[str, ...] = ()  # what a foreign hold leaves not Active afterwards (reported, not cleared)
    check: Callable[[Window], None] = nothing  # what else the fault's handling must leave as it is


AUTOMATIC = [
    Automatic("queue-slow", "EX01", (("queue-slow", "EX01", {}),), "enter.drain_queues",
              "queues made no progress for", "drained after", automatic=True),
    Automatic("poison-message", "EX01", (("poison-message", "EX01", {"messages": 2}),), "verify.queues",
              "2 message(s) in the poison queue EX01\\Poison", "poison messages are never retried", automatic=False,
              check=poison_left_alone),
    Automatic("held-by-other-requester", "EX01", (("held-by-other-requester", "EX01", {}),), "verify.components",
              "OwaProxy is Inactive, held by HealthApi on OwaProxy since before the window",
              "left in place; reported (held-by-other-requester)", automatic=False, besides=("OwaProxy",),
              check=foreign_vote_left_alone),
    Automatic("setup-leftover-opted-in", "EX01", (("setup-leftover", "EX01", {}),), "exit.release_votes",
              "setup leftover: ServerWideOffline was held Inactive by requester Functional",
              "cleared (operator opted in to clear setup leftovers)", automatic=True,
              options={"clear_setup_leftovers": True}),
    # The pool could not be opened, so the command had not left: the session sends it once more, and says so.
    Automatic("unreachable-once", "EX01", (("unreachable", "EX01", {}),), "precheck.backups",
              "Get-MailboxDatabase had not been sent and was sent once more", "Get-MailboxDatabase then ran",
              automatic=True),
    # Unreachable for that second try too: the context retries the read after its backoff.
    Automatic("unreachable-twice", "EX01", (("unreachable", "EX01", {"times": 2}),), "precheck.backups",
              "Get-MailboxDatabase failed (EX01 Microsoft.Exchange open: endpoint unreachable", "retry 2 of 3",
              automatic=True),
    Automatic("db-move-refused-once", "EX02", (("db-move-refused", "EX02", {"times": 1}),), "enter.databases_moved",
              "MoveNow left databases active on the server", "moved with Move-ActiveMailboxDatabase, attempt 1",
              automatic=True),
    Automatic("pam-stuck-a-while", "EX02", (("pam-stuck", "EX02", {"seconds": 60}),), "enter.pam_moved",
              "EX02 kept the Primary Active Manager role after its node was paused", "moved to EX03",
              automatic=True),
    Automatic("queue-suspended-submission", "EX01", (), "exit.restart_transport",
              "the Submission queue was Suspended after the transport restart", "resumed with Resume-Queue",
              automatic=True, at_hold=(("queue-suspended", "EX01", {}),)),
    Automatic("queue-retry-holding-still", "EX01", (), "verify.queues",
              "to fabrikam.com is in Retry with 3 message(s), not growing", "reported; the remote end refuses",
              automatic=False, at_hold=(("queue-retry", "EX01", {"every": 0, "messages": 3}),)),
]


@pytest.mark.parametrize("case", AUTOMATIC, ids=lambda c: c.id)
def test_a_fault_resolved_or_reported_without_an_operator_lets_the_window_complete(open_window,
                                                                                  case: Automatic) -> None:
    w = open_window(case.server, case.faults, options=case.options)
    if case.at_hold:
        assert w.engine() == "held"
        inject(w.sim, case.at_hold)
    assert w.run() == COMPLETED
    assert w.state == State.COMPLETED
    rows = StepRun.objects.filter(change=w.change)
    assert set(rows.values_list("status", flat=True)) <= {S.PASSED, S.SKIPPED}
    assert set(rows.values_list("decision", flat=True)) == {""}
    assert not Alert.objects.filter(change=w.change).exists()
    case.check(w)
    if case.issue:
        recorded = [(i["resolution"], i["automatic"]) for i in w.step(case.step).issues
                    if case.issue in i["summary"]]
        assert recorded, w.step(case.step).issues
        assert all(case.resolution in resolution and automatic is case.automatic
                   for resolution, automatic in recorded), recorded
    assert_out_of_maintenance(w, besides=case.besides)
    assert w.sent_more_than_once() == TWO_RESTARTS


def test_every_named_fault_is_driven_through_the_engine() -> None:
    covered = {f for case in [*PAUSES, *AUTOMATIC] for f, _, _ in (*case.faults, *case.at_hold)}
    covered |= set(INSTALL_FAULT_CASES)  # the Exchange-update faults: test_install_window.py drives them
    assert covered == set(FAULTS)

