"""Amazon SES, through an SNS topic (SES notifications, or event publishing to SNS).

- Authentication: the SNS message signature (``domain/feedback/sns.py``: versions 1 and 2,
  the certificate only from Amazon SNS's host), its ``Timestamp`` within 5 minutes, and its
  ``TopicArn`` one of those allowed for the project: SNS signs for every topic of every AWS
  account, so the topic is what says the message is this project's. Configure with
  ``{"relay": "ses", "topic_arn": "arn:aws:sns:..."}`` (or ``"topic_arns": [...]``). A
  ``SubscriptionConfirmation`` that verifies is confirmed (its SubscribeURL fetched) by the
  worker; one that does not is refused before anything is fetched. The delivery id is the
  SNS ``MessageId``.
- Payload: SNS's JSON (sent as ``text/plain``); a Notification's ``Message`` is SES's JSON:
  ``notificationType`` (notifications) or ``eventType`` (event publishing): ``Bounce``
  (``bounce.bounceType`` ``Permanent`` (hard) / ``Transient`` / ``Undetermined`` (soft),
  ``bouncedRecipients[].emailAddress``, ``diagnosticCode``), ``Complaint``
  (``complainedRecipients``), ``Delivery`` (``delivery.recipients``), ``DeliveryDelay``
  (``delayedRecipients``), ``Open``, ``Click`` (``click.link``); ``mail.messageId`` is the id
  the send was answered with, ``mail.tags`` carries GetFluxly's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from getfluxly_server.domain.feedback import sns
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
from getfluxly_server.domain.feedback.signatures import (
    REPLAY_WINDOW,
    Incoming,
    Refused,
)
from getfluxly_server.storage.models import MessageEventType as T

TYPES = frozenset(sns.SIGNED_FIELDS)


def topics(materials: Sequence[Material]) -> set[str]:
    """The topic ARNs the project allows (every configured secret's)."""
    found: set[str] = set()
    for material in materials:
        found.update(t for t in items(material.config.get("topic_arns")) if isinstance(t, str))
    return found


class Ses:
    name = "ses"
    material = "topic_arn"
    optional = False

    def __init__(self, policy: sns.SnsPolicy) -> None:
        self.policy = policy

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        try:
            message = obj(json_of(incoming.body.decode("utf-8")))
        except (Unreadable, UnicodeDecodeError):
            message = {}
        kind = message.get("Type")
        if kind not in TYPES:
            raise Refused("The body must be an Amazon SNS message (Type, Message, Signature...)")
        topic = message.get("TopicArn")
        if not isinstance(topic, str) or topic not in topics(materials):
            raise Refused(
                "TopicArn is not one of this project's SNS topics: add it with POST "
                '/v1/projects/{project_id}/webhook-secrets {"relay": "ses", "topic_arn"}'
            )
        sent = iso_time(message.get("Timestamp"))
        if sent is None or abs((now - sent).total_seconds()) > REPLAY_WINDOW.total_seconds():
            raise Refused("Timestamp is missing or more than 5 minutes from the server's clock")
        message_id = message.get("MessageId")
        if not isinstance(message_id, str) or not message_id.strip():
            raise Refused("MessageId is required")
        sns.verify(message, self.policy)
        return message_id.strip()[:255]

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        message = obj(json_of(payload))
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            return Parsed(subscribe_url=text(message.get("SubscribeURL")))
        if kind != "Notification":
            return Parsed(note=f"SNS {kind} carries no feedback")
        inner = message.get("Message")
        ses = obj(json_of(inner)) if isinstance(inner, str) else {}
        name = text(ses.get("eventType")) or text(ses.get("notificationType"))
        if not name:
            raise Unreadable("the SNS message is not an SES notification or event")
        mail = obj(ses.get("mail"))
        common: dict[str, Any] = {
            "source": self.name,
            "provider_message_id": text(mail.get("messageId")),
            "message_id": metadata_id(obj(mail.get("tags"))),
        }
        found = _events(name, ses, mail, received_at)
        return Parsed(
            events=[
                FeedbackEvent(**common, **fields, provider_event_id=f"{delivery_id}:{index}")
                for index, fields in enumerate(found)
            ],
            note=None if found else f"SES {name} carries no feedback",
        )


def _events(
    name: str, ses: dict[str, Any], mail: dict[str, Any], received_at: datetime
) -> list[dict[str, Any]]:
    """The events of one SES notification, as FeedbackEvent fields (one per recipient)."""
    first = next((t for t in items(mail.get("destination")) if isinstance(t, str)), "")
    if name == "Bounce":
        bounce = obj(ses.get("bounce"))
        hard = text(bounce.get("bounceType")) == "Permanent"
        when = iso_time(bounce.get("timestamp")) or received_at
        return [
            {"type": T.BOUNCED, "email": text(r.get("emailAddress")) or "", "occurred_at": when,
             "bounce_type": "hard" if hard else "soft",
             "reason": text(r.get("diagnosticCode")) or text(bounce.get("bounceSubType"))}
            for r in map(obj, items(bounce.get("bouncedRecipients")))
        ]  # fmt: skip
    if name == "Complaint":
        complaint = obj(ses.get("complaint"))
        when = iso_time(complaint.get("timestamp")) or received_at
        return [
            {"type": T.COMPLAINED, "email": text(r.get("emailAddress")) or "",
             "occurred_at": when, "reason": text(complaint.get("complaintFeedbackType"))}
            for r in map(obj, items(complaint.get("complainedRecipients")))
        ]  # fmt: skip
    if name == "Delivery":
        delivery = obj(ses.get("delivery"))
        when = iso_time(delivery.get("timestamp")) or received_at
        return [
            {"type": T.DELIVERED, "email": r, "occurred_at": when,
             "reason": text(delivery.get("smtpResponse"))}
            for r in items(delivery.get("recipients")) if isinstance(r, str)
        ]  # fmt: skip
    if name == "DeliveryDelay":
        delay = obj(ses.get("deliveryDelay"))
        when = iso_time(delay.get("timestamp")) or received_at
        return [
            {"type": T.DEFERRED, "email": text(r.get("emailAddress")) or "", "occurred_at": when,
             "reason": text(r.get("diagnosticCode")) or text(delay.get("delayType"))}
            for r in map(obj, items(delay.get("delayedRecipients")))
        ]  # fmt: skip
    if name == "Open":
        opened = obj(ses.get("open"))
        return [{"type": T.OPENED, "email": first,
                 "occurred_at": iso_time(opened.get("timestamp")) or received_at}]  # fmt: skip
    if name == "Click":
        click = obj(ses.get("click"))
        return [{"type": T.CLICKED, "email": first, "url": text(click.get("link")),
                 "occurred_at": iso_time(click.get("timestamp")) or received_at}]  # fmt: skip
    return []
