"""The event types of outbound webhooks and the body of a delivery.

Every type ``domain.feedback.record`` writes to ``message_events`` is one event type here,
named ``message.<type>``. A delivery's body (JSON, the Standard Webhooks payload shape)::

    {"type": "message.bounced", "timestamp": "2026-12-03T05:00:00Z",
     "data": {"project_id", "message_id", "profile_id", "email", "source", "bounce_type",
              "reason", "url", "machine", "occurred_at"}}

``data`` always has every key (null where the type has no such value), so a receiver can
read any event with one schema.
"""

from __future__ import annotations

import json
from typing import Any

from getfluxly_server.storage.models import MessageEvent, MessageEventType

PREFIX = "message."

#: Every event type an endpoint may subscribe to, in the taxonomy's order.
EVENT_TYPES: tuple[str, ...] = tuple(PREFIX + kind.value for kind in MessageEventType)


def event_type(row: MessageEvent) -> str:
    """The outbound type of a ``message_events`` row (``bounced`` -> ``message.bounced``)."""
    return PREFIX + row.type


def _iso(row_time: Any) -> str:
    return str(row_time.isoformat()).replace("+00:00", "Z")


def body(row: MessageEvent) -> bytes:
    """The JSON body a delivery of ``row`` carries (built when it is sent: an erasure that
    scrubbed the row is honoured by every later attempt)."""
    occurred = _iso(row.occurred_at)
    document = {
        "type": event_type(row),
        "timestamp": occurred,
        "data": {
            "project_id": row.project_id,
            "message_id": row.message_id,
            "profile_id": row.profile_id,
            "email": row.email,
            "source": row.source,
            "bounce_type": row.bounce_type,
            "reason": row.reason,
            "url": row.url,
            "machine": row.machine,
            "occurred_at": occurred,
        },
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
