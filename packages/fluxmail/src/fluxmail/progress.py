"""A small progress bar on stderr for bulk sends (no dependency for one line of output)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``[#####-----] 50/100 sent, 2 failed, 120.5/s`` redrawn in place on a terminal.

    On a non-terminal stream it writes one line at the end instead of a stream of redraws.
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.width = total, width
        self.stream = stream or sys.stderr
        self.sent = self.failed = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._live = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, ok: bool) -> None:
        if ok:
            self.sent += 1
        else:
            self.failed += 1
        now = time.monotonic()
        # Redraw at most 20 times a second: drawing must never be what slows a bulk send.
        if self._live and (now - self._drawn_at > 0.05 or self.done == self.total):
            self._drawn_at = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    @property
    def done(self) -> int:
        return self.sent + self.failed

    def line(self) -> str:
        filled = self.width * self.done // self.total if self.total else self.width
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return (
            f"[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total} "
            f"sent {self.sent}, failed {self.failed}, {self.done / elapsed:.1f}/s"
        )

    def close(self) -> None:
        self.stream.write(("\r" if self._live else "") + self.line() + "\n")
        self.stream.flush()
