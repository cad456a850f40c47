"""The SMTP conversations, written once as generators and driven by either transport.

A conversation yields :class:`Exchange` (write these bytes, then read this many replies) and
:class:`UpgradeTLS` (run the TLS handshake now); the transport sends back the tuple of replies
read. Errors are raised from inside the conversation, so both transports fail identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fluxmail.errors import AuthError, RecipientsRefused, SMTPReplyError, TLSError
from fluxmail.protocol.auth import authenticate
from fluxmail.protocol.commands import Envelope, Extensions, command, mail_from, rcpt_to
from fluxmail.protocol.data import encode_data
from fluxmail.protocol.ops import Conversation, Credentials, Exchange, UpgradeTLS, exchange
from fluxmail.protocol.replies import Reply
from fluxmail.result import SendResult

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
                "STARTTLS was required (use_tls=True) but the server does not offer it; use "
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
        mechanism = yield from authenticate(extensions.auth_mechanisms, plan.credentials)
    return ServerInfo(greeting, extensions, tls, mechanism)


def send_message(
    envelope: Envelope, message: bytes, extensions: Extensions
) -> Conversation[SendResult]:
    """One mail transaction. A partial refusal is a result; a total one raises.

    With PIPELINING, MAIL, every RCPT and DATA go out in one write (RFC 2920). After a failed
    transaction the caller should RSET (:func:`reset`) before reusing the connection.
    """
    payload = encode_data(message)
    limit = extensions.max_size
    if limit is not None and len(payload) > limit:
        raise SMTPReplyError(
            f"Message of {len(payload)} bytes exceeds the server's SIZE limit of {limit}",
            Reply(552, ("5.3.4 Message size exceeds fixed maximum message size",)),
            "MAIL FROM",
        )
    first = mail_from(envelope, extensions, len(payload), eight_bit=not message.isascii())
    rcpts = [rcpt_to(address, extensions) for address in envelope.recipients]
    if extensions.has("PIPELINING"):
        replies = yield Exchange(first + b"".join(rcpts) + command("DATA"), len(rcpts) + 2)
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
    else:
        mail_reply = yield from exchange(first)
        if not mail_reply.ok:
            raise SMTPReplyError(f"Server refused the sender: {mail_reply}", mail_reply, "MAIL")
        answers: list[Reply] = []
        for rcpt in rcpts:
            answers.append((yield from exchange(rcpt)))
        rcpt_replies = tuple(answers)
        if not any(r.ok for r in rcpt_replies):
            data_reply = Reply(554, ("5.5.1 No valid recipients",))
        else:
            data_reply = yield from exchange(command("DATA"))

    accepted = tuple(a for a, r in zip(envelope.recipients, rcpt_replies, strict=True) if r.ok)
    refused = {a: r for a, r in zip(envelope.recipients, rcpt_replies, strict=True) if not r.ok}
    if data_reply.code == 354 and (not mail_reply.ok or not accepted):
        # A pipelining server may accept DATA although nothing before it succeeded; close the
        # empty transaction rather than send the message to nobody.
        yield from exchange(b".\r\n")
    if not mail_reply.ok:
        raise SMTPReplyError(f"Server refused the sender: {mail_reply}", mail_reply, "MAIL")
    if not accepted:
        raise RecipientsRefused(refused)
    if data_reply.code != 354:
        raise SMTPReplyError(f"Server refused DATA: {data_reply}", data_reply, "DATA")
    final = yield from exchange(payload)
    if not final.ok:
        raise SMTPReplyError(f"Server rejected the message: {final}", final, "DATA")
    return SendResult(accepted=accepted, refused=refused, reply=final)


def simple(verb: str) -> Conversation[Reply]:
    """A command with no arguments whose reply the caller inspects (RSET, NOOP, QUIT)."""
    return (yield from exchange(command(verb)))
