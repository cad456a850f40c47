"""The SMTP conversations, written once as generators and driven by either transport.

A conversation yields :class:`Exchange` (write these bytes, then read this many replies) and
:class:`UpgradeTLS` (run the TLS handshake now); the transport sends back the tuple of replies
read. Errors are raised from inside the conversation, so both transports fail identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fluxmail.errors import AuthError, SMTPReplyError, TLSError
from fluxmail.protocol.auth import authenticate
from fluxmail.protocol.commands import Extensions, command
from fluxmail.protocol.ops import Conversation, Credentials, UpgradeTLS, exchange
from fluxmail.protocol.replies import Reply

TLSMode = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """How to open a session: the EHLO name, the TLS mode and what to log in with.

    ``plaintext_auth`` allows AUTH on a connection without TLS (for loopback or a relay the
    caller explicitly trusts); otherwise a password is never sent in the clear.
    """

    local_hostname: str
    tls_mode: TLSMode = "none"
    credentials: Credentials | None = None
    plaintext_auth: bool = False


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What we learned while opening the session."""

    greeting: Reply
    extensions: Extensions
    tls: bool
    auth_mechanism: str | None


def _ehlo(name: str) -> Conversation[Extensions]:
    reply = yield from exchange(command("EHLO", name))
    if reply.ok:
        return Extensions.from_ehlo(reply.lines)
    if reply.code in (500, 502, 504):  # a pre-ESMTP server: fall back to HELO
        helo = yield from exchange(command("HELO", name))
        if helo.ok:
            return Extensions(esmtp=False)
        reply = helo
    raise SMTPReplyError(f"Server refused EHLO: {reply}", reply, "EHLO")


def open_session(plan: SessionPlan) -> Conversation[ServerInfo]:
    """Greeting, EHLO, STARTTLS when asked (never skipped), EHLO again, then AUTH."""
    greeting = yield from exchange(b"")
    if greeting.code != 220:
        raise SMTPReplyError(f"Server refused the connection: {greeting}", greeting, "greeting")
    extensions = yield from _ehlo(plan.local_hostname)
    tls = plan.tls_mode == "ssl"
    if plan.tls_mode == "starttls":
        if not extensions.has("STARTTLS"):
            raise TLSError(
                # The first sentence is smtplib's, which code written for it matches.
                "STARTTLS extension not supported by server. use_tls=True requires it: use "
                "use_ssl=True for an implicit-TLS port (usually 465), or fix the relay",
                "starttls_not_advertised",
            )
        reply = yield from exchange(command("STARTTLS"))
        if reply.code != 220:
            raise TLSError(f"Server refused STARTTLS: {reply}", "tls_failed")
        yield UpgradeTLS()
        tls = True
        # RFC 3207: forget everything learned before TLS and ask again.
        extensions = yield from _ehlo(plan.local_hostname)
    mechanism = None
    if plan.credentials is not None:
        if not tls and not plan.plaintext_auth:
            raise AuthError(
                "Refusing to send a password over an unencrypted connection; use use_tls=True "
                "or use_ssl=True, or allow_plaintext_auth=True for a relay you trust",
                "auth_requires_tls",
            )
        mechanism = yield from authenticate(extensions.auth_mechanisms, plan.credentials, tls=tls)
    return ServerInfo(greeting, extensions, tls, mechanism)


def simple(verb: str) -> Conversation[Reply]:
    """A command with no arguments whose reply the caller inspects (RSET, NOOP, QUIT)."""
    return (yield from exchange(command(verb)))
