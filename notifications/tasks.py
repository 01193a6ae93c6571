"""Thin Celery tasks: take ids, call one dispatch function."""
from __future__ import annotations

import os
import socket
from typing import Any

from celery import shared_task

from . import dispatch
from .outbox import kick


@shared_task(name="notifications.tasks.send_delivery", bind=True, acks_late=True, reject_on_worker_lost=True)
def send_delivery(self: Any, delivery_id: int) -> str:
    worker = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    return dispatch.deliver(delivery_id, worker=worker)


@shared_task(name="notifications.tasks.dispatch_due")
def dispatch_due() -> list[int]:
    """The periodic sweep (beat): queue every due delivery — reminders, retries, rows whose queue message was lost
    while the broker was down, and rows of dead workers. Claims are compare-and-set, so a duplicate is harmless."""
    ids = dispatch.due_ids()
    for delivery_id in ids:
        kick(delivery_id)
    return ids
