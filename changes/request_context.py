"""The current request id, carried to audit events without threading it through every call."""
from __future__ import annotations

from contextvars import ContextVar

_request_id: ContextVar[str] = ContextVar("exmaint_request_id", default="")


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str):  # noqa: ANN201 - returns a ContextVar token
    return _request_id.set(value)


def reset_request_id(token) -> None:  # noqa: ANN001
    _request_id.reset(token)
