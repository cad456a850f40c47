"""The one way feedback is recorded, whatever reported it: a relay's webhook, the generic
schema, the bounce mailbox, the open pixel, a click, an unsubscribe.

:func:`record` takes a batch of :class:`FeedbackEvent` and, in the caller's transaction:

1. joins each event to its ledger message, by GetFluxly's id, else the relay's message id,
   else the Message-ID header (only messages of the project are ever found);
2. writes a ``message_events`` row per event, skipping a report already recorded (the same
   ``(project, source, provider_event_id)``: a replayed webhook changes nothing);
3. moves each message's status forward, with a history entry per step (``statuses``:
   forward only; feedback that outran its message's worker catches up once the worker has
   recorded the outcome);
4. applies the suppression rules: a hard bounce suppresses the address (``hard_bounce``), a
   complaint (``complaint``), an unsubscribe from all marketing mail (``unsubscribed``),
   soft bounces of :attr:`FeedbackRules.soft_bounce_limit` distinct messages within
   :attr:`FeedbackRules.soft_bounce_window` (``soft_bounce_limit``); an unsubscribe from one
   subscription group records the choice for that group only (``subscriptions``); the
   unsubscribed addresses are handed to segments (``domain.segments.addresses``);
5. adds a profile event (``email_delivered``, ``email_bounced``, ``email_complained``,
   ``email_opened``, ``email_clicked``, ``email_unsubscribed``) for the message's profile,
   stitched by the normal event processing (which tells segments and automations); a machine
   open or click (a privacy proxy, a link scanner) gets none.

Set-based: a handful of statements per batch, whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from fluxmail import is_email
from getfluxly_server.domain.feedback import statuses
from getfluxly_server.domain.feedback.statuses import STATUS_OF
from getfluxly_server.domain.ingest import PROCESS_EVENTS, PROCESS_JOB, ProcessEvents
from getfluxly_server.domain.outbound.fanout import queue_deliveries
from getfluxly_server.domain.segments import addresses as segment_addresses
from getfluxly_server.storage import events as event_store
from getfluxly_server.storage import message_events as store
from getfluxly_server.storage import suppressions as suppression_store
from getfluxly_server.storage.models import (
    ADDRESS_MAX,
    MessageEvent,
    MessageEventType,
    SuppressionReason,
    now,
)

__all__ = ["PROFILE_EVENTS", "FeedbackEvent", "FeedbackRules", "record"]

#: The profile event each event type adds (``deferred``: none).
PROFILE_EVENTS: dict[str, str] = {kind: f"email_{kind}" for kind in STATUS_OF}

#: Column widths (storage/models.py), so a long value from a reporter never fails a batch.
_SOURCE_MAX, _EVENT_ID_MAX, _TEXT_MAX, _GROUP_MAX = 32, 255, 2_000, 64


@dataclass(frozen=True)
class FeedbackEvent:
    """One report about one message (or at least one address), in the common taxonomy."""

    type: MessageEventType
    email: str  # the recipient the event is about
    source: str  # relay slug | "smtp" | "bounce_mailbox" | "tracking"
    occurred_at: datetime  # aware UTC
    message_id: str | None = None  # GetFluxly's msg_ id, when the reporter knows it
    provider_message_id: str | None = None
    smtp_message_id: str | None = None  # the Message-ID header
    provider_event_id: str | None = None  # the reporter's own event id (dedupe)
    bounce_type: str | None = None  # "hard" | "soft"
    reason: str | None = None
    url: str | None = None  # a click's link
    machine: bool = False  # machine open / link scanner
    group: str | None = None  # an unsubscribe from one subscription group


@dataclass(frozen=True)
class FeedbackRules:
    """The project-independent rules :func:`record` applies (``GETFLUXLY_SOFT_BOUNCE_*``).

    An address is suppressed (``soft_bounce_limit``) once soft bounces of
    ``soft_bounce_limit`` distinct messages to it were reported within
    ``soft_bounce_window`` (default 3 within 30 days: long enough that a weekly newsletter's
    recipient whose mailbox stays full is caught, short enough that a bounce from last year
    does not count against a mailbox that works again).
    """

    soft_bounce_limit: int = 3
    soft_bounce_window: timedelta = field(default=timedelta(days=30))


DEFAULT_RULES = FeedbackRules()


def _clean(value: str | None, limit: int) -> str | None:
    """Text a reporter sent, as it can be stored on both databases (no NUL), within its
    column; None for nothing."""
    if value is None:
        return None
    text = value.replace("\x00", "").strip()
    return text[:limit] or None


def _angle_free(value: str | None) -> str | None:
    """A Message-ID without its angle brackets (how the ledger stores it)."""
    text = _clean(value, _EVENT_ID_MAX)
    return text.strip("<>").strip() or None if text else None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record(
    session: Session,
    project_id: str,
    events: Sequence[FeedbackEvent],
    *,
    rules: FeedbackRules = DEFAULT_RULES,
) -> list[MessageEvent]:
    """Join each event to its message (by id, provider id, Message-ID), write message_events
    (a replayed provider_event_id is skipped), move message status + history, apply the
    suppression rules, add profile events (email_opened, email_clicked, ...); returns the
    rows written. Set-based; in the caller's transaction.

    The caller is trusted with ``project_id`` (resolved from a verified webhook, a signed
    token or the message itself). An event naming no message the project has is still
    recorded for its address (``message_id`` None), and still suppresses it.
    """
    if not events:
        return []
    moment = now()
    messages = _join(session, project_id, events)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for event, message in zip(events, messages, strict=True):
        source = _clean(event.source, _SOURCE_MAX) or "unknown"
        event_id = _clean(event.provider_event_id, _EVENT_ID_MAX)
        if event_id is not None:
            if (source, event_id) in seen:  # the same report twice in one batch
                continue
            seen.add((source, event_id))
        email = suppression_store.normalise(event.email or "")
        if not email and message is not None:
            email = message.to_email
        kind = MessageEventType(event.type).value
        rows.append(
            {
                "project_id": project_id,
                "message_id": message.id if message else None,
                "profile_id": message.profile_id if message and not message.erased else None,
                "email": email[:ADDRESS_MAX],
                "type": kind,
                "bounce_type": event.bounce_type if event.bounce_type in ("hard", "soft") else None,
                "machine": bool(event.machine),
                "url": _clean(event.url, 8_000),
                "reason": _clean(event.reason, _TEXT_MAX),
                "source": source,
                "provider_event_id": event_id,
                "occurred_at": _utc(event.occurred_at),
                "recorded_at": moment,
                # Not a column: carried to the rules below, dropped before the insert.
                "_group": _clean(event.group, _GROUP_MAX),
            }
        )
    groups = [row.pop("_group") for row in rows]
    written = store.insert_events(session, rows)
    if not written:
        return []
    written_groups = _groups_of(rows, groups, written)
    by_id = {m.id: m for m in messages if m is not None}
    statuses.move(session, project_id, written, by_id, moment)
    _suppress(session, project_id, written, written_groups, rules, moment)
    _profile_events(session, project_id, written, by_id, written_groups, moment)
    # Outbound webhooks (domain/outbound): the project's subscribed endpoints hear of the
    # rows written, queued in this transaction (set-based: one fan-out per batch).
    queue_deliveries(session, project_id, written)
    return written


def _groups_of(
    rows: Sequence[dict[str, Any]], groups: Sequence[str | None], written: Sequence[MessageEvent]
) -> list[str | None]:
    """The subscription group of each written row (groups have no column: they are kept in
    ``subscriptions``). A row with a reporter's event id is matched by it (unique in the
    batch); the others were all written, in order (ids grow in insertion order)."""
    keyed = {
        (row["source"], row["provider_event_id"]): group
        for row, group in zip(rows, groups, strict=True)
        if row["provider_event_id"] is not None
    }
    unkeyed = iter(
        group for row, group in zip(rows, groups, strict=True) if row["provider_event_id"] is None
    )
    return [
        keyed.get((w.source, w.provider_event_id)) if w.provider_event_id else next(unkeyed)
        for w in written
    ]


def _join(
    session: Session, project_id: str, events: Sequence[FeedbackEvent]
) -> list[store.MessageRef | None]:
    """Each event's message (or None), by id, else provider message id, else Message-ID."""
    ids = {e.message_id for e in events if e.message_id}
    provider_ids = {p for e in events if (p := _clean(e.provider_message_id, _EVENT_ID_MAX))}
    smtp_ids = {s for e in events if (s := _angle_free(e.smtp_message_id))}
    found = store.messages_by(
        session, project_id, ids=ids, provider_ids=provider_ids, smtp_ids=smtp_ids
    )
    by_id = {m.id: m for m in found}
    by_provider = {m.provider_message_id: m for m in found if m.provider_message_id}
    by_smtp = {m.smtp_message_id: m for m in found if m.smtp_message_id}
    joined: list[store.MessageRef | None] = []
    for event in events:
        provider_id = _clean(event.provider_message_id, _EVENT_ID_MAX)
        smtp_id = _angle_free(event.smtp_message_id)
        joined.append(
            (by_id.get(event.message_id) if event.message_id else None)
            or (by_provider.get(provider_id) if provider_id else None)
            or (by_smtp.get(smtp_id) if smtp_id else None)
        )
    return joined


