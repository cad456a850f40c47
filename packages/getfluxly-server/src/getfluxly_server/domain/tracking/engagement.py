"""Opens, clicks and unsubscribes from the server's links, recorded as feedback.

Every one goes through :func:`getfluxly_server.domain.feedback.record.record` (source
``tracking``), which writes the ``message_events`` row, moves the message's status, applies
the suppression rules (an unsubscribe suppresses the address with reason ``unsubscribed``)
and adds the profile event (``email_opened``, ``email_clicked``, ...). A link of a message
that no longer exists, or whose person was erased, records nothing (a click still goes
where it pointed: the link was in the message).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.domain.tracking.machines import Hit, machine_click, machine_open
from getfluxly_server.storage import messages as message_store
from getfluxly_server.storage.models import Message, MessageEventType

SOURCE = "tracking"


def live_message(session: Session, message_id: str) -> Message | None:
    """The message a link names, unless it is gone or its person was erased."""
    message = message_store.get(session, message_id)
    if message is None or message.erased_at is not None:
        return None
    return message


def opened(session: Session, message_id: str, hit: Hit, scanner_seconds: float) -> bool:
    """Record an open of the message (machine-flagged, see :mod:`.machines`); whether one
    was recorded."""
    message = live_message(session, message_id)
    if message is None:
        return False
    machine = machine_open(_sent(hit, message), scanner_seconds)
    _record(session, message, MessageEventType.OPENED, hit, machine=machine)
    return True


def clicked(session: Session, message_id: str, url: str, hit: Hit, scanner_seconds: float) -> bool:
    """Record a click of ``url`` in the message; whether one was recorded."""
    message = live_message(session, message_id)
    if message is None:
        return False
    machine = machine_click(_sent(hit, message), scanner_seconds)
    _record(session, message, MessageEventType.CLICKED, hit, machine=machine, url=url)
    return True


def unsubscribed(
    session: Session, message: Message, hit: Hit, *, group: str | None, reason: str
) -> None:
    """Record an unsubscribe from ``group`` (None: from all marketing mail, which suppresses
    the address with reason ``unsubscribed``)."""
    _record(
        session, message, MessageEventType.UNSUBSCRIBED, hit, machine=False, group=group,
        reason=reason,
    )  # fmt: skip


def _sent(hit: Hit, message: Message) -> Hit:
    return Hit(hit.method, hit.user_agent, hit.address, hit.at, message.sent_at)


def _record(
    session: Session,
    message: Message,
    kind: MessageEventType,
    hit: Hit,
    *,
    machine: bool,
    url: str | None = None,
    group: str | None = None,
    reason: str | None = None,
) -> None:
    event = FeedbackEvent(
        type=kind,
        email=message.to_email,
        source=SOURCE,
        occurred_at=hit.at,
        message_id=message.id,
        url=url,
        machine=machine,
        group=group,
        reason=reason,
    )
    record(session, message.project_id, [event])
