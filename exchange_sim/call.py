"""What a cmdlet handler sees (``Call``) and what it may use of the organisation (``Organisation``).

Handlers (``cmdlets_*.py``) import this module, never ``model``: ``model`` imports the handler modules so that they
register in ``binding.REGISTRY``, and an import back would make a cycle. ``model.SimulatedExchange`` implements
``Organisation``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .clock import SimClock
from .databases import Dag, Database
from .errors import ErrorFactory
from .objects import SimError, SimResult, SimTerminatingError
from .servers import Server

DOMAIN_CONTROLLER = "DC01.contoso.com"


class Organisation(Protocol):
    """The simulated organisation as the cmdlet handlers use it: state, lookups and the shared rules."""

    clock: SimClock
    servers: dict[str, Server]
    databases: dict[str, Database]
    dags: dict[str, Dag]
    error_factory: ErrorFactory

    def advance(self, seconds: float) -> None: ...

    def find_server(self, identity: str) -> Server | None: ...

    def find_database(self, identity: str) -> Database | None: ...

    def find_dag(self, identity: str) -> Dag | None: ...

    def fqdn_map(self) -> dict[str, str]: ...

    def components_changed(self, server: Server) -> None: ...

    def node_paused(self, dag: Dag, node: Server) -> None: ...

    def move_pam(self, dag: Dag, to: str | None = None) -> bool: ...

    def move_target(self, db: Database, *, exclude: str, preferred: str | None = None,
                    skip_health: bool = False, skip_lag: bool = False) -> tuple[str | None, str]: ...


@dataclass
class Call:
    """What a cmdlet handler sees: the organisation, the connection server, bound arguments and its result."""

    sim: Organisation
    server: Server
    cmdlet: str
    args: dict[str, Any]
    result: SimResult = field(default_factory=SimResult)

    @property
    def now(self) -> datetime:
        return self.sim.clock.now()

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    def output(self, *objects: Any) -> None:
        self.result.output.extend(objects)

    def warn(self, text: str) -> None:
        self.result.warnings.append(text)

    def not_found(self, identity: str) -> None:
        """Exchange's non-terminating "couldn't be found" record."""
        self.result.errors.append(
            self.sim.error_factory.not_found(server=self.server.name, now=self.now, cmdlet=self.cmdlet,
                                             identity=identity, dc=DOMAIN_CONTROLLER)
        )

    def task_error(self, message: str, *, exception: str, category: str, target: str = "") -> SimError:
        return self.sim.error_factory.task_error(server=self.server.name, now=self.now, cmdlet=self.cmdlet,
                                                 message=message, exception=exception, category=category,
                                                 target=target)

    def error(self, message: str, *, exception: str, category: str, target: str = "") -> None:
        """A non-terminating error record; the cmdlet carries on."""
        self.result.errors.append(self.task_error(message, exception=exception, category=category, target=target))

    def fail(self, message: str, *, exception: str, category: str, target: str = "") -> SimTerminatingError:
        """A terminating error for the handler to raise."""
        return SimTerminatingError(self.task_error(message, exception=exception, category=category, target=target))

    def plain_error(self, error: SimError) -> None:
        self.result.errors.append(error)