def _suppress(
    session: Session,
    project_id: str,
    written: Sequence[MessageEvent],
    groups: Sequence[str | None],
    rules: FeedbackRules,
    moment: datetime,
) -> None:
    entries: list[tuple[str, str, str | None]] = []
    choices: list[tuple[str, str, str | None]] = []
    soft: set[str] = set()
    for row, group in zip(written, groups, strict=True):
        if not _addressable(row.email):
            continue
        if row.type == MessageEventType.BOUNCED.value and row.bounce_type == "hard":
            entries.append((row.email, SuppressionReason.HARD_BOUNCE.value, row.message_id))
        elif row.type == MessageEventType.BOUNCED.value and row.bounce_type == "soft":
            soft.add(row.email)
        elif row.type == MessageEventType.COMPLAINED.value:
            entries.append((row.email, SuppressionReason.COMPLAINT.value, row.message_id))
        elif row.type == MessageEventType.UNSUBSCRIBED.value:
            if group:
                choices.append((row.email, group, row.message_id))
            else:
                entries.append((row.email, SuppressionReason.UNSUBSCRIBED.value, row.message_id))
    if soft and rules.soft_bounce_limit > 0:
        counts = store.soft_bounces(session, project_id, soft, moment - rules.soft_bounce_window)
        last = {row.email: row.message_id for row in written if row.email in soft}
        entries += [
            (email, SuppressionReason.SOFT_BOUNCE_LIMIT.value, last[email])
            for email in sorted(soft)
            if counts.get(email, 0) >= rules.soft_bounce_limit
        ]
    suppression_store.add_many_if_absent(session, project_id, entries)
    store.unsubscribe_groups(session, project_id, choices, moment)
    # Segments reading subscription state: every profile with an unsubscribed address (the
    # message's own also hears of it through its email_unsubscribed event).
    left = [e for e, r, _ in entries if r == SuppressionReason.UNSUBSCRIBED.value]
    segment_addresses.changed(session, project_id, left + [e for e, _, _ in choices])


