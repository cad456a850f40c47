"""Broadcasts as the API sees them: create, list, read, change a draft, and the actions that
move one through its statuses (engine spec section 5).

```
draft --start--> scheduled (send_at in the future) --send_at comes (the runner)--> sending
draft --start--> sending (send_at absent or past: the audience snapshotted at once)
sending --pause--> paused --resume--> sending
sending --every member has a final message (the runner)--> sent
draft | scheduled | sending | paused --cancel--> cancelled
```

Any other action is 409 ``invalid_transition`` naming the status. A ``template_id``,
``segment_id`` or ``provider_id`` that is not the project's (or was deleted) is 400
``validation_error`` naming the field, on create, on change and again at start.

Starting snapshots the segment's members (``segment_members``) into the audience; pausing
holds the broadcast's messages that no worker has started sending (none goes out while
paused); resuming gives them back and the runner records the rest; cancelling withdraws the
held and queued ones (``failed``, with a history entry saying so) and records no more. A
member's message is keyed ``broadcast:<id>:<profile>`` (:func:`~.messages.broadcast_key`),
so nobody is recorded, or mailed, twice.

Counts (:class:`Counts`): ``targeted`` (the audience), ``sent`` (the relay accepted it,
whatever feedback came after), ``failed`` (refused, failed for good, or ``unknown``: the
answer was lost; never resent automatically), ``suppressed``, ``pending`` (queued, deferred,
sending, held, or not recorded yet), ``skipped`` (no usable address, an erased profile, or
the same person as another member after a merge) and ``cancelled`` (never sent because the
broadcast was cancelled). They add up to ``targeted``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain import paging
from getfluxly_server.domain.broadcasts import pace
from getfluxly_server.domain.broadcasts.errors import InvalidTransition
from getfluxly_server.domain.clock import SYSTEM, Clock
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.messages.enqueue import resolve_provider
from getfluxly_server.domain.tenancy import Principal, display_name, project_of
from getfluxly_server.storage import broadcasts as store
from getfluxly_server.storage import jobs
from getfluxly_server.storage import templates as template_store
from getfluxly_server.storage.models import (
    Broadcast,
    BroadcastStatus,
    MessageStatus,
    new_id,
)

#: The wake-up kind of broadcast runners (``storage.jobs.wake_workers``).
WAKE_KIND = "broadcasts"
#: The fastest rate a broadcast may ask for.
MAX_RATE_PER_MINUTE = 10_000_000
#: Fields a change may set.
CHANGEABLE = ("name", "template_id", "segment_id", "send_at", "rate_per_minute", "provider_id")
CANCELLED_DETAIL = "the broadcast was cancelled before this message was sent"

#: Message statuses counted as sent: the relay accepted it (feedback statuses come after).
_SENT = frozenset(
    {
        MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.OPENED,
        MessageStatus.CLICKED, MessageStatus.UNSUBSCRIBED, MessageStatus.COMPLAINED,
        MessageStatus.BOUNCED,
    }
)  # fmt: skip
_FAILED = frozenset({MessageStatus.FAILED, MessageStatus.UNKNOWN})
_PENDING = frozenset({MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING})
_CANCELLABLE = frozenset(
    {
        BroadcastStatus.DRAFT, BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING,
        BroadcastStatus.PAUSED,
    }
)  # fmt: skip


@dataclass(frozen=True)
class Counts:
    """Where a broadcast's audience is (see the module docstring)."""

    targeted: int
    sent: int
    failed: int
    suppressed: int
    pending: int
    skipped: int
    cancelled: int


@dataclass(frozen=True)
class BroadcastPage:
    broadcasts: Sequence[Broadcast]
    next_cursor: str | None


def _rate(rate: int | None) -> int | None:
    if rate is not None and not 1 <= rate <= MAX_RATE_PER_MINUTE:
        raise ValidationFailed(
            f"rate_per_minute: give 1-{MAX_RATE_PER_MINUTE}, or null for as fast as the "
            "provider allows",
            field="rate_per_minute",
        )
    return rate


def _check_references(session: Session, broadcast: Broadcast, *, segment: bool = True) -> None:
    """The broadcast's template, segment (unless ``segment`` is False: its audience was
    taken already) and provider are the project's, and live."""
    template = template_store.get(session, broadcast.template_id)
    if (
        template is None
        or template.project_id != broadcast.project_id
        or template.deleted_at is not None
    ):
        raise ValidationFailed(
            "template_id: no such template in this project (or it was deleted)",
            field="template_id",
        )
    if segment and store.live_segment(session, broadcast.project_id, broadcast.segment_id) is None:
        raise ValidationFailed(
            "segment_id: no such segment in this project (or it was deleted)",
            field="segment_id",
        )
    if broadcast.provider_id is not None:
        resolve_provider(session, broadcast.project_id, broadcast.provider_id)


