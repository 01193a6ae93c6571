"""A real Celery worker (prefork, Redis, PostgreSQL) is SIGKILLed in the middle of an e-mail's second Bcc batch; a
new worker resumes after the last recorded batch: every recipient gets the announcement exactly once."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings

from notifications.models import Delivery
from notifications.tasks import dispatch_due
from tests.runner.engine.test_worker_integration import database_url

from .fixtures import create, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


class GatedSink:
    """Accepts messages, except that the second one is held (no reply) until the test lets go — then refused, as
    happens when the client died before the SMTP server said 250."""

    def __init__(self) -> None:
        self.accepted: list[list[str]] = []
        self.arrivals = 0
        self.release = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.arrivals += 1
        if self.arrivals == 2:
            while not self.release:
                await asyncio.sleep(0.05)
            return "421 closing: the client is gone"
        self.accepted.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def start_worker() -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(name: str, smtp_port: int) -> subprocess.Popen:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.notifications.settings",
               "DATABASE_URL": database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
               "EXMAINT_TASK_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE, "EXMAINT_VAR_DIR": str(settings.VAR_DIR),
               "EXMAINT_TEST_SMTP_PORT": str(smtp_port), "EXMAINT_TEST_LEASE_SECONDS": "3"}
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.notifications.worker_app", "worker",
             "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "--pool", "prefork", "-c", "1", "-n", f"{name}@%h",
             "--without-gossip", "--without-mingle", "-l", "info"],
            cwd=ROOT, env=env, start_new_session=True,
            stdout=open(Path(settings.VAR_DIR) / f"notif-{name}.log", "wb"), stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60,
             every: Callable[[], Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if every is not None:
            every()
        time.sleep(0.2)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in Path(settings.VAR_DIR).glob("notif-*.log"))
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def test_a_sigkilled_worker_mid_send_leaves_nobody_mailed_twice(requester, servers, start_worker) -> None:
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        from tests.conftest import need_service

        need_service("Redis", RuntimeError("set CELERY_BROKER_URL=redis://…"))
    sink = GatedSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        first = start_worker("n1", port)
        notify = tuple(f"user{n:02d}@example.com" for n in range(25))
        change = create(requester, change_type="standard", notify=notify)  # queued on commit, through Redis
        row = Delivery.objects.get(change=change, kind="announcement")
        wait_for(lambda: sink.arrivals >= 2, "the second batch to reach the SMTP server")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        sink.release = True
        row.refresh_from_db()
        assert (row.status, row.batches_sent) == ("sending", 1)

        start_worker("n2", port)
        # The killed worker's message stays unacknowledged in Redis; the sweep re-queues the row once its lease ends.
        wait_for(lambda: Delivery.objects.get(pk=row.pk).status == "sent", "the announcement to be sent",
                 every=dispatch_due)
    finally:
        controller.stop()
    row.refresh_from_db()
    everyone = [r for batch in sink.accepted for r in batch]
    assert sorted(everyone) == sorted(notify)  # all 25, each once
    assert [len(b) for b in sink.accepted] == [10, 10, 5]
    assert row.batches_sent == 3 and row.attempts == 2
