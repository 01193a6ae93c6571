"""Thin Celery task: the report is generated when a window ends (queued on commit by ``changes``, by name)."""
from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="reports.tasks.generate_report", acks_late=True)
def generate_report(change_id: int) -> str:
    return services.report_generate(change_id).sha256