def create(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    name: str,
    template_id: str,
    segment_id: str,
    send_at: datetime | None = None,
    rate_per_minute: int | None = None,
    provider_id: str | None = None,
) -> Broadcast:
    """A new ``draft`` broadcast of the project (nothing is sent until it is started)."""
    project_of(session, principal, project_id)
    broadcast = Broadcast(
        id=new_id("brd"), project_id=project_id, name=display_name(name), template_id=template_id,
        segment_id=segment_id, provider_id=provider_id, status=BroadcastStatus.DRAFT.value,
        send_at=send_at, rate_per_minute=_rate(rate_per_minute), targeted=0, next_position=0,
        skipped=0, withdrawn=0,
    )  # fmt: skip
    _check_references(session, broadcast)
    return store.add(session, broadcast)


def find(
    session: Session, principal: Principal, broadcast_id: str, *, lock: bool = False
) -> Broadcast:
    """The broadcast if ``principal`` may see it; ``not_found`` otherwise (another tenant's
    broadcast is answered exactly as one that does not exist). ``lock``: for an action."""
    found = store.in_workspace(session, principal.workspace_id, broadcast_id, lock=lock)
    if found is None or principal.project_id not in (None, found.project_id):
        raise NotFound("broadcast")
    return found


def page(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = paging.DEFAULT_LIMIT,
) -> BroadcastPage:
    """The project's broadcasts (of ``status`` if given), newest first, a page at a time."""
    project_of(session, principal, project_id)
    if status is not None and status not in set(BroadcastStatus):
        raise ValidationFailed(
            f"status must be one of {', '.join(s.value for s in BroadcastStatus)}",
            field="status",
        )
    rows, next_cursor = paging.newest_first(
        lambda before, n: store.page(session, project_id, status, before, n), limit, cursor
    )
    return BroadcastPage(rows, next_cursor)


