"""Domain events, delivered synchronously inside the transaction that caused them.

Other apps (notifications: the transactional outbox) register a handler in their AppConfig.ready(). A handler runs
in the caller's transaction, so what it writes commits or rolls back with the change itself; it must only write
rows (never do I/O: that is for the Celery tasks it queues on commit). Unlike Django signals, every emit is an
explicit call in a service, next to the audit append it accompanies.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[..., str | None]
_handlers: list[Handler] = []

CHANGE_CREATED = "change.created"  # change
CHANGE_UPDATED = "change.updated"  # change, diff={field: [before, after]}
CHANGE_TRANSITION = "change.transition"  # change, old, new, actor, reason
ALERT_RAISED = "alert.raised"  # change (or None), alert
# client (an ApiClient), actor. A handler may return a line for the operator who created the client, shown once
# (notifications answers with the client's callback signing secret).
API_CLIENT_CREATED = "api_client.created"
# seq, hash, line (the JSON line the sinks get), after an anchor of the audit chain is written (changes/anchors.py).
# A handler that keeps a copy returns the sink's name (notifications: "email", the auditors' mail in the outbox).
AUDIT_ANCHORED = "audit.anchored"


def register(handler: Handler) -> None:
    """``handler(event: str, **data)``; registering the same handler twice has no effect."""
    if handler not in _handlers:
        _handlers.append(handler)


def unregister(handler: Handler) -> None:
    if handler in _handlers:
        _handlers.remove(handler)


def emit(event: str, **data: Any) -> list[str]:
    """Run every handler; return the lines they returned (None is skipped), in registration order."""
    lines = []
    for handler in list(_handlers):
        line = handler(event, **data)
        if line is not None:
            lines.append(line)
    return lines
