"""SMTP AUTH exchanges (RFC 4954), each written once as a generator.

PLAIN and LOGIN send the password itself (FluxMail only does so inside TLS, or where the caller
allowed plaintext); CRAM-MD5 proves it without sending it; XOAUTH2 sends an OAuth 2 bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from fluxmail.errors import AuthError, SMTPReplyError
from fluxmail.protocol.ops import Conversation, Credentials, exchange
from fluxmail.protocol.replies import Reply

#: Inside TLS the password is protected: prefer the simple, universal mechanisms.
TLS_PREFERENCE = ("PLAIN", "LOGIN", "CRAM-MD5")
#: On a plaintext connection (allowed explicitly), prefer the one that never sends it.
PLAINTEXT_PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _step(line: str) -> Conversation[Reply]:
    return (yield from exchange(line.encode("ascii") + b"\r\n", secret=True))


def _unsupported(offered: frozenset[str], known: tuple[str, ...]) -> AuthError:
    # The first sentence is smtplib's own, which code written for smtplib or Django matches.
    what = (
        f"The server offers {', '.join(sorted(offered))}"
        if offered
        else "SMTP AUTH extension not supported by server."
    )
    return AuthError(
        f"{what}; FluxMail can log in here with {', '.join(known)}. "
        "Many relays only offer AUTH after STARTTLS (use_tls=True)",
        "auth_unsupported",
    )


def _failed(reply: Reply, mechanism: str) -> SMTPReplyError | AuthError:
    if reply.transient:
        return SMTPReplyError(f"AUTH {mechanism} failed temporarily: {reply}", reply, "AUTH")
    advice = (
        "check the account and that the token has the SMTP scope"
        if mechanism == "XOAUTH2"
        else "check the username and password, and whether the provider wants an app "
        "password or API token instead"
    )
    return AuthError(f"Authentication failed ({reply}); {advice}", "auth_failed", reply)


def authenticate(
    offered: frozenset[str], credentials: Credentials, *, tls: bool = True
) -> Conversation[str]:
    """Log in with the best mechanism both sides know; returns the mechanism used."""
    if credentials.oauth2_token is not None:
        if "XOAUTH2" not in offered:
            raise _unsupported(offered, ("XOAUTH2",))
        yield from _xoauth2(credentials)
        return "XOAUTH2"
    preference = TLS_PREFERENCE if tls else PLAINTEXT_PREFERENCE
    mechanism = next((m for m in preference if m in offered), None)
    if mechanism is None:
        raise _unsupported(offered, preference)
    if mechanism == "PLAIN":
        token = _b64(f"\0{credentials.username}\0{credentials.password}")
        reply = yield from _step(f"AUTH PLAIN {token}")
    elif mechanism == "LOGIN":
        reply = yield from _step("AUTH LOGIN")
        for secret in (credentials.username, credentials.password):
            if reply.code != 334:
                break
            reply = yield from _step(_b64(secret))
    else:
        reply = yield from _cram_md5(credentials)
    if reply.code != 235:
        raise _failed(reply, mechanism)
    return mechanism


def _cram_md5(credentials: Credentials) -> Conversation[Reply]:
    """RFC 2195: answer the server's challenge with HMAC-MD5 keyed by the password."""
    reply = yield from _step("AUTH CRAM-MD5")
    if reply.code != 334:
        return reply
    try:
        challenge = base64.b64decode(reply.text.strip(), validate=True)
    except ValueError:
        yield from _step("*")  # cancel the exchange (RFC 4954 4)
        raise AuthError("Server sent a malformed CRAM-MD5 challenge", "auth_failed") from None
    digest = hmac.new(credentials.password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
    return (yield from _step(_b64(f"{credentials.username} {digest}")))


def _xoauth2(credentials: Credentials) -> Conversation[None]:
    """SASL XOAUTH2 (Google, Microsoft): a bearer token; one fresh token after a refusal."""
    assert credentials.oauth2_token is not None
    for attempt in (1, 2):
        token = credentials.oauth2_token()
        if any(ch in token for ch in "\x01\r\n"):
            raise AuthError("The OAuth 2 token callback returned a malformed token", "auth_failed")
        blob = f"user={credentials.username}\x01auth=Bearer {token}\x01\x01"
        reply = yield from _step(f"AUTH XOAUTH2 {_b64(blob)}")
        if reply.code == 334:
            # The server explains the refusal in a base64 JSON challenge; an empty answer
            # ends the exchange and fetches the final 535 (RFC 7628 3.2.3).
            reply = yield from _step("")
        if reply.code == 235:
            return
        if reply.transient or attempt == 2:
            raise _failed(reply, "XOAUTH2")
