"""SendGrid (Twilio) Event Webhook (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event).

- Authentication: the Signed Event Webhook. ``X-Twilio-Email-Event-Webhook-Signature`` is a
  base64 ECDSA P-256 / SHA-256 signature (DER) of the ``X-Twilio-Email-Event-Webhook-
  Timestamp`` header's value followed by the raw body; SendGrid keeps the private key and
  shows the public key (base64 DER) once signing is enabled: that is this relay's secret
  (``{"relay": "sendgrid", "public_key": "MFkw..."}``). The timestamp must be within 5
  minutes.
- Payload: a JSON array of events: ``event`` (``delivered``, ``deferred``, ``bounce`` with
  ``type`` ``bounce`` (hard) or ``blocked`` (soft), ``open`` with ``sg_machine_open``,
  ``click`` with ``url``, ``spamreport``, ``unsubscribe``, ``group_unsubscribe`` with
  ``asm_group_id``; ``processed``, ``dropped`` and ``group_resubscribe`` carry no feedback),
  ``email``, ``timestamp`` (Unix), ``sg_event_id``, ``sg_message_id`` (the ``X-Message-Id``
  the send was answered with, then ``.filter...``), ``reason``, and the message's
  ``custom_args`` flattened in (GetFluxly's id).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from getfluxly_server.domain.feedback.record import FeedbackEvent
from getfluxly_server.domain.feedback.relays.base import (
    MESSAGE_ID_FIELD,
    Material,
    Parsed,
    Unreadable,
    event_key,
    items,
    json_of,
    obj,
    text,
    unix_time,
)
from getfluxly_server.domain.feedback.signatures import (
    Incoming,
    Refused,
    body_digest,
    check_timestamp,
    verify_ecdsa,
)
from getfluxly_server.storage.models import MessageEventType as T

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
_KINDS = {
    "delivered": T.DELIVERED,
    "deferred": T.DEFERRED,
    "bounce": T.BOUNCED,
    "open": T.OPENED,
    "click": T.CLICKED,
    "spamreport": T.COMPLAINED,
    "unsubscribe": T.UNSUBSCRIBED,
    "group_unsubscribe": T.UNSUBSCRIBED,
}


class SendGrid:
    name = "sendgrid"
    material = "public_key"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        signature, timestamp = incoming.header(SIGNATURE), incoming.header(TIMESTAMP)
        if not signature or not timestamp:
            raise Refused(
                "The X-Twilio-Email-Event-Webhook-Signature and -Timestamp headers are "
                "required: enable the Signed Event Webhook in SendGrid"
            )
        check_timestamp(timestamp, now, "X-Twilio-Email-Event-Webhook-Timestamp")
        verify_ecdsa(
            timestamp.encode() + incoming.body,
            signature,
            [m.secret for m in materials],
            "X-Twilio-Email-Event-Webhook-Signature",
        )
        return body_digest(incoming.body)

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        data = json_of(payload)
        if not isinstance(data, list):
            raise Unreadable("the body is not a JSON array of events")
        events = []
        for raw in items(data):
            entry = obj(raw)
            kind = _KINDS.get(text(entry.get("event")) or "")
            if kind is None:
                continue
            sg_message = text(entry.get("sg_message_id"))
            when = unix_time(entry.get("timestamp")) or received_at
            email = text(entry.get("email")) or ""
            bounce = None
            if kind is T.BOUNCED:
                bounce = "soft" if text(entry.get("type")) == "blocked" else "hard"
            group = None
            if entry.get("event") == "group_unsubscribe":
                group = text(entry.get("asm_group_id"))
            events.append(
                FeedbackEvent(
                    type=kind,
                    email=email,
                    source=self.name,
                    occurred_at=when,
                    message_id=text(entry.get(MESSAGE_ID_FIELD)),
                    provider_message_id=sg_message.split(".", 1)[0] if sg_message else None,
                    provider_event_id=text(entry.get("sg_event_id"))
                    or event_key(entry.get("event"), sg_message, email, when),
                    bounce_type=bounce,
                    reason=text(entry.get("reason")) or text(entry.get("response")),
                    url=text(entry.get("url")) if kind is T.CLICKED else None,
                    machine=entry.get("sg_machine_open") is True,
                    group=group,
                )
            )
        return Parsed(events=events)
