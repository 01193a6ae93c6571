"""Thin Celery task: the report is generated when a window ends (queued on commit by ``changes``, by name)."""
from __future__ import annotations

from celery import shared_task

from . import services

# The end-of-window e-mail and the final ITSM callback are queued by the same transition as this task: give them a
# little time so the report's notifications section includes them (it lists what was sent up to the report's head).
SETTLE_RETRIES, SETTLE_SECONDS = 12, 5


@shared_task(name="reports.tasks.generate_report", bind=True, acks_late=True, max_retries=SETTLE_RETRIES)
def generate_report(self, change_id: int) -> str:  # noqa: ANN001 - Celery's bound task
    if not services.notifications_settled(change_id) and self.request.retries < SETTLE_RETRIES:
        raise self.retry(countdown=SETTLE_SECONDS)
    return services.report_generate(change_id).sha256
