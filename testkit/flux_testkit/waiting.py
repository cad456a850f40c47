"""Waiting in tests for what another process or thread does on the real clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], what: str, timeout: float = 60.0, poll: float = 0.1
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Raises ``AssertionError("timed out waiting for <what> (<timeout> s)")`` when ``timeout``
    seconds pass first. For a server's workers, a relay or a browser: never for code a test
    could drive on an injected clock.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
        time.sleep(poll)
