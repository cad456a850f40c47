"""When a failed send is tried again, and after how long."""

from __future__ import annotations

from dataclasses import dataclass

from fluxmail.errors import is_transient


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` further attempts after the first, ``delay`` seconds apart.

    Only transient failures (network errors, timeouts, 4xx replies) are retried.
    """

    max_retries: int = 0
    delay: float = 1.0

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """Whether attempt number ``attempt`` (1-based) that failed with ``exc`` gets another."""
        return attempt < self.attempts and is_transient(exc)
