"""Resend webhooks (https://resend.com/docs/dashboard/webhooks/introduction).

- Authentication: Svix signatures. ``svix-signature`` lists ``v1,<base64 HMAC-SHA256 of
  "svix-id.svix-timestamp.body">`` entries under the endpoint's signing secret, which Resend
  makes (``whsec_...``): given as ``{"relay": "resend", "secret": "whsec_..."}``. The
  timestamp must be within 5 minutes; ``svix-id`` is the delivery id.
- Payload: ``{"type", "created_at", "data"}``: ``type`` ``email.delivered``,
  ``email.delivery_delayed``, ``email.bounced`` (``data.bounce.type`` ``Permanent`` is hard,
  else soft; ``data.bounce.message``), ``email.complained``, ``email.opened``,
  ``email.clicked`` (``data.click.link``); ``email.sent``, ``email.failed`` and the rest
  carry no feedback. ``data.email_id`` is the id the send was answered with, ``data.to`` the
  recipients, ``data.tags`` GetFluxly's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from getfluxly_server.domain.feedback.record import FeedbackEvent
from getfluxly_server.domain.feedback.relays.base import (
    Material,
    Parsed,
    Unreadable,
    iso_time,
    items,
    json_of,
    metadata_id,
    obj,
    text,
)
from getfluxly_server.domain.feedback.signatures import Incoming, verify_standard
from getfluxly_server.storage.models import MessageEventType as T

_KINDS = {
    "email.delivered": T.DELIVERED,
    "email.delivery_delayed": T.DEFERRED,
    "email.bounced": T.BOUNCED,
    "email.complained": T.COMPLAINED,
    "email.opened": T.OPENED,
    "email.clicked": T.CLICKED,
}


class Resend:
    name = "resend"
    material = "secret"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        return verify_standard(incoming, [m.secret for m in materials], now, prefix="svix")[:255]

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        body = obj(json_of(payload))
        name = text(body.get("type"))
        if name is None:
            raise Unreadable("no type: not a Resend webhook")
        kind = _KINDS.get(name)
        if kind is None:
            return Parsed(note=f"{name} carries no feedback")
        data = obj(body.get("data"))
        when = iso_time(body.get("created_at")) or iso_time(data.get("created_at")) or received_at
        recipients = [t for t in items(data.get("to")) if isinstance(t, str)]
        if not recipients and (single := text(data.get("to"))):
            recipients = [single]
        bounce = obj(data.get("bounce"))
        hard = text(bounce.get("type")) == "Permanent"
        events = [
            FeedbackEvent(
                type=kind,
                email=email,
                source=self.name,
                occurred_at=when,
                message_id=metadata_id(data.get("tags")),
                provider_message_id=text(data.get("email_id")),
                provider_event_id=f"{delivery_id}:{index}",
                bounce_type=("hard" if hard else "soft") if kind is T.BOUNCED else None,
                reason=text(bounce.get("message")) if kind is T.BOUNCED else None,
                url=text(obj(data.get("click")).get("link")) if kind is T.CLICKED else None,
            )
            for index, email in enumerate(recipients or [""])
        ]
        return Parsed(events=events)
