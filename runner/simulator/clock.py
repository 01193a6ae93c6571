"""The simulator's own clock: time moves only when told to, so tests never sleep."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)


class SimClock:
    """A controllable UTC clock. ``advance`` is the only way time passes (the model advances it for slow cmdlets)."""

    def __init__(self, start: datetime = DEFAULT_START, *, lock: threading.RLock | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulated clock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = lock or threading.RLock()

    def now(self) -> datetime:
        """The current simulated time (aware, UTC)."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move time forward; negative steps are refused (queues and restarts only run forwards)."""
        if seconds < 0:
            raise ValueError("the simulated clock cannot go backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not earlier than now)."""
        with self._lock:
            when = when.astimezone(UTC)
            if when < self._now:
                raise ValueError("the simulated clock cannot go backwards")
            self._now = when
