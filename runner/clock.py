"""Clocks for the engine. Production waits in real time; demos and tests wait in scaled or simulated time."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ScaledClock:
    """Time runs ``speed`` times faster than the wall clock: a 10 s poll sleeps 10/speed s. For the demo, where the
    simulated Exchange advances its own clock per command (``auto_advance_seconds``)."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._wall0 = time.monotonic()
        self._t0 = datetime.now(UTC)

    def now(self) -> datetime:
        return self._t0 + timedelta(seconds=(time.monotonic() - self._wall0) * self.speed)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.speed)


class SimulatedClock:
    """The in-process simulator's own clock: sleeping advances simulated time instantly (tests never sleep)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def now(self) -> datetime:
        return self.sim.clock.now()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sim.clock.advance(seconds)


def parse_clock(spec: str) -> RealClock | ScaledClock:
    spec = (spec or "real").strip().lower()
    if spec == "real":
        return RealClock()
    kind, _, speed = spec.partition(":")
    if kind == "scaled":
        try:
            return ScaledClock(float(speed))
        except ValueError:
            pass
    raise ValueError(f"EXMAINT_RUNNER_CLOCK={spec!r}: expected 'real' or 'scaled:<speed>'")
