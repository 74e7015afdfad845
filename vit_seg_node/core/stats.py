"""Rate and latency statistics for diagnostics (ROS-free, thread-safe)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import numpy as np

QUANTILES = (50, 90, 95, 99)


def percentiles(values, qs=QUANTILES) -> dict[str, Optional[float]]:
    """Return ``{'p50': ..., ...}`` of ``values`` (all None when there are none)."""
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {f'p{q}': None for q in qs}
    return {f'p{q}': float(v) for q, v in zip(qs, np.percentile(a, qs))}


class LatencyWindow:
    """The last ``size`` samples of one latency (ms) and their percentiles."""

    def __init__(self, size: int = 300) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        """Record one sample."""
        with self._lock:
            self._samples.append(float(ms))

    def percentiles(self, qs=(50, 95, 99)) -> Optional[dict[str, float]]:
        """Return ``{'p50': ..., ...}`` or None before the first sample."""
        with self._lock:
            samples = list(self._samples)
        return percentiles(samples, qs) if samples else None


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.count = 0
        self.last: Optional[float] = None

    def tick(self, now: Optional[float] = None) -> None:
        """Record one event."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.count += 1
            self.last = now
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: Optional[float] = None) -> float:
        """Return events per second over the window (0 with fewer than two events)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / span if span > 0 else 0.0


class CpuMeter:
    """Cores this process kept busy between two readings: CPU time over wall time.

    CPU time of all its threads (``time.process_time``) over ``time.monotonic``; both clocks can
    be injected.
    """

    def __init__(self, clock=time.monotonic, cpu=time.process_time) -> None:
        self._clock, self._cpu = clock, cpu
        self._last = (clock(), cpu())
        self._lock = threading.Lock()

    def cores(self) -> float:
        """Return the cores used since the previous call (or since creation)."""
        with self._lock:
            now, used = self._clock(), self._cpu()
            (t0, c0), self._last = self._last, (now, used)
        return max(0.0, used - c0) / (now - t0) if now > t0 else 0.0
