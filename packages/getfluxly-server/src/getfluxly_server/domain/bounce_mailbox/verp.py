"""VERP return paths: the envelope sender carries the message's GetFluxly id, so a bounce
(sent to the envelope sender by every MTA) names the message it is about whatever it
quotes of the original.

``bounces+msg_0123456789abcdefghjk@bounces.example.com``: the local part is ``bounces+``
and the ledger id (``msg_`` and 20 lower-case base32 characters: nothing that needs quoting
in an address).
"""

from __future__ import annotations

import re

LOCAL_PREFIX = "bounces+"
_ID = re.compile(r"msg_[0-9a-z]{20}")
_VERP = re.compile(r"bounces\+(msg_[0-9a-z]{20})@([^\s<>@]+)", re.IGNORECASE)


def return_path(message_id: str, domain: str) -> str | None:
    """The envelope sender for ``message_id`` (None when it is not a ledger id: a test
    send keeps the From address)."""
    if not _ID.fullmatch(message_id):
        return None
    return f"{LOCAL_PREFIX}{message_id}@{domain}"


def message_id_of(text: str | None, domain: str | None = None) -> str | None:
    """The ledger id in a VERP address found in ``text`` (an address, a header value such as
    ``rfc822; bounces+msg_...@...``), if any; with ``domain``, only at that domain."""
    if not text:
        return None
    for match in _VERP.finditer(text):
        if domain is None or match.group(2).lower().rstrip(".") == domain:
            return match.group(1).lower()
    return None
