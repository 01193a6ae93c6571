"""Test plans and helpers for the engine: small plans over real cmdlets of the simulated Exchange, with hooks to
make a step fail, hold or block; simulated organisations matching the test inventory, a held command answer, and
what a server keeps of maintenance. Also imported by the Celery worker the integration tests start (worker_app.py)."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.utils import timezone

from changes import services
from changes.models import Change
from changes.run_services import change_start
from exchange_sim.components import INACTIVE_BY_DESIGN
from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimResult
from exchange_sim.session import SimulatorSession
from runner.exchange.session import Endpoint
from runner.step_types import (
    Hold,
    Issue,
    Options,
    Phase,
    Plan,
    Poll,
    ServerInfo,
    Step,
    StepContext,
    StepFailed,
    StepOutcome,
)
from tests.support.catalogue import pre_approved

MUTATING_VERBS = ("Set-", "Suspend-", "Resume-", "Restart-", "Redirect-", "Move-", "Start-", "Stop-")


class SimSessions:
    """sessions_factory(server) for the in-process simulator: every endpoint answered by one SimulatorSession."""

    def __init__(self, sim: SimulatedExchange, server_name: str, registry: list | None = None) -> None:
        self.session = SimulatorSession(sim, server_name)
        self.closed = False
        if registry is not None:
            registry.append(self)

    def __call__(self, endpoint: Endpoint) -> SimulatorSession:
        return self.session

    def close(self) -> None:
        self.closed = True
        self.session.close()


def sim_factory(sim: SimulatedExchange, registry: list | None = None) -> Callable[[Any], SimSessions]:
    return lambda server: SimSessions(sim, server.name, registry)


class WorkerDied(BaseException):  # noqa: N818 - stands for SIGKILL: nothing in the engine may catch it
    """Raised to stop the engine dead, as a killed worker would, leaving the step ``running``."""


@dataclass
class Hooks:
    """Ways to make the test plan misbehave. ``fail[key] = n``: the step fails its next n runs."""

    fail: Counter = field(default_factory=Counter)
    explode: set[str] = field(default_factory=set)  # raise a bare exception (a bug in the step)
    crash_after: set[str] = field(default_factory=set)  # the worker "dies" once the step has acted
    block: dict[str, threading.Event] = field(default_factory=dict)  # wait for the event before acting
    entered: dict[str, threading.Event] = field(default_factory=dict)  # set when the step starts
    on_enter: dict[str, Callable[[], None]] = field(default_factory=dict)  # called when the step starts
    runs: Counter = field(default_factory=Counter)
    wait_seconds: float = 0.0  # the "settle" step polls this long (real seconds under RealClock)


def _component(ctx: StepContext, component: str) -> str:
    out = ctx.run("Get-ServerComponentState", {"Identity": ctx.server.name, "Component": component}).output
    return str(out[0]["State"])


def _set(component: str, state: str) -> Callable[[StepContext], StepOutcome]:
    def run(ctx: StepContext) -> StepOutcome:
        current = _component(ctx, component)
        if current == state:
            return StepOutcome("skipped", f"{component} already {state}")
        ctx.run("Set-ServerComponentState", {"Identity": ctx.server.name, "Component": component, "State": state,
                                             "Requester": "Maintenance"})
        after = _component(ctx, component)
        if after != state:
            raise StepFailed(f"{component} is {after}, not {state}")
        return StepOutcome("passed", f"{component} {current} → {state}")

    return run


def build_test_plan(hooks: Hooks) -> Callable[[str, ServerInfo, Options], Plan]:
    def wrap(key: str, run: Callable[[StepContext], StepOutcome]) -> Callable[[StepContext], StepOutcome]:
        def hooked(ctx: StepContext) -> StepOutcome:
            hooks.runs[key] += 1
            if key in hooks.entered:
                hooks.entered[key].set()
            if key in hooks.on_enter:
                hooks.on_enter[key]()
            if key in hooks.block:
                hooks.block[key].wait(timeout=30)
            if key in hooks.explode:
                raise KeyError("boom")
            if hooks.fail[key] > 0:
                hooks.fail[key] -= 1
                raise StepFailed(f"{key} failed on purpose", findings={"why": "test"})
            outcome = run(ctx)
            if key in hooks.crash_after:
                hooks.crash_after.discard(key)
                raise WorkerDied(key)
            return outcome

        return hooked

    def precheck(ctx: StepContext) -> StepOutcome:
        state = _component(ctx, "ServerWideOffline")
        if state != "Active":
            raise StepFailed(f"ServerWideOffline is {state}")
        return StepOutcome("passed", "server fully Active", findings={"ServerWideOffline": state})

    def settle(ctx: StepContext) -> StepOutcome:
        polls = {"n": 0}
        started = ctx.clock.now()

        def check() -> tuple[bool, Any, str]:
            polls["n"] += 1
            ctx.run("Get-Queue", {"Server": ctx.server.name})
            waited = (ctx.clock.now() - started).total_seconds()
            return waited >= hooks.wait_seconds, polls["n"], f"{waited:.1f} s"

        result = ctx.poll(check, Poll(interval=0.5, total_timeout=hooks.wait_seconds + 60), what="settle")
        issues = [Issue("queues took a while", f"settled after {result.polls} polls")] if result.polls > 1 else []
        return StepOutcome("passed", f"settled after {result.polls} polls", issues=issues)

    def work(ctx: StepContext) -> StepOutcome:
        if ctx.state.get("work_done"):
            return StepOutcome("passed", f"work reported done: {ctx.state.get('work_notes')}")
        raise Hold("waiting for the operator's work-done report", until=ctx.clock.now() + timedelta(hours=1))

    def verify(ctx: StepContext) -> StepOutcome:
        ctx.state["verified"] = True
        return StepOutcome("passed", f"ServerWideOffline {_component(ctx, 'ServerWideOffline')}")

    def remember(ctx: StepContext) -> StepOutcome:
        ctx.state["snapshot"] = {"HubTransport": _component(ctx, "HubTransport")}
        return StepOutcome("passed", "snapshot saved")

    steps = [
        Step("precheck.active", Phase.PRECHECK, "Server fully Active", precheck, mutating=False, gate=True),
        Step("enter.snapshot", Phase.ENTER, "Snapshot component states", remember, mutating=False),
        Step("enter.hub_draining", Phase.ENTER, "HubTransport Draining", _set("HubTransport", "Draining")),
        Step("enter.settle", Phase.ENTER, "Wait for the queues", settle, mutating=False),
        Step("enter.swo_inactive", Phase.ENTER, "ServerWideOffline Inactive", _set("ServerWideOffline", "Inactive"),
             idempotent=False),
        Step("work.hold", Phase.WORK, "Wait for the work", work, mutating=False),
        Step("exit.swo_active", Phase.EXIT, "ServerWideOffline Active", _set("ServerWideOffline", "Active"),
             skippable=False),
        Step("exit.hub_active", Phase.EXIT, "HubTransport Active", _set("HubTransport", "Active"), skippable=False),
        Step("verify.active", Phase.VERIFY, "Verify", verify, mutating=False),
    ]
    plan_steps = tuple(Step(s.key, s.phase, s.title, wrap(s.key, s.run), idempotent=s.idempotent,
                            skippable=s.skippable, mutating=s.mutating, gate=s.gate)
                       for s in steps)

    def builder(name: str, server: ServerInfo, options: Options) -> Plan:
        return Plan(name, "test", plan_steps)

    return builder


def mutating_commands(sim: SimulatedExchange) -> list[tuple]:
    return [(c.cmdlet, tuple(sorted((str(n), str(v)) for n, v in c.parameters)))
            for c in sim.commands if c.cmdlet.startswith(MUTATING_VERBS)]


def open_change(requester: Any, servers: tuple[str, ...] = ("EX01",), ref: str = "CHG1") -> Change:
    """A standard change (no approval needed) whose window opened 5 minutes ago: state scheduled, its start message
    (due at once) queued on commit."""
    now = timezone.now()
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": ref, "title": "Patch", "description": "", "change_type": "standard",
        "risk": "low", "impact": "low", "servers": list(servers), "plan": "maintenance",
        "window_start": now - timedelta(minutes=5), "window_end": now + timedelta(hours=2),
        "requested_by": "carol@example.com", "notify": [], "callback_url": "",
        "standard_template": pre_approved(servers),
    })
    return change


def running_change(requester: Any, servers: tuple[str, ...] = ("EX01",), ref: str = "CHG1") -> Change:
    """A standard change (no approval needed) whose window is open now, started: state running, WindowRun made."""
    change = open_change(requester, servers, ref)
    change_start(change, actor="system:scheduler")
    change.refresh_from_db()
    return change


def organisation(*, standalone: Sequence[str] = (), dags: dict[str, Sequence[str]] | None = None,
                 speed: float | None = None) -> SimulatedExchange:
    """A simulated organisation whose clock starts now, with the FQDNs of the test inventory (``servers``).
    ``speed``: its clock also runs on its own, that many times faster than the wall clock, for an engine in another
    process that waits in scaled time (EXMAINT_RUNNER_CLOCK=scaled:<speed>)."""
    sim = SimulatedExchange(start=timezone.now(), speed=speed)
    for name in standalone:
        sim.add_standalone(name, fqdn=f"{name.lower()}.corp.example")
    for dag, members in (dags or {}).items():
        sim.add_dag(dag, list(members), fqdns={m: f"{m.lower()}.corp.example" for m in members})
    return sim


class HeldAnswer:
    """Holds back the answer to a command matching ``cmdlet`` and ``parameters`` (the first one, or the one after
    ``after`` earlier matches) once the simulated server has executed it, until ``release()``: the client sees a
    command sent and no reply — where a worker killed now leaves a change made on the server that its own records
    cannot confirm. Installed on one simulation."""

    def __init__(self, sim: SimulatedExchange, cmdlet: str, *, after: int = 0, **parameters: str) -> None:
        self.cmdlet, self.parameters = cmdlet, parameters
        self.reached, self._released = threading.Event(), threading.Event()
        self._passed = after
        original = sim.invoke

        def invoke(server: str, endpoint: str, cmdlet: str, params: Sequence[tuple[str | None, Any]],
                   **kwargs: Any) -> SimResult:
            result = original(server, endpoint, cmdlet, params, **kwargs)  # executed, and recorded in sim.commands
            if not self.reached.is_set() and self._matches(cmdlet, params):
                if self._passed > 0:
                    self._passed -= 1
                else:
                    self.reached.set()
                    self._released.wait(timeout=120)  # the endpoint runs each pipeline on its own thread
            return result

        sim.invoke = invoke  # type: ignore[method-assign] - the endpoint looks it up per command

    def _matches(self, cmdlet: str, params: Sequence[tuple[str | None, Any]]) -> bool:
        given = {str(n): str(v) for n, v in params}
        return cmdlet == self.cmdlet and all(given.get(k) == v for k, v in self.parameters.items())

    def release(self) -> None:
        self._released.set()


def maintenance_leftovers(sim: SimulatedExchange, name: str) -> list[str]:
    """What still keeps server ``name`` (partly) in maintenance, as the simulator sees it; [] when fully out."""
    server = sim.servers[name]
    left = [f"{c} is {server.components.effective(c)}" for c in server.components.names
            if c not in INACTIVE_BY_DESIGN and server.components.effective(c) != "Active"]
    left += [f"{c} keeps a Maintenance {v} vote" for c in server.components.names
             if (v := server.components.holders(c).get("Maintenance")) not in (None, "Active")]
    transport = server.transport
    if transport.observed_hub_state != "Active" or not transport.is_ready(sim.clock.now()):
        left.append(f"transport acts on HubTransport {transport.observed_hub_state}, ready: "
                    f"{transport.is_ready(sim.clock.now())}")
    if server.dag is not None:
        if server.cluster_state != "Up":
            left.append(f"cluster node {server.cluster_state}")
        if server.move_now or server.activation_policy == "Blocked":
            left.append(f"activation {server.activation_policy}, move now {server.move_now}")
    return left
