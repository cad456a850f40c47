"""The From mailbox of every message a provider sends, checked once, the same way on save.

A provider's ``from_email`` and ``from_name`` are checked by :func:`sender_mailbox` when the
provider is saved and again when a message is built, so what the API accepts is exactly what
can be sent: a name holding an RFC 2047 encoded word (which a mail reader would decode into
something else), a word too long for a header line, or a bad address is refused up front
rather than saved and then failing every send.
"""

from __future__ import annotations

from fluxmail import FluxMailException, format_address, parse_address
from getfluxly_server.delivery.base import DeliveryError


def sender_mailbox(from_email: str, from_name: str | None) -> str:
    """``Name <address>`` as FluxMail writes it into From:; raises DeliveryError
    (``validation_error``, ``field`` from_name or from_email) for what it would refuse."""
    mailbox = format_address(from_name, from_email)
    try:
        parse_address(mailbox, role="sender")
    except FluxMailException as exc:
        field = "from_name" if from_name and "display name" in str(exc) else "from_email"
        raise DeliveryError("validation_error", f"{field}: {exc}", field=field) from None
    return mailbox
