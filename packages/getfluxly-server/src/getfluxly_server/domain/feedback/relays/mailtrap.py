"""Mailtrap email sending webhooks (https://docs.mailtrap.io/email-api-smtp/advanced/webhooks).

- Authentication: Mailtrap signs each post: ``Mailtrap-Signature`` is the hex HMAC-SHA256
  of the raw body under the webhook's signing secret, which Mailtrap makes (given as
  ``{"relay": "mailtrap", "secret": "..."}``). A webhook set up with HTTP Basic credentials
  in its URL instead works with a secret GetFluxly makes (``{"relay": "mailtrap"}``): a post
  without the signature header must then carry them. A repeated post is the same bytes (its
  SHA-256 is its delivery id), and its events carry the same ``event_id``.
- Payload: ``{"events": [...]}`` (JSON) or one event per line (JSON Lines): ``event``
  (``delivery``, ``soft bounce``, ``bounce``, ``spam``, ``unsubscribe``, ``open``,
  ``click`` with ``url``; ``suspension`` and ``reject`` carry no feedback), ``email``,
  ``message_id`` (the id the send was answered with), ``event_id``, ``timestamp`` (Unix),
  ``response``/``reason``, ``custom_variables`` (GetFluxly's id).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from getfluxly_server.domain.feedback.record import FeedbackEvent
from getfluxly_server.domain.feedback.relays.base import (
    Material,
    Parsed,
    Unreadable,
    event_key,
    items,
    json_of,
    metadata_id,
    obj,
    text,
    unix_time,
)
from getfluxly_server.domain.feedback.signatures import (
    Incoming,
    body_digest,
    verify_credentials,
    verify_hex_hmac,
)
from getfluxly_server.storage.models import MessageEventType as T

SIGNATURE = "mailtrap-signature"
_KINDS: dict[str, tuple[T, str | None]] = {
    "delivery": (T.DELIVERED, None),
    "soft bounce": (T.BOUNCED, "soft"),
    "bounce": (T.BOUNCED, "hard"),
    "spam": (T.COMPLAINED, None),
    "unsubscribe": (T.UNSUBSCRIBED, None),
    "open": (T.OPENED, None),
    "click": (T.CLICKED, None),
}


def _entries(payload: str) -> list[Any]:
    try:
        return items(obj(json_of(payload)).get("events")) or [json_of(payload)]
    except Unreadable:  # JSON Lines: one event a line
        return [json_of(line) for line in payload.splitlines() if line.strip()]


class Mailtrap:
    name = "mailtrap"
    material = "secret"
    optional = True

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        secrets = [m.secret for m in materials]
        signature = incoming.header(SIGNATURE)
        if signature:
            verify_hex_hmac(incoming.body, signature, secrets, "Mailtrap-Signature")
        else:
            verify_credentials(incoming, secrets)
        return body_digest(incoming.body)

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        events = []
        for entry in map(obj, _entries(payload)):
            name = text(entry.get("event"))
            if name is None:
                raise Unreadable("an event without an event field: not a Mailtrap webhook")
            found = _KINDS.get(name.lower())
            if found is None:
                continue
            kind, bounce = found
            email = text(entry.get("email")) or ""
            provider_id = text(entry.get("message_id"))
            when = unix_time(entry.get("timestamp")) or received_at
            events.append(
                FeedbackEvent(
                    type=kind,
                    email=email,
                    source=self.name,
                    occurred_at=when,
                    message_id=metadata_id(entry.get("custom_variables")),
                    provider_message_id=provider_id,
                    provider_event_id=text(entry.get("event_id"))
                    or event_key(name, provider_id, email, entry.get("timestamp")),
                    bounce_type=bounce,
                    reason=text(entry.get("response")) or text(entry.get("reason")),
                    url=text(entry.get("url")) if kind is T.CLICKED else None,
                )
            )
        return Parsed(events=events)
