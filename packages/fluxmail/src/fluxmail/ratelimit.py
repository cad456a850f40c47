"""A rate limit shared by every connection of a pool: per second, and per longer period.

The limiter only computes how long a caller must wait (:meth:`RateLimiter.reserve`); the sync
pool sleeps that long with ``time.sleep``, the async one with ``asyncio.sleep``. Reservations
are taken under a lock, so threads and tasks together never exceed the limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fluxmail.errors import FluxMailException


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``per_second`` messages a second (bursts of up to ``burst``), and at most
    ``max_per_period`` in any window of ``period`` seconds (e.g. 10,000 an hour). Zero means
    no limit of that kind."""

    per_second: float = 0
    burst: int = 1
    max_per_period: int = 0
    period: float = 0

    def __post_init__(self) -> None:
        if self.per_second < 0 or self.burst < 1:
            raise FluxMailException("per_second must be >= 0 and burst >= 1", "invalid_config")
        if (self.max_per_period > 0) != (self.period > 0):
            raise FluxMailException(
                "max_per_period and period go together (e.g. 10000 per 3600 s)", "invalid_config"
            )


class RateLimiter:
    """Schedules message slots: a GCRA for the per-second rate, a sliding log for the period.

    The per-period window is exact (a timestamp per message in the window), so "10,000 an
    hour" never becomes 20,000 across a window boundary, as a fixed window or a refilling
    bucket would allow.
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._interval = 1.0 / limit.per_second if limit.per_second else 0.0
        self._next_free = 0.0  # theoretical arrival time of the next message (GCRA's TAT)
        self._window: deque[float] = deque()

    def reserve(self, count: int = 1) -> float:
        """Claim ``count`` slots; returns the seconds to wait until the last of them.

        Sending all ``count`` messages after that wait keeps within the limit, so a caller
        that pipelines a batch should ask for no more than ``burst`` at a time.
        """
        with self._lock:
            now = self._clock()
            last = now
            if self._interval:
                # GCRA: each message moves the theoretical arrival time on by one interval; a
                # message may go once that time is within (burst - 1) intervals of now.
                tolerance = (self.limit.burst - 1) * self._interval
                for _ in range(count):
                    due = max(self._next_free, now)
                    last = max(now, due - tolerance)
                    self._next_free = due + self._interval
            if self.limit.max_per_period:
                last = max(last, self._period_slot(now, count))
            return max(0.0, last - now)

    def _period_slot(self, now: float, count: int) -> float:
        """When the last of ``count`` more messages fits the window; records their slots.

        The window holds the send times of the last ``max_per_period`` messages: a new one may
        go once the oldest of those is a full period old.
        """
        window, period, cap = self._window, self.limit.period, self.limit.max_per_period
        slot = now
        for _ in range(count):
            if len(window) == cap:
                slot = max(slot, window.popleft() + period)
            window.append(slot)
        return slot
