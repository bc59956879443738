"""Rates of the broker's counters over a recent window, for GetStatus (tokens trained per second, steps per minute).

The broker counts totals; a rate over "the last minute" needs the totals as they were a minute ago. A
:class:`CounterRate` keeps timestamped samples of one monotone counter for ``horizon_s`` (plus one older sample, so a
window is covered from its start) and answers the mean rate over any window up to it.
"""

from __future__ import annotations

import collections


class CounterRate:
    """Mean growth per second of a counter that only goes up, from samples added in time order."""

    def __init__(self, horizon_s: float) -> None:
        if horizon_s <= 0:
            raise ValueError(f"horizon_s must be positive, got {horizon_s}")
        self.horizon_s = horizon_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, now: float, value: float) -> None:
        self._samples.append((now, value))
        # Keep the newest sample at or before the horizon's start: it is the baseline for a full-horizon window.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.horizon_s:
            self._samples.popleft()

    def per_second(self, window_s: float) -> float:
        """Mean rate over the last ``window_s`` seconds before the newest sample (over less when sampling started
        more recently); 0.0 until two samples span some time."""
        if len(self._samples) < 2:
            return 0.0
        now, latest = self._samples[-1]
        start, first = self._samples[0]
        for t, value in self._samples:
            if t > now - window_s:
                break
            start, first = t, value
        span = now - start
        return (latest - first) / span if span > 0 else 0.0
