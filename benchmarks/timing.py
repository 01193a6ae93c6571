"""Timing shared by the benchmarks: calls measured in turns, so drift on a busy machine hits them alike."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved_ms(samples: int, calls: list[Callable[[], Any]]) -> list[tuple[float, float]]:
    """(median, mean) per call in ms, after three warm-up calls each (connections, caches)."""
    for call in calls:
        for _ in range(3):
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(samples):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            call()
            times[index].append(time.perf_counter() - started)
    return [(statistics.median(t) * 1000, statistics.fmean(t) * 1000) for t in times]
