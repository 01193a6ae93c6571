"""Issue 24, items 2 and 3 in the engine: its writes ride out a database outage (retried on a fresh connection for a
lease's length, never by sending a command again), a longer outage ends the run cleanly for the sweep to resume, and
each command is on the step's log before it is sent."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from changes.models import StepRun, WindowRun
from runner import engine, persistence
from runner.engine import RESUMED, run_window
from runner.persistence import DatabaseUnavailable, with_retry
from runner.scheduler import resume_held_windows

from .support import mutating_commands, running_change

pytestmark = pytest.mark.django_db(transaction=True)

S = StepRun.Status
DRAINING = ("Set-ServerComponentState", (("Component", "HubTransport"), ("Identity", "EX01"),
                                         ("Requester", "Maintenance"), ("State", "Draining")))


class Outage:
    """The database as this thread's connection sees it: up, down (every query fails as PostgreSQL's do after a
    restart), or down for the next ``n`` queries."""

    def __init__(self) -> None:
        self.down, self.failures_left, self.refused = False, 0, 0

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        if self.down or self.failures_left > 0:
            self.failures_left = max(0, self.failures_left - 1)
            self.refused += 1
            raise OperationalError("terminating connection due to administrator command")
        return execute(sql, params, many, context)


@pytest.fixture
def outage() -> Iterator[Outage]:
    state = Outage()
    with connection.execute_wrapper(state):
        yield state


def test_with_retry_backs_off_until_the_database_answers_and_gives_up_after_its_budget() -> None:
    calls, slept = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OperationalError("the connection is closed")
        return "written"

    assert with_retry(flaky, what="a write", budget=60, sleep=slept.append) == "written"
    assert slept == [0.5, 1.0, 2.0]

    def dead() -> None:
        raise OperationalError("connection refused")

    with pytest.raises(DatabaseUnavailable, match="a write: the database was unreachable"):
        with_retry(dead, what="a write", budget=0.2, sleep=lambda s: None)


def test_inside_a_transaction_the_write_is_not_retried_the_transaction_is() -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        raise OperationalError("gone")

    with pytest.raises(OperationalError), transaction.atomic():
        with_retry(failing, what="a write", budget=60, sleep=lambda s: None)
    assert calls == [1]


def test_a_short_outage_mid_step_delays_the_writes_and_the_run_goes_on(requester, sim, hooks, engine_kwargs,
                                                                        outage) -> None:
    change = running_change(requester)
    # The database drops while the step talks to Exchange: its next writes (the commands' intents) fail twice.
    hooks.on_enter["enter.hub_draining"] = lambda: setattr(outage, "failures_left", 2)
    assert run_window(change.pk, worker="w1", **engine_kwargs) == "held"
    assert outage.refused == 2
    hub = StepRun.objects.get(change=change, key="enter.hub_draining")
    assert (hub.status, hub.attempts, hub.issues) == (S.PASSED, 1, [])
    assert [(c["cmdlet"], c["outcome"]) for c in hub.commands] == [
        ("Get-ServerComponentState", "ok"), ("Set-ServerComponentState", "ok"), ("Get-ServerComponentState", "ok")]
    assert mutating_commands(sim).count(DRAINING) == 1


def test_a_longer_outage_ends_the_run_before_the_next_command_and_the_sweep_resumes_it(
        requester, sim, hooks, engine_kwargs, outage, monkeypatch) -> None:
    monkeypatch.setattr(persistence, "budget_seconds", lambda: 1.0)
    monkeypatch.setattr(engine, "RELEASE_RETRY_SECONDS", 0.3)
    change = running_change(requester)

    def database_goes_down() -> None:  # once: the re-run after the outage finds the database up
        outage.down = True
        hooks.on_enter.pop("enter.hub_draining")

    hooks.on_enter["enter.hub_draining"] = database_goes_down

    assert run_window(change.pk, worker="w1", **engine_kwargs) == "database unavailable"
    # The two earlier steps' reads reached the server; the step's first command was not sent: its intent could not
    # be recorded.
    assert [(c.cmdlet, dict(c.parameters)["Component"]) for c in sim.commands] == [
        ("Get-ServerComponentState", "ServerWideOffline"), ("Get-ServerComponentState", "HubTransport")]
    outage.down = False
    run = WindowRun.objects.get(change=change)
    assert run.lock_owner.startswith("w1#")  # the release failed too: the lease runs out by itself
    assert StepRun.objects.get(change=change, key="enter.hub_draining").status == S.RUNNING

    WindowRun.objects.filter(pk=run.pk).update(lock_expires_at=timezone.now() - timedelta(seconds=1))
    assert resume_held_windows() == [change.pk]
    assert run_window(change.pk, worker="w2", **engine_kwargs) == "held"
    hub = StepRun.objects.get(change=change, key="enter.hub_draining")
    assert (hub.status, hub.attempts, hub.issues[0]["summary"]) == (S.PASSED, 2, RESUMED)
    assert mutating_commands(sim).count(DRAINING) == 1


@contextmanager
def _intent_seen_by_the_server(sim, change, cmdlet: str) -> Iterator[list]:
    """What the step's row holds at the moment the server receives ``cmdlet``."""
    seen: list = []
    original = sim.invoke

    def invoke(server: str, endpoint: str, name: str, params: Any, **kwargs: Any) -> Any:
        if name == cmdlet and not seen:
            seen.append(StepRun.objects.get(change=change, status=S.RUNNING).commands)
        return original(server, endpoint, name, params, **kwargs)

    sim.invoke = invoke
    try:
        yield seen
    finally:
        sim.invoke = original


def test_each_command_is_on_the_step_log_with_outcome_sent_before_the_server_receives_it(
        requester, sim, engine_kwargs) -> None:
    change = running_change(requester)
    with _intent_seen_by_the_server(sim, change, "Set-ServerComponentState") as seen:
        assert run_window(change.pk, worker="w1", **engine_kwargs) == "held"
    [log] = seen
    assert [(c["cmdlet"], c["outcome"]) for c in log] == [
        ("Get-ServerComponentState", "ok"), ("Set-ServerComponentState", "sent")]
    assert log[-1]["parameters"]["State"] == "Draining" and log[-1]["step_attempt"] == 1


@pytest.mark.postgres
def test_a_connection_terminated_by_the_server_mid_step_is_replaced_and_the_run_goes_on(
        requester, sim, hooks, engine_kwargs) -> None:
    """What PostgreSQL's restart does to a worker: its backend is terminated ("terminating connection due to
    administrator command") while a step talks to Exchange."""
    change = running_change(requester)

    def terminate_the_engines_backend() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        import psycopg

        db = connection.settings_dict
        with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             password=db["PASSWORD"] or None, dbname=db["NAME"], autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

    hooks.on_enter["enter.hub_draining"] = terminate_the_engines_backend
    assert run_window(change.pk, worker="w1", **engine_kwargs) == "held"
    hub = StepRun.objects.get(change=change, key="enter.hub_draining")
    assert (hub.status, hub.attempts) == (S.PASSED, 1)
    assert mutating_commands(sim).count(DRAINING) == 1
