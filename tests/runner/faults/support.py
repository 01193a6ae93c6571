"""Helpers of the fault suite: a fault started when the simulated server receives a given command, a timed outage,
the window's milestones read through an unreliable database, and the check that the step log lists every command
the server received."""
from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from changes import services
from changes.models import Alert, Change, StepRun, WindowRun
from changes.run_services import change_start
from changes.states import State
from exchange_sim.endpoint import RunningEndpoint, start_endpoint
from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimResult
from tests.conftest import make_user
from tests.support.catalogue import pre_approved
from tests.support.private_services import PrivatePostgres, PrivateRedis
from tests.support.workers import Workers

S = StepRun.Status
USER, PASSWORD = "exmaint-svc", "Sim-Passw0rd-for-faults"
SPEED = 60  # the simulator's and the worker's clocks run 60 times faster than the wall clock, as in the demo
APP = "tests.runner.engine.worker_app"
TEMPLATE = "exmaint_faults_template"
# The mutating commands of an uninterrupted standalone window, in order (tests/runner/engine/test_worker_integration).
STANDALONE_WINDOW = [
    ("Set-ServerComponentState", "HubTransport Draining"),
    ("Restart-Service", "MSExchangeTransport"),
    ("Restart-Service", "MSExchangeFrontEndTransport"),
    ("Set-ServerComponentState", "ServerWideOffline Inactive"),
    ("Set-ServerComponentState", "ServerWideOffline Active"),
    ("Set-ServerComponentState", "HubTransport Active"),
    ("Restart-Service", "MSExchangeTransport"),
    ("Restart-Service", "MSExchangeFrontEndTransport"),
]
MUTATING_VERBS = ("Set-", "Suspend-", "Resume-", "Restart-", "Redirect-", "Move-", "Start-", "Stop-")


def usable(read: Callable[[], Any], default: Any = None) -> Any:
    """``read()``, or ``default`` while this process cannot reach the database (its connection is replaced)."""
    try:
        return read()
    except (OperationalError, InterfaceError):
        with contextlib.suppress(Exception):
            connection.close()
        return default


class Endpoint:
    """The simulator's WinRM/PSRP endpoint, which the test may kill and bring back on the same port."""

    def __init__(self, sim: SimulatedExchange) -> None:
        self.sim = sim
        self.running: RunningEndpoint | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        self.running = start_endpoint(self.sim, port=self.port, users={USER: PASSWORD}, auth=("basic",))
        self.port = self.running.port

    def stop(self) -> None:
        """Gone: no new connection is accepted and the client's open keep-alive connections are dropped."""
        if self.running is not None:
            self.running.fail_next(10**9, mode="drop")
            self.running.stop()
            self.running = None


class World:
    """What one fault test works with."""

    def __init__(self, pg: PrivatePostgres, redis: PrivateRedis, workers: Workers, sim: SimulatedExchange,
                 endpoint: Endpoint) -> None:
        self.pg, self.redis, self.workers, self.sim, self.endpoint = pg, redis, workers, sim, endpoint
        self.requester = make_user("servicenow", "requester", source="servicenow", client=True)
        self.operator = make_user("olga", "operator")
        self._last_sweep = 0.0

    def worker(self, name: str, **env: str) -> subprocess.Popen:
        """A worker on the private database and broker running the real plan in scaled time."""
        settings = {"EXMAINT_RUNNER_CLOCK": f"scaled:{SPEED}", "EXMAINT_LEASE_SECONDS": "5",
                    "CELERY_BROKER_URL": self.redis.url, **env}
        return self.workers.start(name, app=APP, **settings)

    def sweep(self) -> None:
        """The beat's resume_held_windows, at most every 5 s; failing quietly while a service is down."""
        from runner.scheduler import resume_held_windows

        if time.monotonic() - self._last_sweep < 5:
            return
        self._last_sweep = time.monotonic()
        with contextlib.suppress(Exception):
            usable(resume_held_windows)


def running_change(requester: Any, hours: float = 8) -> Change:
    """A standard change on EX01 whose window opened 5 minutes ago and lasts ``hours`` (at the worker's 60× clock,
    8 hours are 8 real minutes: the work hold does not time out during a test), started: its run is queued."""
    now = timezone.now()
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": "CHG-FAULT", "title": "Patch", "description": "",
        "change_type": "standard", "risk": "low", "impact": "low", "servers": ["EX01"], "plan": "maintenance",
        "window_start": now - timedelta(minutes=5), "window_end": now - timedelta(minutes=5) + timedelta(hours=hours),
        "requested_by": "carol@example.com", "notify": [], "callback_url": "",
        "standard_template": pre_approved(["EX01"]),
    })
    change_start(change, actor="system:scheduler")
    change.refresh_from_db()
    return change