def _addressable(email: str) -> bool:
    return bool(email) and len(email) <= ADDRESS_MAX and is_email(email)


def _profile_events(
    session: Session,
    project_id: str,
    written: Sequence[MessageEvent],
    messages: dict[str, store.MessageRef],
    groups: Sequence[str | None],
    moment: datetime,
) -> None:
    """A profile event per new human event of a message that has a (live) profile, stored
    like an ingested event naming the profile by ``user_id``, and the project's event
    processing asked for (which stitches it and tells segments and automations)."""
    rows: list[dict[str, Any]] = []
    for row, group in zip(written, groups, strict=True):
        name = PROFILE_EVENTS.get(row.type)
        message = messages.get(row.message_id) if row.message_id else None
        if name is None or row.machine or message is None or message.erased:
            continue
        if message.profile_id is None:
            continue
        properties: dict[str, Any] = {"message_id": message.id, "source": row.source}
        for key, value in (
            ("bounce_type", row.bounce_type), ("url", row.url), ("group", group),
        ):  # fmt: skip
            if value is not None:
                properties[key] = value
        rows.append(
            {
                "project_id": project_id, "message_id": f"message_event:{row.id}",
                "type": "track", "name": name, "anonymous_id": None, "external_id": None,
                "user_id": message.profile_id, "properties": properties, "traits": {},
                "context": {}, "timestamp": row.occurred_at, "received_at": moment,
            }
        )  # fmt: skip
    if rows and event_store.insert_events(session, rows):
        PROCESS_EVENTS.enqueue_once(
            session, ProcessEvents(project_id=project_id), f"{PROCESS_JOB}:{project_id}"
        )
