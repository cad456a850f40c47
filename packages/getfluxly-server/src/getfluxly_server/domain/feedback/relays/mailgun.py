"""Mailgun webhooks (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/).

- Authentication: the body carries ``signature``: ``{"timestamp", "token", "signature"}``,
  where ``signature`` is the hex HMAC-SHA256 of ``timestamp`` followed by ``token`` under the
  account's HTTP webhook signing key (Mailgun makes it: this relay's secret, given as
  ``{"relay": "mailgun", "secret": "key-..."}``). The timestamp must be within 5 minutes;
  the token is the delivery id (Mailgun's advice: refuse a token seen before).
  The body must be JSON to find the signature in it: it is read for those three fields
  only, and nothing else in it is believed before they verify.
- Payload: ``event-data``: ``event`` (``delivered``; ``failed`` with ``severity``
  ``permanent`` (a bounce: soft when Mailgun gave up retrying, ``reason: old``) or
  ``temporary`` (a deferral); ``opened``, ``clicked`` with ``url``, ``unsubscribed``,
  ``complained``), ``id``, ``timestamp`` (Unix, fractional), ``recipient``,
  ``message.headers.message-id`` (the id the send was answered with), ``user-variables``
  (GetFluxly's id), ``delivery-status`` (``code``, ``message``, ``description``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from getfluxly_server.domain.feedback.record import FeedbackEvent
from getfluxly_server.domain.feedback.relays.base import (
    Material,
    Parsed,
    Unreadable,
    event_key,
    json_of,
    metadata_id,
    obj,
    text,
    unix_time,
)
from getfluxly_server.domain.feedback.signatures import (
    Incoming,
    Refused,
    check_timestamp,
    verify_hex_hmac,
)
from getfluxly_server.storage.models import MessageEventType as T

_KINDS = {
    "delivered": T.DELIVERED,
    "opened": T.OPENED,
    "clicked": T.CLICKED,
    "unsubscribed": T.UNSUBSCRIBED,
    "complained": T.COMPLAINED,
}


class Mailgun:
    name = "mailgun"
    material = "secret"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        try:
            signed = obj(obj(json_of(incoming.body.decode("utf-8"))).get("signature"))
        except (Unreadable, UnicodeDecodeError):
            signed = {}
        timestamp, token = text(signed.get("timestamp")), text(signed.get("token"))
        signature = text(signed.get("signature"))
        if not timestamp or not token or not signature:
            raise Refused(
                "The body must be Mailgun's JSON webhook with signature.timestamp, "
                "signature.token and signature.signature"
            )
        check_timestamp(timestamp, now, "signature.timestamp")
        verify_hex_hmac(
            (timestamp + token).encode(),
            signature,
            [m.secret for m in materials],
            "signature.signature",
        )
        return f"token:{token}"[:255]

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        data = obj(obj(json_of(payload)).get("event-data"))
        if not data:
            raise Unreadable("no event-data: not a Mailgun webhook")
        name = text(data.get("event")) or ""
        status = obj(data.get("delivery-status"))
        reason = (
            text(status.get("description"))
            or text(status.get("message"))
            or text(data.get("reason"))
        )
        bounce = None
        if name == "failed":
            if text(data.get("severity")) == "temporary":
                kind = T.DEFERRED
            else:
                kind = T.BOUNCED
                bounce = "soft" if text(data.get("reason")) == "old" else "hard"
        elif name in _KINDS:
            kind = _KINDS[name]
        else:
            return Parsed(note=f"event {name or '(none)'} is not feedback")
        headers = obj(obj(data.get("message")).get("headers"))
        provider_id = text(headers.get("message-id"))
        email = text(data.get("recipient")) or ""
        when = unix_time(data.get("timestamp")) or received_at
        event = FeedbackEvent(
            type=kind,
            email=email,
            source=self.name,
            occurred_at=when,
            message_id=metadata_id(data.get("user-variables")),
            provider_message_id=provider_id.strip("<>") if provider_id else None,
            smtp_message_id=provider_id,
            provider_event_id=text(data.get("id")) or event_key(name, provider_id, email, when),
            bounce_type=bounce,
            reason=reason,
            url=text(data.get("url")) if kind is T.CLICKED else None,
        )
        return Parsed(events=[event])