class OnCommand:
    """Runs ``action`` once, on the simulator's thread, when the server has executed the first command matching
    ``cmdlet`` and ``parameters`` and before the client gets the answer: the fault hits mid-step."""

    def __init__(self, sim: SimulatedExchange, cmdlet: str, action: Callable[[], None], **parameters: str) -> None:
        self.done = threading.Event()
        original = sim.invoke

        def invoke(server: str, endpoint: str, name: str, params: Sequence[tuple[str | None, Any]],
                   **kwargs: Any) -> SimResult:
            result = original(server, endpoint, name, params, **kwargs)
            given = {str(n): str(v) for n, v in params}
            if (not self.done.is_set() and name == cmdlet
                    and all(given.get(k) == v for k, v in parameters.items())):
                self.done.set()
                action()
            return result

        sim.invoke = invoke  # type: ignore[method-assign] - the endpoint looks it up per command


class Outage:
    """``stop()`` now, ``start()`` after ``seconds`` on a thread of its own; ``returned`` is set (and
    ``returned_at``, monotonic) once the service is back."""

    def __init__(self, stop: Callable[[], None], start: Callable[[], None], seconds: float) -> None:
        self._stop, self._start, self.seconds = stop, start, seconds
        self.stopped, self.returned = threading.Event(), threading.Event()
        self.returned_at = 0.0

    def begin(self) -> None:
        self._stop()
        self.stopped.set()
        threading.Thread(target=self._end, daemon=True, name="outage").start()

    def _end(self) -> None:
        time.sleep(self.seconds)
        self._start()
        self.returned_at = time.monotonic()
        self.returned.set()


def state(change: Change) -> str:
    return usable(lambda: Change.objects.get(pk=change.pk).state, "")


def step_status(change: Change, key: str) -> str:
    return usable(lambda: StepRun.objects.filter(change=change, key=key).values_list("status", flat=True).first(), "")


def parked_on_the_work_hold(change: Change) -> bool:
    def read() -> bool:
        run = WindowRun.objects.get(change=change)
        return (Change.objects.get(pk=change.pk).state == State.RUNNING
                and step_status(change, "work.hold") == S.RUNNING and run.lock_owner == "" and run.wake_at is not None)

    return bool(usable(read, False))


def finished(change: Change) -> bool:
    """Completed, and the lease released by the worker that completed it."""
    return bool(usable(lambda: state(change) == State.COMPLETED
                       and WindowRun.objects.get(change=change).lock_owner == "", False))


def wait(world: World, condition: Callable[[], bool], what: str, *, timeout: float, since: float | None = None,
         sweep: bool = True) -> float:
    """Wait for ``condition`` (the beat's sweep running meanwhile); ``since`` (monotonic) counts the timeout from
    then, e.g. from a service's return. Returns the seconds it took from ``since`` (or from now)."""
    start = since if since is not None else time.monotonic()
    world.workers.wait_for(condition, what, timeout=max(1.0, start + timeout - time.monotonic()),
                           every=world.sweep if sweep else None)
    return time.monotonic() - start


def mutating_sequence(sim: SimulatedExchange) -> list[tuple[str, str]]:
    """The mutating commands the simulated server received, in order, as (cmdlet, what it set)."""
    out = []
    for command in sim.commands:
        if not command.cmdlet.startswith(MUTATING_VERBS):
            continue
        params = {str(n): str(v) for n, v in command.parameters}
        target = params.get("Component") or params.get("Name") or ""
        out.append((command.cmdlet, " ".join(filter(None, (target, params.get("State"))))))
    return out


def _key(cmdlet: str, parameters: Any) -> tuple:
    pairs = parameters.items() if isinstance(parameters, dict) else parameters
    return cmdlet, tuple(sorted((str(n), str(v)) for n, v in pairs if str(n) != "Confirm"))


def missing_from_the_step_log(sim: SimulatedExchange, change: Change) -> Counter:
    """Commands the simulated server received that no step of the change records (every attempt's log counts);
    empty when the step log lists everything the server received."""
    received = Counter(_key(c.cmdlet, c.parameters) for c in sim.commands)
    logged = Counter(_key(c["cmdlet"], c.get("parameters") or {})
                     for step in StepRun.objects.filter(change=change) for c in step.commands or [])
    return received - logged


def alerts(change: Change) -> list[tuple[str, str]]:
    return list(Alert.objects.filter(change=change).values_list("kind", "message"))


def check_the_window(world: World, change: Change) -> None:
    """What every fault test ends with: each write sent once, in the procedure's order; every command the server
    received is on the step log; the server is out of maintenance; the lease is free."""
    from tests.runner.engine.support import maintenance_leftovers

    assert mutating_sequence(world.sim) == STANDALONE_WINDOW
    missing = missing_from_the_step_log(world.sim, change)
    assert not missing, f"received by the server but not on the step log: {missing}"
    assert maintenance_leftovers(world.sim, "EX01") == []
    assert set(StepRun.objects.filter(change=change).values_list("status", flat=True)) <= {S.PASSED, S.SKIPPED}
    if WindowRun.objects.get(change=change).lock_owner:
        pytest.fail("the lease is still held after completion")
