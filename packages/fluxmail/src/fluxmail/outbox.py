"""Where captured mail goes while :func:`fluxmail.testing.capture` is active.

The client asks :func:`active` before opening any connection; when an outbox is active the
message is recorded instead of sent. A plain module-level stack (not a context variable) so
mail sent from worker threads, such as a BulkSender's, is captured too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from fluxmail.protocol.commands import Envelope


@dataclass(frozen=True)
class CapturedEmail:
    """One message that would have been sent: its envelope and its exact bytes."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    via: str = "smtp"
    message: EmailMessage = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        object.__setattr__(self, "message", parsed)

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def to(self) -> list[str]:
        return _addresses(self.message, "To")

    @property
    def cc(self) -> list[str]:
        return _addresses(self.message, "Cc")

    @property
    def bcc(self) -> list[str]:
        """Envelope recipients that appear in no header: the blind copies."""
        visible = {a.lower() for a in (*self.to, *self.cc)}
        return [r for r in self.recipients if r.lower() not in visible]

    @property
    def text(self) -> str | None:
        return _body(self.message, "plain")

    @property
    def html(self) -> str | None:
        return _body(self.message, "html")

    @property
    def attachments(self) -> list[str]:
        return [part.get_filename() or "" for part in self.message.iter_attachments()]


def _addresses(message: EmailMessage, name: str) -> list[str]:
    header = message.get(name)
    return [a.addr_spec for a in header.addresses] if header is not None else []


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else None


class Outbox(list[CapturedEmail]):
    """The list of captured messages, in the order they were sent."""

    def record(self, envelope: Envelope, raw: bytes, via: str = "smtp") -> None:
        with _lock:
            self.append(CapturedEmail(envelope.sender, envelope.recipients, raw, via))


_lock = threading.Lock()
_stack: list[Outbox] = []


def push(outbox: Outbox) -> None:
    with _lock:
        _stack.append(outbox)


def pop(outbox: Outbox) -> None:
    with _lock:
        _stack.remove(outbox)


def active() -> Outbox | None:
    """The innermost active outbox, or None when mail really goes out."""
    with _lock:
        return _stack[-1] if _stack else None
