"""The simulator's own clock: time moves only when told to, so tests never sleep."""
from __future__ import annotations

import threading
import time
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


class RunningSimClock(SimClock):
    """A clock that also runs on its own, ``speed`` times faster than the wall clock: for serving the simulator to a
    real engine (the demo, ``simulate_exchange --speed``), whose polls then see queues drain and services restart.
    ``advance`` still jumps ahead (slow cmdlets)."""

    def __init__(self, start: datetime, *, speed: float, lock: threading.RLock | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        super().__init__(start, lock=lock)
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        with self._lock:
            return self._now + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the simulated clock cannot go backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self.now()

    def set(self, when: datetime) -> None:
        with self._lock:
            now = self.now()
            when = when.astimezone(UTC)
            if when < now:
                raise ValueError("the simulated clock cannot go backwards")
            self._now += when - now
