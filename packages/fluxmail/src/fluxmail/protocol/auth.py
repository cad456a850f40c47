"""SMTP AUTH exchanges (RFC 4954), each written once as a generator."""

from __future__ import annotations

import base64

from fluxmail.errors import AuthError, SMTPReplyError
from fluxmail.protocol.ops import Conversation, Credentials, exchange
from fluxmail.protocol.replies import Reply

# Strongest first among those that need no extra configuration.
PREFERENCE = ("PLAIN", "LOGIN")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _step(line: str) -> Conversation[Reply]:
    return (yield from exchange(line.encode("ascii") + b"\r\n", secret=True))


def _check(reply: Reply, mechanism: str) -> None:
    if reply.code == 235:
        return
    if reply.transient:
        raise SMTPReplyError(f"AUTH {mechanism} failed temporarily: {reply}", reply, "AUTH")
    raise AuthError(
        f"Authentication failed ({reply}); check the username and password, and whether the "
        "provider wants an app password or API token instead",
        "auth_failed",
    )


def authenticate(offered: frozenset[str], credentials: Credentials) -> Conversation[str]:
    """Log in with the best mechanism both sides know; returns the mechanism used."""
    mechanism = next((m for m in PREFERENCE if m in offered), None)
    if mechanism is None:
        what = ", ".join(sorted(offered)) or "no AUTH at all"
        raise AuthError(
            f"The server offers {what}; FluxMail can log in with {', '.join(PREFERENCE)}. "
            "Many relays only offer AUTH after STARTTLS (use_tls=True)",
            "auth_unsupported",
        )
    if mechanism == "PLAIN":
        token = _b64(f"\0{credentials.username}\0{credentials.password}")
        reply = yield from _step(f"AUTH PLAIN {token}")
    else:
        reply = yield from _step("AUTH LOGIN")
        for secret in (credentials.username, credentials.password):
            if reply.code != 334:
                break
            reply = yield from _step(_b64(secret))
    _check(reply, mechanism)
    return mechanism
