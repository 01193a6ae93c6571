"""Domain errors. The API's exception handler maps each to its HTTP status with a stable code."""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A rule refused the request. ``code`` is stable for clients; ``detail`` says what is wrong."""

    status = 400
    code = "invalid"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidRequest(DomainError):
    status = 400
    code = "invalid"


class UnknownServers(DomainError):
    status = 400
    code = "unknown_servers"


class WindowInvalid(DomainError):
    status = 422
    code = "window_invalid"


class ScheduleConflict(DomainError):
    status = 409
    code = "schedule_conflict"


class FreezeConflict(DomainError):
    status = 409
    code = "freeze_window"


class IdempotencyConflict(DomainError):
    status = 409
    code = "idempotency_conflict"


class StateConflict(DomainError):
    """The change is not in a state that allows this (also: someone else moved it first)."""

    status = 409
    code = "state_conflict"


class SeparationOfDuties(DomainError):
    status = 403
    code = "separation_of_duties"


class AlreadyDecided(DomainError):
    status = 409
    code = "already_decided"


class NotPermitted(DomainError):
    status = 403
    code = "permission_denied"
