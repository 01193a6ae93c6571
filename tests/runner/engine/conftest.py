"""Fixtures of the engine tests: a simulated EX01 whose clock starts now, and the simulator served over WinRM/PSRP
to the inventory (for the real pypsrp client, in this process or in a worker)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from changes.models import Server
from exchange_sim.endpoint import RunningEndpoint, start_endpoint
from exchange_sim.model import SimulatedExchange
from runner.clock import SimulatedClock

from .support import Hooks, build_test_plan, organisation, sim_factory

USER, PASSWORD = "exmaint-svc", "Sim-Passw0rd-for-tests"


@pytest.fixture
def sim() -> SimulatedExchange:
    return organisation(standalone=("EX01",))


@pytest.fixture
def clock(sim: SimulatedExchange) -> SimulatedClock:
    return SimulatedClock(sim)


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def opened() -> list:
    """Every session set the engine opened (to check they were all closed)."""
    return []


@pytest.fixture
def engine_kwargs(sim, clock, hooks, opened, servers) -> dict:
    return {"clock": clock, "sessions_factory": sim_factory(sim, opened), "plan_builder": build_test_plan(hooks)}


@pytest.fixture
def serve(servers) -> Iterator[Callable[[SimulatedExchange], RunningEndpoint]]:
    """``serve(sim)``: serve ``sim`` over WinRM/PSRP (basic auth, loopback) until the test ends and point the
    inventory's rows of its servers at it, so the engine reaches them through the real pypsrp client."""
    with contextlib.ExitStack() as stack:
        def start(sim: SimulatedExchange) -> RunningEndpoint:
            endpoint = stack.enter_context(start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)))
            for server in Server.objects.filter(name__in=list(sim.servers)):
                server.endpoint_url = endpoint.url_for(server.name, "Microsoft.Exchange")
                server.winrm_url = endpoint.url_for(server.name, "Microsoft.PowerShell")
                server.auth_method, server.username = "basic", USER
                server.set_password(PASSWORD)
                server.save()
            return endpoint

        yield start