def update(
    session: Session,
    principal: Principal,
    broadcast_id: str,
    changes: Mapping[str, Any],
    *,
    clock: Clock = SYSTEM,
) -> Broadcast:
    """Change a ``draft`` or ``scheduled`` broadcast (only the fields given). A scheduled
    broadcast whose ``send_at`` is cleared or moved to the past starts at the runner's next
    pass."""
    broadcast = find(session, principal, broadcast_id, lock=True)
    if broadcast.status not in (BroadcastStatus.DRAFT, BroadcastStatus.SCHEDULED):
        raise InvalidTransition("edit", broadcast.status)
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise ValidationFailed(f"{sorted(unknown)[0]}: cannot be changed", field=sorted(unknown)[0])
    for required in ("name", "template_id", "segment_id"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(f"{required}: cannot be null", field=required)
    values = dict(changes)
    if "name" in values:
        values["name"] = display_name(values["name"])
    if "rate_per_minute" in values:
        values["rate_per_minute"] = _rate(values["rate_per_minute"])
    if broadcast.status == BroadcastStatus.SCHEDULED and "send_at" in values:
        if values["send_at"] is None:
            values["send_at"] = clock.now()  # due now: the runner starts it
        jobs.wake_workers(session, WAKE_KIND)
    for key, value in values.items():
        setattr(broadcast, key, value)
    _check_references(session, broadcast)
    broadcast.updated_at = clock.now()
    return broadcast


def begin(session: Session, broadcast: Broadcast, moment: datetime) -> None:
    """Start sending now: check the references again, snapshot the segment's members into
    the audience (one statement), fill the rate's bucket. An empty audience is ``sent`` at
    once. Raises ``validation_error`` (the field named) or ``no_provider`` before anything
    is written."""
    _check_references(session, broadcast)
    if broadcast.provider_id is None:
        resolve_provider(session, broadcast.project_id, None)  # no_provider, now
    broadcast.targeted = store.snapshot(session, broadcast.id, broadcast.segment_id)
    broadcast.next_position = 0
    broadcast.started_at = moment
    broadcast.last_error = None
    _restart_pace(broadcast, moment)
    if broadcast.targeted == 0:
        broadcast.status = BroadcastStatus.SENT.value
        broadcast.finished_at = moment
    else:
        broadcast.status = BroadcastStatus.SENDING.value
    broadcast.updated_at = moment


def _restart_pace(broadcast: Broadcast, moment: datetime) -> None:
    if broadcast.rate_per_minute is not None:
        broadcast.rate_tokens = pace.capacity(broadcast.rate_per_minute)
        broadcast.rate_at = moment


def start(
    session: Session, principal: Principal, broadcast_id: str, *, clock: Clock = SYSTEM
) -> Broadcast:
    """Start a draft: ``scheduled`` if its ``send_at`` is in the future, else ``sending``
    now (audience snapshotted in this transaction)."""
    broadcast = find(session, principal, broadcast_id, lock=True)
    if broadcast.status != BroadcastStatus.DRAFT:
        raise InvalidTransition("start", broadcast.status)
    moment = clock.now()
    if broadcast.send_at is not None and broadcast.send_at > moment:
        _check_references(session, broadcast)
        broadcast.status = BroadcastStatus.SCHEDULED.value
        broadcast.updated_at = moment
    else:
        begin(session, broadcast, moment)
    jobs.wake_workers(session, WAKE_KIND)
    return broadcast


def pause(
    session: Session, principal: Principal, broadcast_id: str, *, clock: Clock = SYSTEM
) -> Broadcast:
    """Stop a sending broadcast: no more messages are recorded, and those recorded but not
    yet handed to a relay are held (a chunk a worker is handing over at this moment still
    goes out)."""
    broadcast = find(session, principal, broadcast_id, lock=True)
    if broadcast.status != BroadcastStatus.SENDING:
        raise InvalidTransition("pause", broadcast.status)
    halt(session, broadcast, clock.now())
    return broadcast


def halt(
    session: Session, broadcast: Broadcast, moment: datetime, reason: str | None = None
) -> None:
    """Pause ``broadcast`` (row held by the caller), holding its waiting messages;
    ``reason``: why the runner did it by itself (shown as ``last_error``)."""
    broadcast.status = BroadcastStatus.PAUSED.value
    broadcast.last_error = reason
    broadcast.updated_at = moment
    store.hold(session, broadcast.id, moment)


def resume(
    session: Session, principal: Principal, broadcast_id: str, *, clock: Clock = SYSTEM
) -> Broadcast:
    """Carry on sending a paused broadcast where it stopped: its held messages go out and
    the runner records the members not reached yet; nobody already recorded is recorded
    again. A broadcast paused before it ever started (its scheduled start failed) starts
    now."""
    broadcast = find(session, principal, broadcast_id, lock=True)
    if broadcast.status != BroadcastStatus.PAUSED:
        raise InvalidTransition("resume", broadcast.status)
    moment = clock.now()
    if broadcast.started_at is None:
        begin(session, broadcast, moment)
    else:
        # The audience was taken at the start: the segment may have gone since.
        _check_references(session, broadcast, segment=False)
        broadcast.status = BroadcastStatus.SENDING.value
        broadcast.last_error = None
        broadcast.updated_at = moment
        _restart_pace(broadcast, moment)
        store.release(session, broadcast.id, moment)
    jobs.wake_workers(session, WAKE_KIND)
    return broadcast


def cancel(
    session: Session,
    principal: Principal,
    broadcast_id: str,
    *,
    clock: Clock = SYSTEM,
    note: str | None = None,
) -> Broadcast:
    """End a broadcast for good: messages recorded but not handed to a relay are withdrawn
    (``failed``, history "the broadcast was cancelled ...", then ``note`` if given), no more
    are recorded."""
    broadcast = find(session, principal, broadcast_id, lock=True)
    if broadcast.status not in _CANCELLABLE:
        raise InvalidTransition("cancel", broadcast.status)
    moment = clock.now()
    detail = CANCELLED_DETAIL + (f": {note}" if note else "")
    broadcast.withdrawn += store.withdraw(session, broadcast.id, moment, detail)
    broadcast.status = BroadcastStatus.CANCELLED.value
    broadcast.finished_at = moment
    broadcast.updated_at = moment
    return broadcast


def counts(session: Session, broadcasts: Sequence[Broadcast]) -> dict[str, Counts]:
    """Each broadcast's :class:`Counts`, from its messages and its row as one statement
    reads them (so they add up to ``targeted`` while it sends; one query for all)."""
    tallies = store.counts(session, [b.id for b in broadcasts])
    return {b.id: _counts(tallies[b.id]) for b in broadcasts if b.id in tallies}


def _counts(tally: store.Tally) -> Counts:
    by_status = tally.by_status

    def total(statuses: frozenset[MessageStatus]) -> int:
        return sum(n for status, n in by_status.items() if status in statuses)

    unrecorded = max(0, tally.targeted - tally.next_position)
    cancelled = tally.status == BroadcastStatus.CANCELLED
    return Counts(
        targeted=tally.targeted,
        sent=total(_SENT),
        failed=max(0, total(_FAILED) - tally.withdrawn),
        suppressed=by_status.get(MessageStatus.SUPPRESSED.value, 0),
        pending=total(_PENDING) + (0 if cancelled else unrecorded),
        skipped=tally.skipped,
        cancelled=tally.withdrawn + (unrecorded if cancelled else 0),
    )
