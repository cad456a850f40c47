"""Identity stitching: events become one profile per person, merging into the oldest.

Events are processed in the order they were stored, one project at a time (a project's
processor holds the project's row lock on PostgreSQL, the write lock on SQLite), so a
person's events always apply in order. An event whose ids match several profiles merges them
into the oldest: the survivor keeps its traits and only fills keys it lacks, events and
identities move to it, and the others are marked merged into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.feedback import erasure as feedback_erasure
from getfluxly_server.domain.messages import erasure as message_erasure
from getfluxly_server.queue.kinds import JobKind, JobPayload
from getfluxly_server.storage import automations as automation_store
from getfluxly_server.storage import erasures, profiles
from getfluxly_server.storage import events as store
from getfluxly_server.storage import messages as message_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Erasure, Event, Profile, new_id, now

ERASE_JOB = "profiles.erase"
ERASE_REASONS = ("gdpr_dsr", "ccpa_dsr", "customer_request", "internal")
CHUNK = 500
#: The most events one stitching transaction takes on SQLite (then it commits and queues for
#: the write lock again): every other writer of the process (the delivery threads marking
#: each window of messages they send) waits for it, so a backlog of events must not hold the
#: database for long at a time. Measured (bench/automation_latency.py --sqlite, 20,000
#: profiles at 200 events/s): 100 a transaction left delivery waiting behind stitching (p99
#: 4.9 s); 25 gave p99 1.0 s for about 1 ms more CPU per event.
CHUNK_PER_TRANSACTION = 25
#: The same on PostgreSQL, where a stitching transaction holds up no other writer (only the
#: project's other processors), so a backlog goes in chunks of CHUNK: each chunk's fixed
#: cost (the lock, the reads, the consumers' statements, the commit) is then shared by many
#: events. Measured (bench/automation_latency.py --postgres, 20,000 profiles at 200
#: events/s): the worker's CPU per event 4.2 ms at 25 a transaction, 3.4 at 200, 2.6-2.9 at
#: 500; its statements per event 4.0, 2.7, 2.6.
CHUNK_PER_TRANSACTION_POSTGRES = CHUNK
#: How soon an erasure is promised to be carried out (``completes_by``).
ERASURE_WITHIN = timedelta(minutes=5)


class EraseProfiles(JobPayload):
    """Carry out a recorded erasure (its row lists the profiles)."""

    erasure_id: str


ERASE_PROFILES = JobKind(ERASE_JOB, EraseProfiles)


def live(session: Session, profile: Profile) -> Profile:
    """Follow merges to the profile that survived."""
    seen = set()
    while profile.merged_into is not None and profile.id not in seen:
        seen.add(profile.id)
        survivor = profiles.by_id(session, profile.merged_into)
        if survivor is None:
            break
        profile = survivor
    return profile


def merge(session: Session, profiles: Iterable[Profile]) -> Profile:
    """Merge into the oldest; returns the survivor."""
    ordered = sorted({p.id: p for p in profiles}.values(), key=lambda p: (p.created_at, p.id))
    survivor, losers = ordered[0], ordered[1:]
    if not losers:
        return survivor
    traits = dict(survivor.traits)
    for loser in losers:
        for key, value in loser.traits.items():
            traits.setdefault(key, value)  # the survivor's own values win
        loser.merged_into, loser.merged_at = survivor.id, now()
    survivor.traits, survivor.updated_at = traits, now()
    store.move_to(session, [p.id for p in losers], survivor.id)
    # Their messages too: the ledger's "messages of a profile" is the person's.
    message_store.move_to(session, [p.id for p in losers], survivor.id)
    # Their automation runs too: one journey goes on where two were under way.
    automation_store.merge_profiles(session, [p.id for p in losers], survivor.id, now())
    return survivor


def resolve(session: Session, event: Event) -> Profile:
    """The (live) profile for an event's ids, created or merged as needed."""
    pairs = _pairs(event)
    found = {i.profile_id for i in store.identities_for(session, event.project_id, pairs)}
    matched = [live(session, p) for pid in found if (p := profiles.by_id(session, pid)) is not None]
    if event.user_id:
        named = store.profile(session, event.project_id, event.user_id)
        if named is not None:
            matched.append(live(session, named))
    matched = [p for p in matched if p.erased_at is None]
    if matched:
        survivor = merge(session, matched)
    else:
        # Created "now": processing is sequential, so creation order is the order the events
        # were stored in, even for several new people in one batch (same received_at).
        survivor = store.new_profile(session, event.project_id, now())
    known = {(i.kind, i.value) for i in store.profile_identities(session, survivor.id)}
    for kind, value in pairs:
        if (kind, value) not in known:
            store.add_identity(session, event.project_id, kind, value, survivor.id)
    return survivor


