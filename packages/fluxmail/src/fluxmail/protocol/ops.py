"""The two things a conversation can ask of a transport, and the helpers to ask them."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fluxmail.protocol.replies import Reply

T = TypeVar("T")


@dataclass(slots=True)
class Exchange:
    """Write ``data`` (nothing, for the greeting) and read ``replies`` replies.

    ``secret`` marks data that must never be logged (AUTH payloads). Made for every write
    and dropped once it is done, never shared: treat it as read-only. (Not a frozen
    dataclass, which sets each field through ``object.__setattr__``: a pipelined stream makes
    one per message.)
    """

    data: bytes
    replies: int = 1
    secret: bool = False


@dataclass(frozen=True, slots=True)
class UpgradeTLS:
    """Run the TLS handshake on the open connection (after a 220 to STARTTLS)."""


Op = Exchange | UpgradeTLS
#: A conversation yields ops, receives the replies each Exchange read, and returns a T.
Conversation = Generator[Op, Sequence[Reply], T]


def exchange(data: bytes, *, secret: bool = False) -> Conversation[Reply]:
    """Write one command and read its one reply."""
    (reply,) = yield Exchange(data, secret=secret)
    return reply


@dataclass(frozen=True, slots=True)
class Credentials:
    """What to log in with: a password, or an OAuth 2 access token source for XOAUTH2.

    ``oauth2_token`` is called for every login, so it can hand out a refreshed token; after a
    refused token it is called once more before giving up (the token may have just expired).
    """

    username: str
    password: str = ""
    oauth2_token: Callable[[], str] | None = None

    def __repr__(self) -> str:  # never let a secret reach a log line or a traceback
        kind = "oauth2_token=<callable>" if self.oauth2_token else "password='***'"
        return f"Credentials(username={self.username!r}, {kind})"
