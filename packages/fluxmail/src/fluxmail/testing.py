"""Helpers for your tests: capture what your code sends, without a socket.

::

    from fluxmail.testing import capture

    def test_welcome_mail():
        with capture() as outbox:
            signup("ada@example.com")          # calls FluxMail(...).create(...).send()
        assert len(outbox) == 1
        assert outbox[0].to == ["ada@example.com"]
        assert "Welcome" in outbox[0].subject

While a capture is active every ``FluxMail`` send (sync, async, bulk, Django backend, Outlook)
records the exact bytes it would have sent and reports success; nothing is connected to.
Captures nest: the innermost one receives the mail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fluxmail import outbox as _registry
from fluxmail.outbox import CapturedEmail, Outbox

__all__ = ["CapturedEmail", "Outbox", "capture"]


@contextmanager
def capture() -> Iterator[Outbox]:
    """Capture every message sent inside the block into the yielded :class:`Outbox` list."""
    box = Outbox()
    _registry.push(box)
    try:
        yield box
    finally:
        _registry.pop(box)