def apply(session: Session, event: Event) -> None:
    profile = resolve(session, event)
    if event.type == "identify" and event.traits:
        profile.traits = {**profile.traits, **event.traits}
        profile.updated_at = now()
    event.profile_id, event.processed_at = profile.id, now()


def lock_project(session: Session, project_id: str) -> None:
    """Serialise event processing per project: this row lock (PostgreSQL), or the write lock
    SQLite takes at BEGIN, keeps a person's events in order. The ingest does not wait for
    it (see ``storage.profiles.lock_project``)."""
    profiles.lock_project(session, project_id)


def lock_for_processing(session: Session, project_id: str) -> None:
    """:func:`lock_project`, then wait for the event inserts under way to commit
    (``storage.events.settle_inserts``): what the caller reads next is every event stored
    so far, in the order stored, and an insert that found a processing job already queued
    is seen by that job."""
    lock_project(session, project_id)
    store.settle_inserts(session)


#: Told of each chunk of a project's events once they are stitched to their profiles, in the
#: transaction that stitched them (``session``, ``project_id``, the events, each now with its
#: ``profile_id``): the engine keeps segments and automations current from here, event by
#: event, with no rescan and no event missed or seen twice (the chunk commits with what the
#: consumer wrote, or neither does). Registered by features (``Feature.event_consumers``).
EventConsumer = Callable[[Session, str, Sequence[Event]], None]


def _pairs(event: Event) -> list[tuple[str, str]]:
    return [
        (kind, value) for kind in ("anonymous_id", "external_id") if (value := getattr(event, kind))
    ]


def _apply_chunk(
    session: Session, project_id: str, batch: Sequence[Event], consumers: Sequence[EventConsumer]
) -> None:
    # Most events come from people already known by exactly the ids they carry: their
    # profiles are found for the whole chunk in one query per id kind, and such an event is
    # applied without the per-event lookups of resolve() (which it would do the same way:
    # one live profile, nothing to merge, no identity to add). Anything else (a user_id, a
    # new person, ids of two profiles, a merged or erased profile) takes resolve(); the ids
    # it touched are then forgotten here, so the events after it see what it did.
    owners = store.owners(session, project_id, {pair for e in batch for pair in _pairs(e)})
    for event in batch:
        pairs = _pairs(event)
        found = {owners.get(pair) for pair in pairs}
        profile = found.pop() if len(found) == 1 and not event.user_id else None
        if profile is None or profile.merged_into is not None or profile.erased_at is not None:
            apply(session, event)
            for pair in pairs:
                owners.pop(pair, None)
            continue
        if event.type == "identify" and event.traits:
            profile.traits = {**profile.traits, **event.traits}
            profile.updated_at = now()
        event.profile_id, event.processed_at = profile.id, now()
    if batch and consumers:
        session.flush()
        for consume in consumers:
            consume(session, project_id, batch)


def process_pending(
    session: Session, project_id: str, consumers: Sequence[EventConsumer] = ()
) -> int:
    """Apply every stored, unprocessed event of a project, in the caller's locked transaction."""
    done = 0
    while batch := store.unprocessed(session, project_id, CHUNK):
        _apply_chunk(session, project_id, batch, consumers)
        done += len(batch)
    return done


def process_project(db: Database, project_id: str, consumers: Sequence[EventConsumer] = ()) -> int:
    """Apply every stored, unprocessed event of a project, in order, a chunk per transaction
    (each chunk handed to ``consumers`` in its transaction); returns how many."""
    done = 0
    chunk = CHUNK_PER_TRANSACTION if db.is_sqlite else CHUNK_PER_TRANSACTION_POSTGRES
    while True:
        with db.transaction() as session:
            lock_for_processing(session, project_id)
            batch = store.unprocessed(session, project_id, chunk)
            _apply_chunk(session, project_id, batch, consumers)
        done += len(batch)
        if len(batch) < chunk:
            return done


# -- alias -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alias:
    """What an alias did: ``field`` (anonymous_id or previous_id) ``value`` now leads to the
    profile ``user_id``; ``merged_at`` is set when two profiles became one."""

    user_id: str
    field: str
    value: str
    merged_at: datetime | None


