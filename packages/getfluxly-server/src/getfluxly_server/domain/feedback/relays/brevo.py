"""Brevo (formerly Sendinblue) transactional webhooks (https://developers.brevo.com/docs/transactional-webhooks).

- Authentication: Brevo does not sign its posts; the webhook is created with credentials,
  HTTP Basic in its URL (``https://getfluxly:<secret>@host/webhooks/brevo/<project_id>``) or
  a bearer token (``"auth": {"type": "bearer", "token": "<secret>"}``); GetFluxly makes the
  secret. Nothing is signed with a timestamp; a repeated post is the same bytes (its SHA-256
  is its delivery id).
- Payload: one JSON object per event (or an array of them, when Brevo batches): ``event``
  (``delivered``, ``deferred``, ``soft_bounce``, ``hard_bounce``, ``invalid_email`` (a hard
  bounce), ``spam``, ``opened``/``unique_opened``, ``proxy_open``/``unique_proxy_open`` (an
  open by a privacy proxy: a machine open), ``click`` with ``link``, ``unsubscribed``;
  ``request``, ``blocked`` and ``error`` carry no feedback), ``email``, ``message-id`` (the
  Message-ID header), ``ts_event`` (Unix), ``reason``. Brevo is used through its SMTP relay,
  where GetFluxly writes the Message-ID: that is how its events find their message.
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
    iso_time,
    json_of,
    obj,
    text,
    unix_time,
)
from getfluxly_server.domain.feedback.signatures import Incoming, body_digest, verify_credentials
from getfluxly_server.storage.models import MessageEventType as T

_KINDS: dict[str, tuple[T, dict[str, Any]]] = {
    "delivered": (T.DELIVERED, {}),
    "deferred": (T.DEFERRED, {}),
    "soft_bounce": (T.BOUNCED, {"bounce_type": "soft"}),
    "hard_bounce": (T.BOUNCED, {"bounce_type": "hard"}),
    "invalid_email": (T.BOUNCED, {"bounce_type": "hard"}),
    "spam": (T.COMPLAINED, {}),
    "opened": (T.OPENED, {}),
    "unique_opened": (T.OPENED, {}),
    "proxy_open": (T.OPENED, {"machine": True}),
    "unique_proxy_open": (T.OPENED, {"machine": True}),
    "click": (T.CLICKED, {}),
    "unsubscribed": (T.UNSUBSCRIBED, {}),
}


class Brevo:
    name = "brevo"
    material = "generated"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        verify_credentials(incoming, [m.secret for m in materials])
        return body_digest(incoming.body)

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        data = json_of(payload)
        entries = data if isinstance(data, list) else [data]
        events = []
        for entry in map(obj, entries):
            name = text(entry.get("event"))
            if name is None:
                raise Unreadable("no event field: not a Brevo webhook")
            found = _KINDS.get(name)
            if found is None:
                continue
            kind, extra = found
            email = text(entry.get("email")) or ""
            header = text(entry.get("message-id"))
            when = (
                unix_time(entry.get("ts_event"))
                or unix_time(entry.get("ts_epoch"))
                or iso_time(entry.get("date"))
                or received_at
            )
            events.append(
                FeedbackEvent(
                    type=kind,
                    email=email,
                    source=self.name,
                    occurred_at=when,
                    smtp_message_id=header,
                    provider_event_id=event_key(name, header, email, entry.get("ts_event")),
                    reason=text(entry.get("reason")),
                    url=text(entry.get("link")) if kind is T.CLICKED else None,
                    **extra,
                )
            )
        return Parsed(events=events)
