"""Leases: one worker at a time on a row — a window's run (``WindowRun.lock_*``, the engine) or a notification's
delivery (``Delivery.lease_*``, the dispatcher).

A lease is taken by compare-and-set on an owner token and an expiry, renewed while the work goes on, and may be taken
over once it expired (its worker died or stalled). Every write a worker makes under a lease goes through ``mine()``
(the row, only while this worker owns it), so a worker that lost its lease writes nothing: its update matches no
row and the caller raises its own ``LeaseLost``. Tokens are unique per take, so two threads (or a restarted worker)
never share a lease.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, models
from django.db.models import Q, QuerySet
from django.utils import timezone

log = logging.getLogger(__name__)


def new_token(worker: str) -> str:
    """An owner token for one take: the worker's name (for people reading the row) and a random suffix."""
    return f"{worker or 'worker'}#{uuid.uuid4().hex[:8]}"[:200]


@dataclass
class Lease:
    """A lease held on row ``pk`` of ``model``. ``owner_field``/``expires_field`` name the row's lease columns."""

    model: type[models.Model]
    pk: int
    token: str
    seconds: int
    owner_field: str = "lease_owner"
    expires_field: str = "lease_expires_at"

    @classmethod
    def take(cls, model: type[models.Model], pk: int, *, worker: str, seconds: int, now: datetime | None = None,
             owner_field: str = "lease_owner", expires_field: str = "lease_expires_at", claimable: Q | None = None,
             **updates: Any) -> Lease | None:
        """Take the lease if the row is ``claimable`` (default: nobody holds it, or its lease expired), setting
        ``updates`` in the same compare-and-set. None when another worker holds it."""
        now = now or timezone.now()
        if claimable is None:
            claimable = (Q(**{owner_field: ""}) | Q(**{f"{expires_field}__isnull": True})
                         | Q(**{f"{expires_field}__lt": now}))
        token = new_token(worker)
        won = model._default_manager.filter(pk=pk).filter(claimable).update(
            **{owner_field: token, expires_field: now + timedelta(seconds=seconds)}, **updates)
        return cls(model, pk, token, seconds, owner_field, expires_field) if won else None

    def mine(self) -> QuerySet:
        """The row, while this lease owns it."""
        return self.model._default_manager.filter(pk=self.pk, **{self.owner_field: self.token})

    def expiry(self, now: datetime | None = None) -> datetime:
        """When the lease ends if it is renewed at ``now``."""
        return (now or timezone.now()) + timedelta(seconds=self.seconds)

    def renew(self, now: datetime | None = None, *, live: bool = False, where: Q | None = None,
              **updates: Any) -> bool:
        """Extend the lease from ``now`` (a whole lease, not what was left), writing ``updates`` with it. ``live``:
        only while it has not expired yet — once expired, another worker may take the row at any moment. False when
        the lease is no longer ours (or ``where`` does not hold)."""
        now = now or timezone.now()
        rows = self.mine()
        if live:
            rows = rows.filter(**{f"{self.expires_field}__gt": now})
        if where is not None:
            rows = rows.filter(where)
        return bool(rows.update(**{self.expires_field: self.expiry(now)}, **updates))

    def release(self, *, where: Q | None = None, **updates: Any) -> bool:
        """Give the lease up, writing ``updates`` with it; False when it was no longer ours (or ``where`` fails)."""
        rows = self.mine() if where is None else self.mine().filter(where)
        return bool(rows.update(**{self.owner_field: "", self.expires_field: None}, **updates))

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[Lost]:
        """Renew the lease every third of its length while the work goes on (a step may poll for many minutes), so
        the lease can be short and a dead worker's run is taken over soon. Yields a ``Lost`` flag: set when the
        lease was found taken by another worker, and also true while the heartbeat has not managed to renew for a
        whole lease length (the database is unreachable): the lease may have lapsed, so no more writes are sent."""
        stop, lost = threading.Event(), Lost(self.seconds)
        interval = max(1.0, self.seconds / 3)

        def beat() -> None:
            wait = interval
            try:
                while not stop.wait(wait):
                    try:
                        renewed = self.renew()
                    except Exception:  # a database hiccup: keep beating, the lease is still ours for a while
                        log.exception("lease heartbeat failed; trying again")
                        with contextlib.suppress(Exception):  # a dead connection: the next beat opens one
                            connection.close_if_unusable_or_obsolete()
                        # Sooner than usual: once the database is back, renew before another worker takes over.
                        wait = min(interval, 2.0)
                        continue
                    wait = interval
                    if not renewed:
                        # Another worker holds the lease now: the work in progress must not write again.
                        lost.set()
                        return
                    lost.renewed()
            finally:
                connection.close()  # this thread's own connection

        thread = threading.Thread(target=beat, name=f"lease-{self.model.__name__}-{self.pk}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join(timeout=10)


class Lost:
    """The heartbeat's verdict for the work it guards (``is_set()``, like a ``threading.Event``): the lease was taken
    by another worker, or has not been renewed for a whole lease length and may have lapsed."""

    def __init__(self, seconds: float) -> None:
        self._taken = threading.Event()
        self._seconds = seconds
        self._renewed_at = time.monotonic()

    def set(self) -> None:
        self._taken.set()

    def renewed(self) -> None:
        self._renewed_at = time.monotonic()

    def is_set(self) -> bool:
        return self._taken.is_set() or time.monotonic() - self._renewed_at >= self._seconds
