"""Follow-up work queued on commit, by task name: ``changes`` reaches ``runner`` only this way."""
from __future__ import annotations

from datetime import datetime

from celery import current_app
from django.db import transaction

RUN_TASK = "runner.tasks.run_window"
START_TASK = "runner.tasks.start_window"
REPORT_TASK = "reports.tasks.generate_report"


def enqueue_run(change_id: int, *, eta: datetime | None = None) -> None:
    """Queue the engine for a change once the current transaction commits."""
    transaction.on_commit(lambda: current_app.send_task(RUN_TASK, args=[change_id], eta=eta))


def enqueue_start(change_id: int, window_start: datetime) -> None:
    """Queue the start of a scheduled window at its start time (a periodic sweep catches a lost message)."""
    transaction.on_commit(lambda: current_app.send_task(START_TASK, args=[change_id], eta=window_start))


def enqueue_report(change_id: int) -> None:
    """Queue the window's PDF report once the transition that ended the window commits."""
    transaction.on_commit(lambda: current_app.send_task(REPORT_TASK, args=[change_id]))
