"""Rate limits: token buckets kept in memory on this machine, named by what they limit.

What is limited, and by which bucket (api/auth.py picks the bucket, this module counts):
a workspace key's requests per workspace, a server key's per project (keys can be minted
at will: a new key must not bring a new budget), a publishable key's per project and client
address (the key is public: one visitor must not spend every visitor's budget), and failed
authentications per client address.

One API process keeps its buckets in a dict; the processes of ``getfluxly api --processes N``
share one table in memory mapped before they were forked, so together they allow a bucket
its rate once. API processes on several machines each limit on their own (N machines allow up
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
from dataclasses import dataclass
from typing import Protocol

from getfluxly_server.domain.errors import DomainError


class Buckets(Protocol):
    def spend(
        self, key: str, per_second: float, burst: int, now: float, cost: int = 1
    ) -> tuple[bool, float]:
        """Refill ``key``'s bucket up to ``now`` and, if it holds a whole token, take
        ``cost`` tokens (0: only look): whether it held one, and the tokens left. A bucket
        never seen starts full."""
        ...


def _spend(
    tokens: float, updated: float, per_second: float, burst: int, now: float, cost: int
) -> tuple[bool, float]:
    tokens = min(burst, tokens + max(0.0, now - updated) * per_second)
    if tokens >= 1:
        return True, tokens - cost
    return False, tokens


class LocalBuckets:
    """The buckets of one process."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def spend(
        self, key: str, per_second: float, burst: int, now: float, cost: int = 1
    ) -> tuple[bool, float]:
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(burst), now))
            allowed, tokens = _spend(tokens, updated, per_second, burst, now, cost)
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

    def spend(
        self, key: str, per_second: float, burst: int, now: float, cost: int = 1
    ) -> tuple[bool, float]:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        wanted = int.from_bytes(digest, "little") or 1  # 0 marks an empty slot
        with self._lock:
            offset, tokens, updated = self._find(wanted, burst, now)
            allowed, tokens = _spend(tokens, updated, per_second, burst, now, cost)
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


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: refilled at ``per_second``, holding at most ``burst``."""

    per_second: float
    burst: int


class RateLimiter:
    """Spends tokens from named buckets. What a bucket is named after is the caller's
    choice (api/auth.py: a project, a workspace, a visitor address); buckets of one name
    share one budget in every process that shares ``buckets``."""

    def __init__(self, buckets: Buckets | None = None) -> None:
        self._buckets: Buckets = buckets if buckets is not None else LocalBuckets()

    def take(self, bucket: str, rate: Rate, what: str = "this key") -> dict[str, str]:
        """Spend one token from ``bucket``; the headers to send, or DomainError(rate_limited)
        (``what`` names who is limited in its detail)."""
        allowed, tokens = self._buckets.spend(bucket, rate.per_second, rate.burst, _now())
        headers = {
            "X-RateLimit-Limit": str(rate.burst),
            "X-RateLimit-Remaining": str(int(tokens)),
            "X-RateLimit-Reset": str(math.ceil((rate.burst - tokens) / rate.per_second)),
        }
        if not allowed:
            raise _refused(tokens, rate, headers, what)
        return headers

    def check(self, bucket: str, rate: Rate, what: str) -> None:
        """DomainError(rate_limited) if ``bucket`` is empty; spends nothing (the failed
        authentication limit: only failures spend, but an exhausted address is refused
        before its key is looked up)."""
        allowed, tokens = self._buckets.spend(bucket, rate.per_second, rate.burst, _now(), 0)
        if not allowed:
            raise _refused(tokens, rate, {}, what)

    def spend(self, bucket: str, rate: Rate) -> None:
        """Spend a token from ``bucket`` if it has one (never refuses)."""
        self._buckets.spend(bucket, rate.per_second, rate.burst, _now())


def _now() -> float:
    return time.monotonic()


def _refused(tokens: float, rate: Rate, headers: dict[str, str], what: str) -> DomainError:
    wait = max(1, math.ceil((1 - tokens) / rate.per_second))
    return DomainError(
        "rate_limited",
        f"Too many requests for {what}; retry after {wait} s",
        headers={**headers, "Retry-After": str(wait)},
    )
