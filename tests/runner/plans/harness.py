"""Running a plan's steps in order against the in-process simulator, stopping at failures and holds."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from runner.clock import SimulatedClock
from runner.context import ExecutionContext
from runner.exchange import cmdlets
from runner.exchange.session import Endpoint
from runner.plans import build_plan
from runner.step_types import Hold, Options, Phase, Plan, ServerInfo, Step, StepFailed, StepOutcome

KEY_PARAMETERS = ("Identity", "Server", "Name", "Component", "State", "Requester", "Target",
                  "DatabaseCopyActivationDisabledAndMoveNow", "DatabaseCopyAutoActivationPolicy", "MoveComment")


def server_info(sim: SimulatedExchange, name: str) -> ServerInfo:
    """What the inventory would say about ``name``."""
    server = sim.servers[name]
    peers: tuple[ServerInfo, ...] = ()
    if server.dag:
        peers = tuple(ServerInfo(m, sim.servers[m].fqdn, server.dag) for m in sim.dags[server.dag].members
                      if m != name)
    return ServerInfo(name, server.fqdn, server.dag, peers, server.version)


@dataclass
class Run:
    """One window against the simulator: the plan, its context and what each step did."""

    sim: SimulatedExchange
    plan: Plan
    ctx: ExecutionContext
    outcomes: dict[str, StepOutcome | StepFailed | Hold] = field(default_factory=dict)

    def step(self, key: str) -> StepOutcome:
        """Run one step; StepFailed and Hold propagate."""
        outcome = self.plan.step(key).run(self.ctx)
        self.outcomes[key] = outcome
        return outcome

    def phases(self, *phases: Phase, until: str | None = None) -> StepFailed | Hold | None:
        """Run the steps of ``phases`` in order; stop at (and return) the first failure or hold, or after ``until``."""
        for step in self.plan.steps:
            if step.phase not in phases:
                continue
            try:
                self.step(step.key)
            except (StepFailed, Hold) as exc:
                self.outcomes[step.key] = exc
                return exc
            if step.key == until:
                break
        return None

    def steps(self, phase: Phase) -> list[Step]:
        return list(self.plan.phase(phase))

    def work_done(self, notes: str = "patched") -> None:
        self.ctx.state["work_done"] = True
        self.ctx.state["work_notes"] = notes

    def all_through(self) -> None:
        """Pre-checks, entry, work (reported done), exit and verification, each expected to pass."""
        for phase in (Phase.PRECHECK, Phase.ENTER):
            assert self.phases(phase) is None, self.outcomes
        self.work_done()
        for phase in (Phase.WORK, Phase.EXIT, Phase.VERIFY):
            assert self.phases(phase) is None, self.outcomes
        # The engine persists both: they must survive JSON.
        json.dumps(self.ctx.state)
        json.dumps([o.findings for o in self.outcomes.values() if isinstance(o, StepOutcome)])

    def mark(self) -> int:
        return len(self.sim.commands)

    def mutating(self, since: int = 0) -> list[tuple[Any, ...]]:
        """Mutating commands the simulator received since ``since``: cmdlet plus the key parameters."""
        out = []
        for record in self.sim.commands[since:]:
            if cmdlets.is_read(record.cmdlet):
                continue
            params = tuple(f"{n}={_show(v)}" for n, v in record.parameters if n in KEY_PARAMETERS)
            out.append((record.cmdlet, *params))
        return out

    def components(self, server: str | None = None) -> dict[str, str]:
        target = self.sim.servers[server or self.ctx.server.name]
        return {name: target.components.effective(name) for name in target.components.names}

    def issues(self) -> list[str]:
        return [i.summary for o in self.outcomes.values() if isinstance(o, StepOutcome) for i in o.issues]

    def reads(self, cmdlet: str, since: int = 0) -> list[Any]:
        """The simulator's records of ``cmdlet`` since ``since`` (reads included)."""
        return [r for r in self.sim.commands[since:] if r.cmdlet == cmdlet]

    def index(self, cmdlet: str, **parameters: Any) -> list[int]:
        """Positions in the simulator's command log of ``cmdlet`` with these parameter values (str-compared)."""
        return [i for i, r in enumerate(self.sim.commands) if r.cmdlet == cmdlet
                and all(str(r.get(k)) == str(v) for k, v in parameters.items())]


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def start(sim: SimulatedExchange, name: str, options: Options | None = None, *, window_hours: float = 4,
          server: ServerInfo | None = None) -> Run:
    """A run against ``name``; ``server`` replaces what the inventory says (to make it disagree with the server)."""
    options = options or Options()
    server = server or server_info(sim, name)
    sessions = {Endpoint.EXCHANGE: SimulatorSession(sim, name), Endpoint.DEFAULT: SimulatorSession(sim, name)}
    end = sim.clock.now() + timedelta(hours=window_hours)
    ctx = ExecutionContext(server=server, sessions=sessions, clock=SimulatedClock(sim), options=options,
                           state={"window_end": end.isoformat()})
    return Run(sim, build_plan("maintenance", server, options), ctx)


def fully_active(states: dict[str, str], *, besides: tuple[str, ...] = ()) -> bool:
    """Active everywhere except the two components Inactive by design (and ``besides``)."""
    return all(state == "Active" for name, state in states.items()
               if name not in ("ForwardSyncDaemon", "ProvisioningRps", *besides))
