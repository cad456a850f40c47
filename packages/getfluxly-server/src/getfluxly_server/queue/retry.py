"""When a failed job runs again: retry policies, and the exceptions handlers raise to steer
them.

Backoff is capped exponential with full jitter: attempt *k* waits a uniformly random time
between 0 and ``min(cap, base * 2**k)``. The cap keeps a job that failed ten times from
sleeping for hours; the jitter spreads the retries of jobs that failed together (a relay
that went down for a minute) instead of sending them back at the relay in one wave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: The cap on any backoff unless a kind or the worker's settings say otherwise: 10 minutes.
DEFAULT_BACKOFF_CAP_SECONDS = 600.0


class Retry(Exception):  # noqa: N818 - a request, not an error
    """Raised by a handler for a temporary failure: try again after ``delay`` seconds (or the
    kind's backoff), if attempts remain."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Permanent(Exception):  # noqa: N818 - a verdict, not an error
    """Raised by a handler for a failure that another attempt cannot mend (the provider
    refused the address, the row is gone): the job fails now, whatever attempts remain."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a kind's failures are retried. ``max_attempts`` counts the first run;
    ``cap_seconds`` None means the worker's cap (``GETFLUXLY_JOB_BACKOFF_CAP_SECONDS``)."""

    max_attempts: int = 5
    base_seconds: float = 1.0
    cap_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first run: it must be at least 1")
        if self.base_seconds <= 0 or (self.cap_seconds is not None and self.cap_seconds <= 0):
            raise ValueError("backoff base and cap must be positive")

    def delay(self, attempt: int, rng: random.Random, cap: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``cap`` applies when
        the policy has none of its own."""
        own_cap = self.cap_seconds if self.cap_seconds is not None else cap
        return backoff(attempt, base=self.base_seconds, cap=own_cap, rng=rng)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``. Pure but for ``rng``
    (seed it in tests)."""
    # 2.0**attempt overflows a float past 1023; any attempt that far is at the cap anyway.
    ceiling = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    return rng.uniform(0.0, ceiling)
