"""The send gate: a provider's limits (``rate_per_second``, ``rate_per_hour``,
``max_connections``), asked before every chunk of messages goes out.

The delivery loop knows the gate only through :class:`SendGate`. :class:`LocalSendGate` holds
the limits for this process alone; a gate shared by every worker process (in the database)
plugs in through the same port (``Dispatcher(gate=...)``, built in ``app.py``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's limits as its row holds them (None: no limit of that kind)."""

    provider_id: str
    max_connections: int | None = None
    rate_per_second: float | None = None
    rate_per_hour: int | None = None


class SendGate(Protocol):
    """What the delivery loop asks before it hands messages to a provider. Thread-safe."""

    def take(self, limits: ProviderLimits, want: int) -> tuple[int, float]:
        """Permission to send up to ``want`` messages now: ``(granted, wait)``, where
        ``granted`` (0..want) may go out at once and, when it is less than ``want``, ``wait``
        is how many seconds until more may (0 when all were granted). Granted sends are
        spent whether or not they are used."""
        ...

    def acquire(self, limits: ProviderLimits, timeout: float) -> bool:
        """Take one of the provider's connection slots (one chunk in flight), waiting up to
        ``timeout`` seconds; whether it was taken."""
        ...

    def release(self, limits: ProviderLimits) -> None:
        """Give back a slot :meth:`acquire` took."""
        ...

    def renew(self) -> None:
        """Keep the slots this gate holds (called every third of the delivery lease; slots
        held in a shared place expire unless renewed, so a dead worker's come back)."""
        ...

    def close(self) -> None:
        """Give back everything this gate holds (the delivery loop is stopping)."""
        ...


class _Bucket:
    """A token bucket: ``rate`` a second, holding at most ``capacity``."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.at = capacity, clock()

    def refill(self, moment: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (moment - self.at) * self.rate)
        self.at = moment

    def wait_for_one(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


class LocalSendGate:
    """The limits of each provider, held for this process only (see the module docstring).

    The per-second rate allows a burst of one second's worth (at least one message); the
    hourly rate a burst of the whole hour's, as a provider counts it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        self._buckets: dict[tuple[str, str, float], _Bucket] = {}
        self._in_flight: dict[str, int] = {}

    def _bucket(self, provider_id: str, kind: str, rate: float, capacity: float) -> _Bucket:
        key = (provider_id, kind, rate)  # an edited limit starts a fresh bucket
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, capacity, self._clock)
        return bucket

    def take(self, limits: ProviderLimits, want: int) -> tuple[int, float]:
        buckets = []
        if limits.rate_per_second:
            rate = limits.rate_per_second
            buckets.append(self._bucket(limits.provider_id, "second", rate, max(1.0, rate)))
        if limits.rate_per_hour:
            hourly = float(limits.rate_per_hour)
            buckets.append(self._bucket(limits.provider_id, "hour", hourly / 3600, hourly))
        if not buckets or want <= 0:
            return max(want, 0), 0.0
        with self._lock:
            moment = self._clock()
            for bucket in buckets:
                bucket.refill(moment)
            granted = min(want, *(math.floor(b.tokens) for b in buckets))
            for bucket in buckets:
                bucket.tokens -= granted
            if granted == want:
                return granted, 0.0
            return granted, max(b.wait_for_one() for b in buckets)

    def acquire(self, limits: ProviderLimits, timeout: float) -> bool:
        cap = limits.max_connections
        deadline = self._clock() + timeout
        with self._lock:
            while cap is not None and self._in_flight.get(limits.provider_id, 0) >= cap:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._lock.wait(left)
            self._in_flight[limits.provider_id] = self._in_flight.get(limits.provider_id, 0) + 1
            return True

    def release(self, limits: ProviderLimits) -> None:
        with self._lock:
            count = self._in_flight.get(limits.provider_id, 0) - 1
            if count > 0:
                self._in_flight[limits.provider_id] = count
            else:
                self._in_flight.pop(limits.provider_id, None)
            self._lock.notify_all()

    def renew(self) -> None:
        """Nothing to renew: this process's slots die with it."""

    def close(self) -> None:
        """Nothing held outside this process."""
