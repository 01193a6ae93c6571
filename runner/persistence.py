"""The engine's database writes outlive a database outage (issue 24, item 2).

After PostgreSQL restarts, a worker's connection is dead: its next query fails with ``OperationalError`` ("terminating
connection due to administrator command") or ``InterfaceError`` ("connection already closed"). Each of the engine's
writes (a step marked running, a command's intent, a step's result, the plan state, a pause, the end) is therefore
retried with backoff on a fresh connection, for as long as the run's lease would last: within that time the run
continues by itself once the database is back; past it the lease has run out anyway (nothing could renew it), so the
run ends without writing more and the ``resume_held_windows`` sweep hands it to a worker once the database is back.

Only database writes are retried, never a step: no command reaches Exchange again because of a database retry. A
write is retried whole, outside any transaction (``in_atomic_block``: the outermost call retries its transaction).
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connection

from . import conf
from .context import RunLost

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a dead or unreachable database raises; IntegrityError and friends are bugs, never retried.
RETRYABLE = (OperationalError, InterfaceError)
FIRST_DELAY = 0.5
MAX_DELAY = 5.0


class DatabaseUnavailable(RunLost):
    """The database stayed unreachable past the retry budget: the run stops without sending or writing anything more
    (a ``RunLost``: a step that meets it stops as on a lost lease, never as a failed step)."""


def budget_seconds() -> float:
    """How long one write is retried: the lease's length. The lease cannot be renewed while the database is down, so
    once this has passed it has expired and the sweep may hand the run to any worker when the database is back."""
    return float(conf.lease_seconds())


def drop_broken_connection() -> None:
    """Close this thread's connection if it no longer works, so the next query opens a new one."""
    try:
        connection.close_if_unusable_or_obsolete()
    except Exception:  # noqa: BLE001 - closing a dead socket may fail in any way; the next query reconnects
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            log.debug("closing a broken database connection failed", exc_info=True)


def with_retry(fn: Callable[[], T], *, what: str, budget: float | None = None,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, retried with backoff (0.5 s, doubled, at most 5 s) while the database is unreachable, for ``budget``
    seconds (default: ``budget_seconds()``). Raises DatabaseUnavailable when the budget is spent. Inside a
    transaction it does not retry: the error goes up to the call that opened the transaction."""
    if connection.in_atomic_block:
        return fn()
    deadline = time.monotonic() + (budget_seconds() if budget is None else budget)
    delay, failures = FIRST_DELAY, 0
    while True:
        try:
            return fn()
        except RETRYABLE as exc:
            failures += 1
            drop_broken_connection()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"{what}: the database was unreachable for {failures} attempt(s) ({exc})".strip()) from exc
            if failures == 1:
                log.warning("%s: the database is unreachable (%s); retrying for up to %.0f s", what,
                            str(exc).strip(), remaining)
            sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)


def retried(what: str, *, row_fields: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: the method's database work is retried whole with ``with_retry``. ``row_fields``: attributes of
    the method's first argument (a row it updates in memory as it writes) put back before each new try, so a try
    whose transaction rolled back leaves no trace in memory either."""
    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> T:
            row = args[0] if args and row_fields else None
            saved = {name: getattr(row, name) for name in row_fields} if row is not None else {}

            def attempt() -> T:
                for name, value in saved.items():
                    setattr(row, name, value)
                return method(self, *args, **kwargs)

            return with_retry(attempt, what=what)

        return call

    return wrap
