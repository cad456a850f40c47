"""Per-key rate limits: a token bucket per API key, kept in memory on this machine.

One API process keeps its buckets in a dict; the processes of ``getfluxly api --processes N``
share one table in memory mapped before they were forked, so together they allow a key its
rate once. API processes on several machines each limit on their own (N machines allow up
to N times the rate); that keeps the hot path free of a database round trip. Every
authenticated answer carries ``X-RateLimit-Limit`` (burst), ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (seconds until the bucket is full again); over the limit the answer is
429 ``rate_limited`` with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import multiprocessing
import struct
import threading
import time
from typing import Protocol

from getfluxly_server.domain.errors import DomainError


class Buckets(Protocol):
    def spend(self, key: str, per_second: float, burst: int, now: float) -> tuple[bool, float]:
        """Refill ``key``'s bucket up to ``now`` and take a token if there is one: whether
        one was taken, and the tokens left. A bucket never seen starts full."""
        ...


def _spend(
    tokens: float, updated: float, per_second: float, burst: int, now: float
) -> tuple[bool, float]:
    tokens = min(burst, tokens + max(0.0, now - updated) * per_second)
    if tokens >= 1:
        return True, tokens - 1
    return False, tokens


class LocalBuckets:
    """The buckets of one process."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def spend(self, key: str, per_second: float, burst: int, now: float) -> tuple[bool, float]:
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(burst), now))
            allowed, tokens = _spend(tokens, updated, per_second, burst, now)
            self._buckets[key] = (tokens, now)
        return allowed, tokens


class SharedBuckets:
    """Buckets shared by every process forked after this was made: an anonymous shared
    memory map of ``slots`` fixed-size slots (64-bit key hash, tokens, time), open addressing
    over a few neighbouring slots, under one inter-process lock. When a key finds no slot,
    the least recently used of its neighbours is given to it; the key thrown out starts full
    when it comes back (lenient, and rare: a slot per key recently seen). A process killed
    while holding the lock would block the others; the ``--processes`` supervisor stops the
    whole set as soon as one child dies (cli._run_many), so that ends with the set."""

    _SLOT = struct.Struct("<Qdd")
    _PROBES = 8

    def __init__(self, slots: int = 16_384) -> None:
        self._slots = slots
        self._memory = mmap.mmap(-1, slots * self._SLOT.size)  # zeroed, MAP_SHARED
        self._lock = multiprocessing.get_context("fork").Lock()

    def spend(self, key: str, per_second: float, burst: int, now: float) -> tuple[bool, float]:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        wanted = int.from_bytes(digest, "little") or 1  # 0 marks an empty slot
        with self._lock:
            offset, tokens, updated = self._find(wanted, burst, now)
            allowed, tokens = _spend(tokens, updated, per_second, burst, now)
            self._SLOT.pack_into(self._memory, offset, wanted, tokens, now)
        return allowed, tokens

    def _find(self, wanted: int, burst: int, now: float) -> tuple[int, float, float]:
        """The slot of ``wanted`` (offset, tokens, updated), or a slot for it, full."""
        start = wanted % self._slots
        victim, oldest = -1, math.inf
        for probe in range(self._PROBES):
            offset = ((start + probe) % self._slots) * self._SLOT.size
            key, tokens, updated = self._SLOT.unpack_from(self._memory, offset)
            if key == wanted:
                return offset, tokens, updated
            if key == 0:
                return offset, float(burst), now
            if updated < oldest:
                victim, oldest = offset, updated
        return victim, float(burst), now


class RateLimiter:
    def __init__(self, per_second: float, burst: int, buckets: Buckets | None = None) -> None:
        self.per_second, self.burst = per_second, burst
        self._buckets: Buckets = buckets if buckets is not None else LocalBuckets()

    def take(self, key: str) -> dict[str, str]:
        """Spend one token for ``key``; the headers to send, or DomainError(rate_limited)."""
        allowed, tokens = self._buckets.spend(key, self.per_second, self.burst, time.monotonic())
        headers = {
            "X-RateLimit-Limit": str(self.burst),
            "X-RateLimit-Remaining": str(int(tokens)),
            "X-RateLimit-Reset": str(math.ceil((self.burst - tokens) / self.per_second)),
        }
        if not allowed:
            wait = math.ceil((1 - tokens) / self.per_second)
            raise DomainError(
                "rate_limited",
                f"Too many requests for this key; retry after {wait} s",
                headers={**headers, "Retry-After": str(max(wait, 1))},
            )
        return headers
