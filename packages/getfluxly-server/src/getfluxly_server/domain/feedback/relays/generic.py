"""GetFluxly's own generic schema, for relays without an adapter (engine spec section 7):
``POST /webhooks/smtp/{project_id}``.

- Authentication: Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` (Unix seconds, within 5 minutes) and ``webhook-signature: v1,<base64
  HMAC-SHA256 of "id.timestamp.body">`` under the project's ``whsec_<base64>`` secret
  (GetFluxly makes it). ``webhook-id`` is the delivery id.
- Payload: ``{"events": [{"id", "type": "delivered"|"deferred"|"bounced"|"complained"|
  "opened"|"clicked"|"unsubscribed", "email", "message_id"? (GetFluxly's), "smtp_message_id"?
  (the Message-ID header), "bounce_type"?: "hard"|"soft", "reason"?, "timestamp"}]}``, and
  beyond the spec ``url`` (a click's link) and ``group`` (an unsubscribe from one
  subscription group). ``timestamp`` is ISO 8601 or Unix seconds. Up to 1,000 events a post;
  unknown fields are refused. A body that does not fit is refused at once (400, naming the
  field), after its signature verified: this schema is ours, so its sender hears what is
  wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from getfluxly_server.domain.errors import ValidationFailed, invalid_input
from getfluxly_server.domain.feedback.record import FeedbackEvent
from getfluxly_server.domain.feedback.relays.base import Material, Parsed, Unreadable
from getfluxly_server.domain.feedback.signatures import Incoming, verify_standard
from getfluxly_server.storage.models import ADDRESS_MAX, MessageEventType

MAX_EVENTS = 1_000
Short = Annotated[str, Field(min_length=1, max_length=255)]


class GenericEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Short
    type: Literal[
        "delivered", "deferred", "bounced", "complained", "opened", "clicked", "unsubscribed"
    ]
    email: Annotated[str, Field(min_length=1, max_length=ADDRESS_MAX)]
    message_id: Short | None = None
    smtp_message_id: Short | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    reason: Annotated[str, Field(max_length=2_000)] | None = None
    url: Annotated[str, Field(max_length=8_000)] | None = None
    group: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    timestamp: datetime | int


class GenericBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: Annotated[list[GenericEvent], Field(min_length=1, max_length=MAX_EVENTS)]


def read(body: bytes | str) -> GenericBody:
    """The body as the schema; ``validation_error`` naming the first fault."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"The body is not valid JSON ({exc})") from None
    try:
        return GenericBody.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc.errors(include_url=False), data) from None


def _moment(value: datetime | int) -> datetime:
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Generic:
    name = "smtp"
    material = "standard"
    optional = False

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        delivery_id = verify_standard(incoming, [m.secret for m in materials], now)
        read(incoming.body)
        return delivery_id[:255]

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        try:
            body = read(payload)
        except ValidationFailed as exc:
            raise Unreadable(exc.detail) from None
        return Parsed(
            events=[
                FeedbackEvent(
                    type=MessageEventType(event.type),
                    email=event.email,
                    source=self.name,
                    occurred_at=_moment(event.timestamp),
                    message_id=event.message_id,
                    smtp_message_id=event.smtp_message_id,
                    provider_event_id=event.id,
                    bounce_type=event.bounce_type,
                    reason=event.reason,
                    url=event.url,
                    group=event.group,
                )
                for event in body.events
            ]
        )
