"""The engine's clock: what time it is for segments, automations and broadcasts.

Everything the engine decides by time (a delay's end, a ``within`` window, quiet hours, a
scheduled broadcast) asks a :class:`Clock` instead of the system, so scenario tests can move
time forward in one call instead of sleeping. The server and workers use :data:`SYSTEM`; a
test hands a :class:`ManualClock` to the code it drives.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the time: an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


#: The clock of the server and its workers.
SYSTEM: Clock = SystemClock()


class ManualClock:
    """A clock that stands still until moved (:meth:`advance`, :meth:`set`); thread-safe, so
    worker threads may read it while a test moves it. Time never goes backwards."""

    def __init__(self, start: datetime | None = None) -> None:
        moment = start or datetime.now(UTC)
        if moment.tzinfo is None:
            raise ValueError("a ManualClock starts at an aware datetime")
        self._moment = moment.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._moment

    def advance(self, by: timedelta) -> datetime:
        """Move forward by ``by`` (not negative); the new time."""
        if by < timedelta(0):
            raise ValueError("time only moves forward")
        with self._lock:
            self._moment += by
            return self._moment

    def set(self, moment: datetime) -> None:
        """Move forward to ``moment`` (aware, not earlier than now)."""
        moment = moment.astimezone(UTC)
        with self._lock:
            if moment < self._moment:
                raise ValueError("time only moves forward")
            self._moment = moment
