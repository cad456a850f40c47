"""Tracking and unsubscribing: the server's signed links in outgoing mail, and what
following them records (engine spec section 6).

Modules: :mod:`.tokens` (signed tokens), :mod:`.links` (the URLs, and an HTML part
rewritten to carry them), :mod:`.machines` (machine opens and link scanners),
:mod:`.engagement` (opens, clicks, unsubscribes recorded as feedback),
:mod:`.preferences` (subscription groups, the preference page, one-click).
"""

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.tracking.links import Links
from getfluxly_server.domain.tracking.machines import Hit
from getfluxly_server.domain.tracking.tokens import InvalidToken, Signer

LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"


def links_for(public_url: str, keyring: Keyring) -> Links:
    """The links of a server with this public URL and these keys."""
    return Links(public_url.rstrip("/"), Signer(keyring))


def unsubscribe_headers(links: Links, message_id: str) -> dict[str, str]:
    """The headers of a marketing message (RFC 2369 and RFC 8058 one-click)."""
    return {
        "List-Unsubscribe": f"<{links.unsubscribe_url(message_id)}>",
        "List-Unsubscribe-Post": LIST_UNSUBSCRIBE_POST,
    }


__all__ = [
    "LIST_UNSUBSCRIBE_POST",
    "Hit",
    "InvalidToken",
    "Links",
    "Signer",
    "links_for",
    "unsubscribe_headers",
]
