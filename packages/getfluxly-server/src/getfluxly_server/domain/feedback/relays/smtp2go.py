"""SMTP2GO webhooks (https://developers.smtp2go.com/docs/webhooks-overview).

- Authentication: the credentials written in the webhook URL, sent as HTTP Basic
  (``https://getfluxly:<secret>@host/webhooks/smtp2go/<project_id>``), or ``Authorization:
  Bearer <secret>`` as a custom header; GetFluxly makes the secret. Nothing is signed with a
  timestamp; a repeated post is the same bytes (its SHA-256 is its delivery id).
- Payload: one event per post, form-encoded or JSON: ``event`` (``delivered``, ``open``,
  ``click`` with ``url``, ``bounce`` with ``bounce`` ``hard``/``soft``, ``spam``,
  ``unsubscribe``; ``processed``, ``resubscribe`` and ``reject`` carry no feedback),
  ``rcpt`` (the recipient), ``email_id`` (the id the send was answered with), ``time``,
  ``message`` (the relay's words), and the headers the webhook reports (SMTP2GO has no
  metadata field: GetFluxly's id travels as the ``X-GetFluxly-Message-Id`` header).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from getfluxly_server.domain.feedback.record import FeedbackEvent
from getfluxly_server.domain.feedback.relays.base import (
    MESSAGE_ID_HEADER,
    Material,
    Parsed,
    Unreadable,
    event_key,
    iso_time,
    items,
    json_of,
    obj,
    text,
)
from getfluxly_server.domain.feedback.signatures import Incoming, body_digest, verify_credentials
from getfluxly_server.storage.models import MessageEventType as T

_KINDS = {
    "delivered": T.DELIVERED,
    "open": T.OPENED,
    "click": T.CLICKED,
    "bounce": T.BOUNCED,
    "spam": T.COMPLAINED,
    "unsubscribe": T.UNSUBSCRIBED,
}


def header_value(data: dict[str, Any], name: str) -> str | None:
    """A message header as a webhook reports it: a top-level field of that name, or an entry
    of ``headers`` (an object, or a list of ``{"header"|"name", "value"}``); any case."""
    for key, value in data.items():
        if key.lower() == name:
            return text(value)
    headers = data.get("headers")
    if isinstance(headers, dict):
        return header_value(headers, name) if headers is not data else None
    for entry in map(obj, items(headers)):
        label = text(entry.get("header")) or text(entry.get("name")) or ""
        if label.lower() == name:
            return text(entry.get("value"))
    return None


class Smtp2go:
    name = "smtp2go"
    material = "generated"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        verify_credentials(incoming, [m.secret for m in materials])
        return body_digest(incoming.body)

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        if "x-www-form-urlencoded" in content_type:
            data: dict[str, Any] = dict(parse_qsl(payload, keep_blank_values=True))
        else:
            data = obj(json_of(payload))
        name = text(data.get("event"))
        if name is None:
            raise Unreadable("no event field: not an SMTP2GO webhook")
        kind = _KINDS.get(name)
        if kind is None:
            return Parsed(note=f"event {name} is not feedback")
        email = text(data.get("rcpt")) or text(data.get("email")) or ""
        provider_id = text(data.get("email_id"))
        when = iso_time(data.get("time")) or received_at
        event = FeedbackEvent(
            type=kind,
            email=email,
            source=self.name,
            occurred_at=when,
            message_id=header_value(data, MESSAGE_ID_HEADER),
            provider_message_id=provider_id,
            smtp_message_id=header_value(data, "message-id"),
            provider_event_id=event_key(name, provider_id, email, data.get("time")),
            bounce_type=(text(data.get("bounce")) or "hard") if kind is T.BOUNCED else None,
            reason=text(data.get("message")) or text(data.get("context")),
            url=text(data.get("url")) if kind is T.CLICKED else None,
        )
        return Parsed(events=[event])
