"""Postmark (https://postmarkapp.com/developer/webhooks/webhooks-overview).

- Authentication: Postmark sends the credentials written in the webhook URL as HTTP Basic
  (``https://getfluxly:<secret>@host/webhooks/postmark/<project_id>``), or a custom header
  (``Authorization: Bearer <secret>``); GetFluxly makes the secret. Nothing is signed with a
  timestamp, so there is no replay window; a repeated post is the same bytes (its SHA-256 is
  its delivery id) and its events carry the same ids.
- Payload: one JSON object per post, by ``RecordType``: ``Delivery`` (``Recipient``,
  ``DeliveredAt``), ``Bounce`` (``ID``, ``Type``, ``Email``, ``BouncedAt``, ``Description``,
  ``Details``), ``SpamComplaint`` (``ID``, ``Email``, ``BouncedAt``), ``Open``
  (``Recipient``, ``ReceivedAt``), ``Click`` (``Recipient``, ``ReceivedAt``,
  ``OriginalLink``), ``SubscriptionChange`` (``Recipient``, ``ChangedAt``,
  ``SuppressSending``, ``SuppressionReason``); each with ``MessageID`` (the relay's id) and
  ``Metadata`` (GetFluxly's id, sent with the message).
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
    metadata_id,
    obj,
    text,
)
from getfluxly_server.domain.feedback.signatures import Incoming, body_digest, verify_credentials
from getfluxly_server.storage.models import MessageEventType as T

#: Bounce types that mean the address does not work, and those that may pass.
HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "DMARCPolicy", "Unknown"})


class Postmark:
    name = "postmark"
    material = "generated"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        verify_credentials(incoming, [m.secret for m in materials])
        return body_digest(incoming.body)

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        data = obj(json_of(payload))
        record = text(data.get("RecordType"))
        if record is None:
            raise Unreadable("no RecordType: not a Postmark webhook")
        common: dict[str, Any] = {
            "source": self.name,
            "provider_message_id": text(data.get("MessageID")),
            "message_id": metadata_id(data.get("Metadata")),
        }
        recipient = text(data.get("Recipient")) or text(data.get("Email")) or ""
        if record == "Delivery":
            when = iso_time(data.get("DeliveredAt")) or received_at
            kind = T.DELIVERED
            extra: dict[str, Any] = {"reason": text(data.get("Details"))}
        elif record == "Bounce":
            bounce = text(data.get("Type")) or ""
            if bounce == "SpamComplaint":
                kind, extra = T.COMPLAINED, {}
            elif bounce in HARD or bounce in SOFT:
                kind = T.BOUNCED
                extra = {
                    "bounce_type": "hard" if bounce in HARD else "soft",
                    "reason": text(data.get("Details")) or text(data.get("Description")),
                }
            else:  # auto-responders, challenge mails, ...: not about delivery
                return Parsed(note=f"bounce type {bounce or '(none)'} is not a delivery failure")
            when = iso_time(data.get("BouncedAt")) or received_at
        elif record == "SpamComplaint":
            kind, extra = T.COMPLAINED, {}
            when = iso_time(data.get("BouncedAt")) or received_at
        elif record in ("Open", "Click"):
            kind = T.OPENED if record == "Open" else T.CLICKED
            extra = {"url": text(data.get("OriginalLink"))} if record == "Click" else {}
            when = iso_time(data.get("ReceivedAt")) or received_at
        elif record == "SubscriptionChange":
            # Bounces and complaints come as their own records; this one is news only when
            # the recipient unsubscribed (a manual suppression).
            reason = text(data.get("SuppressionReason"))
            if data.get("SuppressSending") is not True or reason != "ManualSuppression":
                return Parsed(note="subscription change that is not an unsubscribe")
            kind, extra = T.UNSUBSCRIBED, {}
            when = iso_time(data.get("ChangedAt")) or received_at
        else:
            return Parsed(note=f"record type {record} is not feedback")
        event_id = text(data.get("ID"))
        return Parsed(
            events=[
                FeedbackEvent(
                    type=kind,
                    email=recipient,
                    occurred_at=when,
                    provider_event_id=f"{record}:{event_id}"
                    if event_id
                    else event_key(record, common["provider_message_id"], recipient, when),
                    **common,
                    **extra,
                )
            ]
        )
