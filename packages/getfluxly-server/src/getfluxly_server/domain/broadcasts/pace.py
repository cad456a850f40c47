"""A broadcast's send rate (``rate_per_minute``) as a token bucket kept in its row.

Tokens accrue at ``rate / 60`` a second up to one second's worth (at least one token), so a
broadcast that waited (its window of pending messages was full, the runner was busy) never
catches up in a burst. One message recorded spends one token. No rate: no bucket.
"""

from __future__ import annotations

import math
from datetime import datetime

#: The most tokens a bucket holds, in seconds of its rate.
BURST_SECONDS = 1.0


def capacity(rate_per_minute: int) -> float:
    return max(1.0, rate_per_minute / 60.0 * BURST_SECONDS)


def refill(
    rate_per_minute: int, tokens: float | None, since: datetime | None, moment: datetime
) -> float:
    """The tokens at ``moment`` of a bucket that held ``tokens`` at ``since`` (a bucket
    never filled yet starts full)."""
    full = capacity(rate_per_minute)
    if tokens is None or since is None:
        return full
    elapsed = max(0.0, (moment - since).total_seconds())
    return min(full, tokens + elapsed * rate_per_minute / 60.0)


def allowance(tokens: float) -> int:
    """Whole messages the tokens pay for."""
    return max(0, math.floor(tokens))
