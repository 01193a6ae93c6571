"""A real Celery worker (prefork, Redis, PostgreSQL) is SIGKILLed in the middle of an e-mail's second Bcc batch; a
new worker resumes after the last recorded batch: every recipient gets the announcement exactly once."""
from __future__ import annotations

import asyncio
import subprocess
import threading
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from notifications.models import Delivery
from notifications.tasks import dispatch_due
from tests.support.workers import Workers

from .fixtures import create, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


class GatedSink:
    """Accepts messages, except that the second one is held (no reply) until the test lets go — then refused, as
    happens when the client died before the SMTP server said 250."""

    def __init__(self) -> None:
        self.accepted: list[list[str]] = []
        self.arrivals = 0
        self.released = threading.Event()  # set by the test thread; awaited in the SMTP server's event loop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.arrivals += 1
        if self.arrivals == 2:
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait, 120)
            return "421 closing: the client is gone"
        self.accepted.append(list(envelope.rcpt_tos))
        return "250 OK"


def start_worker(workers: Workers, name: str, smtp_port: int) -> subprocess.Popen:
    """A worker running the notifications app, mailing through the test's SMTP server, with a 3 s lease."""
    return workers.start(name, app="tests.notifications.worker_app", settings_module="tests.notifications.settings",
                         EXMAINT_TEST_SMTP_PORT=str(smtp_port), EXMAINT_TEST_LEASE_SECONDS="3")


def test_a_sigkilled_worker_mid_send_leaves_nobody_mailed_twice(requester, servers, celery_workers) -> None:
    sink = GatedSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        first = start_worker(celery_workers, "n1", port)
        notify = tuple(f"user{n:02d}@example.com" for n in range(25))
        change = create(requester, change_type="standard", notify=notify)  # queued on commit, through Redis
        row = Delivery.objects.get(change=change, kind="announcement")
        celery_workers.wait_for(lambda: sink.arrivals >= 2, "the second batch to reach the SMTP server")
        celery_workers.kill(first)
        sink.released.set()
        row.refresh_from_db()
        assert (row.status, row.batches_sent) == ("sending", 1)

        start_worker(celery_workers, "n2", port)
        # The killed worker's message stays unacknowledged in Redis; the sweep re-queues the row once its lease ends.
        celery_workers.wait_for(lambda: Delivery.objects.get(pk=row.pk).status == "sent",
                                "the announcement to be sent", every=dispatch_due)
    finally:
        sink.released.set()  # never leave the held SMTP session waiting when the test fails early
        controller.stop()
    row.refresh_from_db()
    everyone = [r for batch in sink.accepted for r in batch]
    assert sorted(everyone) == sorted(notify)  # all 25, each once
    assert [len(b) for b in sink.accepted] == [10, 10, 5]
    assert row.batches_sent == 3 and row.attempts == 2
