"""Follow-up work queued on commit, by task name: ``changes`` reaches ``runner`` only this way."""
from __future__ import annotations

import logging
from datetime import datetime

from celery import current_app
from django.db import transaction

RUN_TASK = "runner.tasks.run_window"
START_TASK = "runner.tasks.start_window"
REPORT_TASK = "reports.tasks.generate_report"

log = logging.getLogger(__name__)


def send_task_safely(name: str, args: list, eta: datetime | None = None) -> None:
    """Queue a Celery task; a broker outage is logged, never raised."""
    # The state change has committed: a broker outage must not turn it into an error for the caller. Every message
    # has a sweep behind it (start_due_windows, resume_held_windows; the report is also made on first download).
    try:
        current_app.send_task(name, args=args, eta=eta)
    except Exception:  # noqa: BLE001 - any broker failure; logged with its traceback
        log.exception("could not queue %s%s; the periodic sweep will pick it up", name, args)


def enqueue_run(change_id: int, *, eta: datetime | None = None) -> None:
    """Queue the engine for a change once the current transaction commits."""
    transaction.on_commit(lambda: send_task_safely(RUN_TASK, [change_id], eta))


def enqueue_start(change_id: int, window_start: datetime) -> None:
    """Queue the start of a scheduled window at its start time (a periodic sweep catches a lost message)."""
    transaction.on_commit(lambda: send_task_safely(START_TASK, [change_id], window_start))


def enqueue_report(change_id: int) -> None:
    """Queue the window's PDF report once the transition that ended the window commits."""
    transaction.on_commit(lambda: send_task_safely(REPORT_TASK, [change_id]))
