"""Thin Celery tasks: take ids, call one function. Names match ``changes.queue`` and the beat schedule."""
from __future__ import annotations

import os
import socket
from typing import Any

from celery import shared_task

from . import conf, engine, scheduler
from . import watchdog as watchdog_module


@shared_task(name="runner.tasks.run_window", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_window(self: Any, change_id: int) -> str:
    # The lease is taken per call with a unique suffix; host and pid say which worker held it.
    worker = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    return engine.run_window(change_id, worker=worker, clock=conf.make_clock())


@shared_task(name="runner.tasks.start_window", acks_late=True)
def start_window(change_id: int) -> str:
    return scheduler.start_window(change_id)


@shared_task(name="runner.tasks.start_due_windows")
def start_due_windows() -> list[int]:
    return scheduler.start_due_windows()


@shared_task(name="runner.tasks.resume_held_windows")
def resume_held_windows() -> list[int]:
    return scheduler.resume_held_windows()


@shared_task(name="runner.tasks.watch_runs")
def watch_runs() -> dict[str, Any]:
    return watchdog_module.watch_runs().as_dict()


@shared_task(name="runner.tasks.watchdog")
def watchdog() -> dict[str, Any]:
    report = watchdog_module.watchdog()
    return {"overrun": report.overrun, "left_in_maintenance": report.left_in_maintenance,
            "unreachable": report.unreachable, **(report.runs.as_dict() if report.runs else {})}
