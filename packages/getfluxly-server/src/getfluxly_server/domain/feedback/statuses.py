"""How feedback moves a message's status, and the catch-up for feedback that outran its
message's worker.

Statuses only go forward (:data:`RANK`): ``delivered`` < ``opened`` < ``clicked`` <
``unsubscribed`` < ``bounced`` < ``complained``; a late ``delivered`` after ``bounced`` is an
event that leaves the status. Only messages that left are moved (``sent``, ``unknown`` or a
feedback status): the worker sending a message owns its status until it records the outcome.

Feedback can arrive before that outcome is recorded: the relay has the message (a recipient
can open it, or a mailbox provider post its one-click unsubscribe) while the worker still
holds the reply to record with its next batch. Such an event is recorded at once (its
suppression applies at once too) and :data:`CATCH_UP` is queued for its message: once the
worker has recorded the outcome, the job moves the status through the events recorded
meanwhile, as if they had come after. A message still in flight is looked at again later,
backing off, for about two hours (a deferred message retried after that keeps the events but
not their status: the ledger says what its worker last did).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.queue.kinds import JobKind, JobPayload
from getfluxly_server.storage import message_events as store
from getfluxly_server.storage.models import MessageEvent, MessageEventType, MessageStatus, now

__all__ = ["CATCH_UP", "RANK", "STATUS_OF", "CatchUp", "catch_up", "move"]

#: How far along a message is, by status: feedback only ever moves it to a higher rank.
#: ``sent`` and ``unknown`` (the relay may have taken it) are where feedback starts.
RANK: dict[str, int] = {
    MessageStatus.SENT.value: 0,
    MessageStatus.UNKNOWN.value: 0,
    MessageStatus.DELIVERED.value: 1,
    MessageStatus.OPENED.value: 2,
    MessageStatus.CLICKED.value: 3,
    MessageStatus.UNSUBSCRIBED.value: 4,
    MessageStatus.BOUNCED.value: 5,
    MessageStatus.COMPLAINED.value: 6,
}
#: The status each event type moves a message to (``deferred``: none).
STATUS_OF: dict[str, str] = {
    MessageEventType.DELIVERED.value: MessageStatus.DELIVERED.value,
    MessageEventType.OPENED.value: MessageStatus.OPENED.value,
    MessageEventType.CLICKED.value: MessageStatus.CLICKED.value,
    MessageEventType.UNSUBSCRIBED.value: MessageStatus.UNSUBSCRIBED.value,
    MessageEventType.BOUNCED.value: MessageStatus.BOUNCED.value,
    MessageEventType.COMPLAINED.value: MessageStatus.COMPLAINED.value,
}
#: Statuses whose worker has yet to record what the relay said.
IN_FLIGHT = frozenset(
    {MessageStatus.QUEUED.value, MessageStatus.SENDING.value, MessageStatus.DEFERRED.value}
)
#: The catch-up's looks at a message still in flight: after 1, 2, 4, … seconds, at most
#: :data:`_LONGEST` apart, :data:`_LOOKS` in all (about two hours).
_LOOKS, _LONGEST = 30, 300.0


class CatchUp(JobPayload):
    """Move these messages' statuses through the feedback recorded while they were in
    flight. ``look``: how many looks found one still in flight before this one."""

    project_id: str
    message_ids: tuple[str, ...]
    look: int = 0


CATCH_UP = JobKind("feedback.catch_up", CatchUp)


def _detail(row: MessageEvent) -> str:
    """A history entry's words: who reported it and what they said (``postmark: hard
    bounce; 550 5.1.1 no such user``)."""
    words = [
        text
        for text in (f"{row.bounce_type} bounce" if row.bounce_type else None, row.reason)
        if text
    ]
    return f"{row.source}: {'; '.join(words)}"[:1_000] if words else row.source


def move(
    session: Session,
    project_id: str,
    written: Sequence[MessageEvent],
    messages: dict[str, store.MessageRef],
    moment: datetime,
    *,
    look: int = 0,
) -> None:
    """Move each message forward through the statuses its new events reach, in the order
    they happened; one conditional UPDATE per final status, one INSERT of history. A message
    still in flight that an event would move gets a :data:`CATCH_UP` (one job per call)."""
    steps: dict[str, list[tuple[str, datetime, str]]] = defaultdict(list)
    waiting: set[str] = set()
    for row in sorted(written, key=lambda r: (r.occurred_at, r.id)):
        target = STATUS_OF.get(row.type)
        message = messages.get(row.message_id) if row.message_id else None
        if target is None or message is None or message.erased:
            continue
        if message.status in IN_FLIGHT:
            waiting.add(message.id)
            continue
        reached = steps[message.id][-1][0] if steps[message.id] else message.status
        if reached in RANK and RANK[target] > RANK[reached]:
            steps[message.id].append((target, row.occurred_at, _detail(row)))
    by_final: dict[str, list[str]] = defaultdict(list)
    for message_id, path in steps.items():
        if path:
            by_final[path[-1][0]].append(message_id)
    history: list[dict[str, Any]] = []
    for final, ids in by_final.items():
        # From any status below the final one: a concurrent move further on is never undone.
        below = [status for status, rank in RANK.items() if rank < RANK[final]]
        for message_id in sorted(store.advance(session, ids, final, below, moment)):
            history += [
                {"message_id": message_id, "status": status, "at": at, "detail": detail}
                for status, at, detail in steps[message_id]
            ]
    store.add_history(session, history)
    if waiting and look < _LOOKS:
        delay = timedelta(seconds=min(2.0**look, _LONGEST))
        payload = CatchUp(project_id=project_id, message_ids=tuple(sorted(waiting)), look=look)
        CATCH_UP.enqueue(session, payload, run_at=moment + delay)


def catch_up(session: Session, job: CatchUp) -> dict[str, Any]:
    """The job: replay, through :func:`move`, the status-moving events recorded for the
    job's messages (those that left since; those still in flight are queued for another
    look). In the caller's transaction; what it found, for the job's result."""
    messages = {m.id: m for m in store.messages_by(session, job.project_id, ids=job.message_ids)}
    events = store.events_of(session, list(messages), list(STATUS_OF))
    move(session, job.project_id, events, messages, now(), look=job.look + 1)
    still = sum(1 for m in messages.values() if m.status in IN_FLIGHT)
    return {"messages": len(messages), "in_flight": still}
