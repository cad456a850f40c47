"""Per-key rate limits: a token bucket per API key, in this process.

Each API process limits on its own, so N processes allow up to N times the rate; that keeps
the hot path free of a database round trip. Every authenticated answer carries
``X-RateLimit-Limit`` (burst), ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds
until the bucket is full again); over the limit the answer is 429 ``rate_limited`` with
``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from getfluxly_server.domain.errors import DomainError


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second, self.burst = per_second, burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> dict[str, str]:
        """Spend one token for ``key``; the headers to send, or DomainError(rate_limited)."""
        with self._lock:
            moment = time.monotonic()
            bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), moment))
            bucket.tokens = min(
                self.burst, bucket.tokens + (moment - bucket.updated) * self.per_second
            )
            bucket.updated = moment
            allowed = bucket.tokens >= 1
            if allowed:
                bucket.tokens -= 1
            remaining = int(bucket.tokens)
            reset = math.ceil((self.burst - bucket.tokens) / self.per_second)
        headers = {
            "X-RateLimit-Limit": str(self.burst),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            wait = math.ceil((1 - bucket.tokens) / self.per_second)
            raise DomainError(
                "rate_limited",
                f"Too many requests for this key; retry after {wait} s",
                headers={**headers, "Retry-After": str(max(wait, 1))},
            )
        return headers
