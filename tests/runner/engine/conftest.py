"""Fixtures of the engine tests: a simulated EX01 whose clock starts now, and the Redis marker check."""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.utils import timezone

from runner.clock import SimulatedClock
from runner.simulator.model import SimulatedExchange
from tests.conftest import need_service

from .support import Hooks, build_test_plan, sim_factory


@pytest.fixture(autouse=True)
def _require_redis(request: pytest.FixtureRequest) -> None:
    """Tests marked redis need a reachable Redis broker: they skip on a developer machine and fail under CI=true."""
    if not request.node.get_closest_marker("redis"):
        return
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        need_service("Redis", RuntimeError(f"CELERY_BROKER_URL is {url!r}; set redis://127.0.0.1:6379/0"))
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                raise RuntimeError("no PONG")
    except (OSError, RuntimeError) as exc:
        need_service("Redis", exc)


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange(start=timezone.now())
    sim.add_standalone("EX01", fqdn="ex01.corp.example")
    return sim


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
