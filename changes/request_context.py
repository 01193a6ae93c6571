"""The current request id, carried to audit events without threading it through every call."""
from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_request_id: ContextVar[str] = ContextVar("exmaint_request_id", default="")


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str):  # noqa: ANN201 - returns a ContextVar token
    return _request_id.set(value)


def reset_request_id(token) -> None:  # noqa: ANN001
    _request_id.reset(token)


# Who acts in the current request, for audit events written where no actor is passed in (changes to users and
# groups made through Django's own admin). A callable, read late: authentication happens after the middleware.
_actor: ContextVar[Any] = ContextVar("exmaint_actor", default=None)


def current_actor() -> Any:
    """The authenticated user of the current request, or None (no request, or nobody logged in)."""
    getter = _actor.get()
    user = getter() if getter is not None else None
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def set_actor(getter: Callable[[], Any]):  # noqa: ANN201 - returns a ContextVar token
    return _actor.set(getter)


def reset_actor(token) -> None:  # noqa: ANN001
    _actor.reset(token)