def alias(session: Session, project_id: str, body: dict[str, Any]) -> Alias:
    """Link an anonymous id or a previous external id to a profile.

    An id nobody has is attached; an anonymous-only profile is merged (into the oldest); an id
    that belongs to another profile known by an external id is ``alias_conflict``.
    """
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise ValidationFailed("user_id (the GetFluxly profile id) is required", field="user_id")
    sources = [(k, body[k]) for k in ("anonymous_id", "previous_id") if body.get(k)]
    if len(sources) != 1 or not isinstance(sources[0][1], str):
        raise ValidationFailed("give exactly one of anonymous_id or previous_id")
    field, value = sources[0]
    kind = "anonymous_id" if field == "anonymous_id" else "external_id"
    target = store.profile(session, project_id, user_id)
    if target is None:
        raise NotFound("profile")
    target = live(session, target)
    merged_at: datetime | None = None
    owner_rows = store.identities_for(session, project_id, [(kind, value)])
    if not owner_rows:
        store.add_identity(session, project_id, kind, value, target.id)
    else:
        owner = live(session, profiles.by_id(session, owner_rows[0].profile_id))  # type: ignore[arg-type]
        if owner.id != target.id:
            named = [
                i for i in store.profile_identities(session, owner.id) if i.kind == "external_id"
            ]
            if named:
                raise DomainError(
                    "alias_conflict",
                    f"{field} {value!r} belongs to another profile known by an external id; "
                    "merge is refused so two people are never joined by mistake",
                )
            target = merge(session, [target, owner])
            merged_at = now()
    return Alias(target.id, field, value, merged_at)


# -- erase -------------------------------------------------------------------------------------


def stitched(session: Session, project_id: str, profile_id: str) -> list[Profile]:
    """The profile, the one it merged into, and every profile merged into that one."""
    profile = store.profile(session, project_id, profile_id)
    if profile is None:
        raise NotFound("profile")
    root = live(session, profile)
    found = {root.id: root}
    frontier = [root.id]
    while frontier:
        children = profiles.merged_into(session, frontier)
        frontier = [c.id for c in children if c.id not in found]
        found.update({c.id: c for c in children})
    return list(found.values())


@dataclass(frozen=True)
class ErasureRequest:
    """An erasure as accepted: its audit row, and when it is promised to be done."""

    erasure: Erasure
    completes_by: datetime


def request_erasure(
    session: Session, project_id: str, profile_id: str, body: dict[str, Any]
) -> ErasureRequest:
    reason = body.get("reason")
    if reason not in ERASE_REASONS:
        raise ValidationFailed(f"reason must be one of {', '.join(ERASE_REASONS)}", field="reason")
    request_ref = body.get("request_id")
    if request_ref is not None and (not isinstance(request_ref, str) or len(request_ref) > 255):
        raise ValidationFailed(
            "request_id must be text of at most 255 characters", field="request_id"
        )
    ids = sorted(p.id for p in stitched(session, project_id, profile_id))
    if any(set(e.profile_ids) & set(ids) for e in erasures.pending(session, project_id)):
        raise DomainError("erasure_in_progress", "An erasure of this profile is already under way")
    erasure = Erasure(
        id=new_id("era"), project_id=project_id, profile_ids=ids, reason=reason,
        request_id=request_ref, profiles_targeted=len(ids),
        events_targeted=store.count_events(session, ids), requested_at=now(),
    )  # fmt: skip
    erasures.add(session, erasure)
    ERASE_PROFILES.enqueue(session, EraseProfiles(erasure_id=erasure.id))
    return ErasureRequest(erasure, erasure.requested_at + ERASURE_WITHIN)


def erase(session: Session, erasure_id: str) -> None:
    """Remove the personal data of every targeted profile and scrub their messages (a
    message still to be sent fails, "profile erased"); keep the audit row."""
    erasure = erasures.get(session, erasure_id)
    if erasure is None or erasure.completed_at is not None:
        return
    people = [p for pid in erasure.profile_ids if (p := profiles.by_id(session, pid)) is not None]
    # The addresses are read before the traits that hold them are erased; the messages are
    # scrubbed after the profiles are marked (see domain/messages/erasure.py for why).
    addresses = message_erasure.addresses(people)
    when = now()
    erasures.erase_people(session, erasure.profile_ids, when)
    message_erasure.scrub(session, erasure.project_id, erasure.profile_ids, addresses, when)
    feedback_erasure.scrub(session, erasure.project_id, erasure.profile_ids, addresses)
    automation_store.scrub_profiles(session, erasure.profile_ids, when)
    erasure.completed_at = datetime.now(UTC)
