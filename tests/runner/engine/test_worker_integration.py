"""A real Celery worker (prefork, Redis broker, PostgreSQL) runs a window against the simulator served over
WinRM/PSRP in this process; the worker is SIGKILLed mid-step and a new worker finishes the window."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from changes.models import Change, Server, StepRun, WindowRun
from changes.run_services import change_work_done
from changes.states import State
from runner.scheduler import resume_held_windows
from runner.simulator.endpoint import start_endpoint
from runner.simulator.model import SimulatedExchange

from .support import mutating_commands, running_change

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD = "exmaint-svc", "Sim-Passw0rd-for-tests"


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker() -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(name: str, **env: str) -> subprocess.Popen:
        environment = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings", "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "EXMAINT_TASK_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "EXMAINT_VAR_DIR": str(settings.VAR_DIR), "EXMAINT_TEST_PLAN": "1", **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.runner.engine.worker_app", "worker",
             "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "--pool", "prefork", "-c", "1", "-n", f"{name}@%h",
             "--without-gossip", "--without-mingle", "-l", "info"],
            cwd=ROOT, env=environment, start_new_session=True,
            stdout=open(Path(settings.VAR_DIR) / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60, every: Callable[[], None] | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if every is not None:
            every()
        time.sleep(0.2)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in Path(settings.VAR_DIR).glob("*.log"))
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def step_status(change: Change, key: str) -> str:
    return StepRun.objects.filter(change=change, key=key).values_list("status", flat=True).first() or ""


def test_a_window_survives_a_sigkilled_worker_and_sends_no_mutating_command_twice(
        requester, operator, servers, start_worker) -> None:
    sim = SimulatedExchange(start=timezone.now())
    sim.add_standalone("EX01", fqdn="ex01.corp.example")
    with start_endpoint(sim, users={USER: PASSWORD}, auth=("basic",)) as endpoint:
        server = Server.objects.get(name="EX01")
        server.endpoint_url = endpoint.url_for("EX01", "Microsoft.Exchange")
        server.winrm_url = endpoint.url_for("EX01", "Microsoft.PowerShell")
        server.auth_method, server.username = "basic", USER
        server.set_password(PASSWORD)
        server.save()

        first = start_worker("w1", EXMAINT_LEASE_SECONDS="6", EXMAINT_TEST_SETTLE_SECONDS="30")
        change = running_change(requester)  # queues run_window on commit, through Redis
        wait_for(lambda: step_status(change, "enter.settle") == StepRun.Status.RUNNING, "the settle step to start")
        time.sleep(1)  # a few polls into the wait
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert step_status(change, "enter.settle") == StepRun.Status.RUNNING
        assert WindowRun.objects.get(change=change).lock_owner.startswith("w1@")

        start_worker("w2", EXMAINT_LEASE_SECONDS="6", EXMAINT_TEST_SETTLE_SECONDS="1")
        # The broker keeps the killed worker's message unacknowledged; the beat sweep finds the expired lease.
        wait_for(lambda: step_status(change, "work.hold") == StepRun.Status.RUNNING, "the work hold", timeout=90,
                 every=resume_held_windows)
        change_work_done(change, actor=operator, notes="patched")
        wait_for(lambda: Change.objects.get(pk=change.pk).state == State.COMPLETED, "completion")

        settle = StepRun.objects.get(change=change, key="enter.settle")
        assert settle.attempts == 2
        assert settle.issues[0]["summary"] == "found running after a worker crash"
        assert WindowRun.objects.get(change=change).lock_owner == ""
        sent = Counter(mutating_commands(sim))
        assert len(sent) == 4 and set(sent.values()) == {1}, sent
