"""Segment membership kept current: who is in each saved segment, and every entry and exit.

Four paths write ``segment_members`` (and a ``segment_transitions`` row per change), all
while holding the project's lock (``domain.identity.lock_project``), so a project's
transitions commit in id order and an automation may follow them with an id cursor:

* :class:`SegmentConsumer`, an event consumer (``Feature.event_consumers``): for each chunk
  of events as it is stitched to profiles, only the profiles those events touched are
  evaluated, against only the segments those events can change (a rule that counts one of
  the events' names, reads one of the traits an ``identify`` set, reads the mail activity
  or subscription state one of the events reports, or can hold for a profile with no data
  at all, which a new profile is); a profile that merged others is evaluated against every
  segment, and the merged ones leave. Recorded feedback reaches it this way:
  ``domain.feedback.record`` writes the ``message_events`` row and, in the same
  transaction, a profile event (``email_clicked``, ``email_unsubscribed``, ...) with the
  project's event processing queued; once that commits, the processing job stitches the
  event and this consumer evaluates the message's profile against the segments reading
  that activity (``Reads.feedback``), exactly once, with the mail activity already
  committed. Automations' consumer sees the same events on the same path.
* :func:`addresses_changed`, the job a change of subscription state gets
  (:mod:`.addresses`: an unsubscribe recorded as feedback, a return to the list on the
  preference page, the suppressions API): the project's profiles with those addresses
  evaluated against the segments reading subscription state.
* :func:`compute`, the job a new or edited segment gets: its members computed in full,
  set-based (INSERT ... SELECT of the difference).
* :func:`drain_sent`, the ``segments.sent`` job (:mod:`.sent`): the delivery workers,
  recording messages ``sent``, leave their profiles in ``segment_pending``; the job
  evaluates them against the segments reading ``sent``, a chunk at a time.
* :class:`SegmentRunner`, a periodic pass (``Feature.runners``) on the engine's clock: for
  a segment with event or mail activity windows (``within``) it evaluates only the profiles
  with an event or a feedback event that left a window since its last pass (the only ones
  time alone can move); it recomputes in full the segments reading a date trait
  (``within_last``, ``before_last``: any profile's may cross now); it drains the
  ``segment_pending`` rows whose ``sent`` window ended; it evaluates profiles changed since
  its last pass (an alias merge, a trait written directly) against every other segment, and
  removes members whose profile was merged or erased. Its last pass over each project is
  recorded (``segment_passes``), so a worker that starts carries on from there; a project
  never passed (or whose recorded engine time is ahead of the clock) gets every segment
  recomputed.

A full computation (a new or edited segment, a project's first pass) walks the project's
profiles :data:`REFRESH_CHUNK` at a time, each page of each segment in its own transaction
under the project's lock, so no transaction holds the lock (on SQLite, the database's
write lock) for longer than one page takes, whatever the number of profiles; events
stitched meanwhile are evaluated by the consumer as usual.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.clock import Clock
from getfluxly_server.domain.identity import lock_project
from getfluxly_server.domain.segments import rules
from getfluxly_server.domain.segments.addresses import ADDRESSES_CHANGED
from getfluxly_server.domain.segments.model import (
    All,
    AnyOf,
    CountOp,
    Email,
    EmailActivity,
    Not,
    Op,
    Performed,
    Rule,
    Trait,
)
from getfluxly_server.domain.segments.sent import SENT, sent_windows
from getfluxly_server.queue.kinds import JobHandler, JobKind, JobPayload
from getfluxly_server.queue.periodic import Periodic
from getfluxly_server.storage import profiles as profile_store
from getfluxly_server.storage import segment_pending, segment_sql
from getfluxly_server.storage import segments as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Event, Segment

log = logging.getLogger("getfluxly.segments")

COMPUTE_JOB = "segments.compute"
#: Profiles evaluated per query when many are (a pass after a bulk change).
REFRESH_CHUNK = 1_000
#: ``segment_pending`` rows written per transaction when a computation seeds them.
SEED_CHUNK = 5_000


class ComputeSegment(JobPayload):
    """Compute a segment's members in full (it is new, or its rule changed)."""

    segment_id: str


COMPUTE_SEGMENT = JobKind(COMPUTE_JOB, ComputeSegment)


@dataclass(frozen=True)
class Saved:
    """A live segment with its rule parsed, and what the rule depends on."""

    id: str
    project_id: str
    version: int
    rule: Rule
    reads: rules.Reads
    #: Whether a profile with no traits, events or mail can match (``not``, ``neq``,
    #: ``not_exists``, a count of at most N): such a segment is evaluated for every profile
    #: an event touches, since a new profile may be one.
    admits_empty: bool

    #: The ``(event, within)`` pairs of its event rules with a window.
    windows: frozenset[tuple[str, timedelta]] = frozenset()
    #: The ``(activity, within)`` pairs of its mail activity rules with a window (not
    #: ``sent``): feedback of that type leaves the window as time passes.
    email_windows: frozenset[tuple[str, timedelta]] = frozenset()
    #: The windows of its ``{"email": "sent", "within": ...}`` rules.
    sent_windows: frozenset[timedelta] = frozenset()

    @property
    def recomputed_by_the_pass(self) -> bool:
        """Whether the periodic pass recomputes it in full: it reads a date trait (any
        profile's may cross now). Mail activity and subscription state are not: every writer
        of them tells segments at once (recorded feedback through its profile events and
        :mod:`.addresses`, the preference page and the suppressions API through
        :mod:`.addresses`, the delivery workers through :mod:`.sent`)."""
        return self.reads.timed_traits

    @property
    def windowed(self) -> bool:
        """Whether time alone changes it only through windows: the pass evaluates just the
        profiles with an event, or a feedback event, that crossed a window's edge since its
        last pass."""
        return bool(self.windows or self.email_windows) and not self.recomputed_by_the_pass


class RuleCache:
    """Parsed rules by (segment id, version): a stored rule is parsed once per process."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, int], Saved] = {}
        self._lock = threading.Lock()

    def saved(self, row: Segment) -> Saved:
        key = (row.id, row.version)
        with self._lock:
            found = self._parsed.get(key)
        if found is not None:
            return found
        rule = rules.parse(row.rule)
        found = Saved(
            row.id, row.project_id, row.version, rule, rules.reads(rule), _empty(rule),
            frozenset(_windows(rule)), frozenset(_email_windows(rule)),
            sent_windows(rule) or frozenset(),
        )  # fmt: skip
        with self._lock:
            if len(self._parsed) >= self.LIMIT:
                self._parsed.clear()
            self._parsed[key] = found
        return found

    def live(self, session: Session, project_id: str) -> list[Saved]:
        return [self.saved(row) for row in store.live(session, project_id)]


def _windows(rule: Rule) -> list[tuple[str, timedelta]]:
    match rule:
        case All(children) | AnyOf(children):
            return [w for c in children for w in _windows(c)]
        case Not(inner):
            return _windows(inner)
        case Performed(event=event, within=within) if within is not None:
            return [(event, within)]
    return []


def _email_windows(rule: Rule) -> list[tuple[str, timedelta]]:
    match rule:
        case All(children) | AnyOf(children):
            return [w for c in children for w in _email_windows(c)]
        case Not(inner):
            return _email_windows(inner)
        case Email(activity=activity, within=within) if (
            within is not None and activity is not EmailActivity.SENT
        ):
            return [(activity.value, within)]
    return []


def _empty(rule: Rule) -> bool:
    """Whether ``rule`` holds for a profile with no traits, events, mail or address."""
    match rule:
        case All(children):
            return all(_empty(c) for c in children)
        case AnyOf(children):
            return any(_empty(c) for c in children)
        case Not(inner):
            return not _empty(inner)
        case Trait(condition):
            return condition.op in (Op.NEQ, Op.NOT_EXISTS)
        case Performed(count_op=count_op, count=count):
            return count_op is CountOp.LTE or count == 0
    return False  # email activity, subscription state: none without mail or an address


# -- the writers -------------------------------------------------------------------------------


def refresh(
    session: Session,
    segments: Iterable[Saved],
    profile_ids: Collection[str],
    now: datetime,
) -> tuple[int, int]:
    """Evaluate ``profile_ids`` against ``segments`` and record who entered and left (the
    caller holds the project's lock); returns (entered, left)."""
    entered = left = 0
    ordered = sorted(set(profile_ids))
    chosen = list(segments)
    # A bounded number of ids per statement (the databases' parameter limits).
    for start in range(0, len(ordered), REFRESH_CHUNK):
        some = ordered[start : start + REFRESH_CHUNK]
        for segment in chosen:
            query = rules.member_ids(session, segment.project_id, segment.rule, now, among=some)
            wanted = set(session.scalars(query))
            current = store.members_among(session, segment.id, some)
            store.enter(session, segment.project_id, segment.id, wanted - current, now)
            store.leave(session, segment.project_id, segment.id, current - wanted, now)
            entered += len(wanted - current)
            left += len(current - wanted)
    return entered, left


def recompute(session: Session, segment: Saved, now: datetime) -> tuple[int, int]:
    """A segment's members computed in full, set-based (the caller holds the lock)."""
    query = rules.member_ids(session, segment.project_id, segment.rule, now)
    return store.sync(session, segment.project_id, segment.id, query, now)


def profiles_changed(
    session: Session,
    project_id: str,
    profile_ids: Collection[str],
    now: datetime,
    cache: RuleCache | None = None,
) -> tuple[int, int]:
    """Re-evaluate profiles whose traits were written other than by an event (an automation
    step, an import) against every live segment of the project, under the project's lock
    (taken here; it is held to the end of the caller's transaction)."""
    lock_project(session, project_id)
    segments = (cache or RuleCache()).live(session, project_id)
    return refresh(session, segments, profile_ids, now)


def compute(db: Database, clock: Clock, segment_id: str, cache: RuleCache) -> dict[str, int]:
    """The ``segments.compute`` job: a live segment's members in full, a page of profiles
    per transaction (:func:`recompute_in_pages`), each at the clock's now. A page that
    finds the segment deleted stops; one that finds it edited evaluates the new rule (the
    edit's own job then computes it in full again)."""
    with db.read() as session:
        row = store.get(session, segment_id)
        if row is None or not _live(row):
            return {"entered": 0, "left": 0}
        project_id = row.project_id
    entered, left = recompute_in_pages(db, clock, project_id, {segment_id}, cache)
    seed_sent_windows(db, clock, project_id, {segment_id}, cache)
    return {"entered": entered, "left": left}


def seed_sent_windows(
    db: Database, clock: Clock, project_id: str, segment_ids: Collection[str], cache: RuleCache
) -> int:
    """For those of the segments with ``sent`` windows, a ``segment_pending`` row due when
    each message sent within the longest of them leaves each window: the messages sent
    before the segment (or its window) existed, which the delivery workers' hook could not
    know about. Run after a full computation (the messages read outside any write
    transaction, the rows written :data:`SEED_CHUNK` per transaction); how many rows."""
    with db.read() as session:
        windows = sorted(
            {w for s in cache.live(session, project_id) if s.id in segment_ids
             for w in s.sent_windows}
        )  # fmt: skip
        if not windows:
            return 0
        now = clock.now()
        mail = segment_pending.sent_since(session, project_id, now - max(windows))
    rows = [(project_id, who, at + w) for who, at in mail for w in windows if at + w >= now]
    for start in range(0, len(rows), SEED_CHUNK):
        with db.transaction() as session:
            segment_pending.add(session, rows[start : start + SEED_CHUNK])
    return len(rows)


def recompute_in_pages(
    db: Database,
    clock: Clock,
    project_id: str,
    segment_ids: Collection[str] | None,
    cache: RuleCache,
    page: int = REFRESH_CHUNK,
) -> tuple[int, int]:
    """Every profile of the project evaluated against its live segments (those of
    ``segment_ids`` when given), one segment and ``page`` profiles per transaction under the
    project's lock: the full computation of a segment without one long transaction (the
    module docstring). Returns (entered, left); a segment no longer live is skipped."""
    entered = left = 0
    with db.read() as session:
        wanted = [
            s for s in cache.live(session, project_id)
            if segment_ids is None or s.id in segment_ids
        ]  # fmt: skip
        if any(s.reads.email_sent for s in wanted):
            # Mail recorded sent by a transaction that looked for such segments before this
            # one was saved wrote no segment_pending row: wait for those to commit, so that
            # the pages below see their messages (domain/segments/sent.py).
            segment_pending.SENT.settle(session)
    for segment_id in (s.id for s in wanted):
        after: tuple[datetime, str] | None = None
        while True:
            with db.transaction() as session:
                lock_project(session, project_id)
                segments = [s for s in cache.live(session, project_id) if s.id == segment_id]
                if not segments:
                    break
                found = store.profile_page(session, project_id, after, page)
                if not found:
                    break
                more, fewer = refresh(session, segments, [pid for _, pid in found], clock.now())
            entered, left, after = entered + more, left + fewer, found[-1]
            if len(found) < page:
                break
    return entered, left


def refresh_in_pages(
    db: Database,
    clock: Clock,
    project_id: str,
    segment_ids: Collection[str],
    profile_ids: Collection[str],
    cache: RuleCache,
) -> tuple[int, int]:
    """:func:`refresh` of ``profile_ids`` against the project's live segments of
    ``segment_ids``, :data:`REFRESH_CHUNK` profiles per transaction under the lock."""
    entered = left = 0
    ordered = sorted(set(profile_ids))
    for start in range(0, len(ordered), REFRESH_CHUNK):
        with db.transaction() as session:
            lock_project(session, project_id)
            segments = [s for s in cache.live(session, project_id) if s.id in segment_ids]
            if not segments:
                break
            some = ordered[start : start + REFRESH_CHUNK]
            more, fewer = refresh(session, segments, some, clock.now())
        entered, left = entered + more, left + fewer
    return entered, left


def drain_sent(db: Database, clock: Clock, project_id: str, cache: RuleCache) -> dict[str, int]:
    """The ``segments.sent`` job (:mod:`.sent`), also run by the periodic pass: the
    project's ``segment_pending`` rows due at the clock's now, oldest first, their profiles
    evaluated against the segments reading ``sent``, :data:`REFRESH_CHUNK` rows per
    transaction under the project's lock, each row deleted with its evaluation. A project
    whose segments no longer read ``sent`` (deleted or changed) has all its rows deleted:
    a segment that reads it again is computed in full and seeds its own."""
    totals = {"profiles": 0, "entered": 0, "left": 0}
    while True:
        with db.transaction() as session:
            lock_project(session, project_id)
            now = clock.now()
            segments = [s for s in cache.live(session, project_id) if s.reads.email_sent]
            if not segments:
                segment_pending.clear(session, project_id)
                break
            rows = segment_pending.due(session, project_id, now, REFRESH_CHUNK)
            if not rows:
                break
            profile_ids = {p for _, p in rows}
            more, fewer = refresh(session, segments, profile_ids, now)
            segment_pending.remove(session, [i for i, _ in rows])
        totals["profiles"] += len(profile_ids)
        totals["entered"] += more
        totals["left"] += fewer
        if len(rows) < REFRESH_CHUNK:
            break
    return totals


def _live(row: Segment) -> bool:
    return row.deleted_at is None


def addresses_changed(
    db: Database, clock: Clock, project_id: str, emails: Collection[str], cache: RuleCache
) -> dict[str, int]:
    """The ``segments.addresses`` job (:mod:`.addresses`): the project's profiles with one
    of ``emails`` evaluated against its segments that read subscription state.

    The profiles are found before the project's lock is taken (no index serves a trait:
    the project's profiles are read), so the lock is held only for the evaluation; a
    profile given one of the addresses meanwhile was evaluated by the event consumer (an
    ``identify`` setting ``email`` reaches every ``subscribed`` segment)."""
    nothing = {"profiles": 0, "entered": 0, "left": 0}
    with db.read() as session:
        if not emails or not any(s.reads.subscriptions for s in cache.live(session, project_id)):
            return nothing
        scope = segment_sql.Scope.of(session, project_id, None)
        profile_ids = list(session.scalars(scope.members(scope.addressed(emails))))
    if not profile_ids:
        return nothing
    with db.transaction() as session:
        lock_project(session, project_id)
        segments = [s for s in cache.live(session, project_id) if s.reads.subscriptions]
        entered, left = refresh(session, segments, profile_ids, clock.now())
        return {"profiles": len(profile_ids), "entered": entered, "left": left}


def handlers(db: Database, clock: Clock, cache: RuleCache) -> list[JobHandler[Any]]:
    return [
        COMPUTE_SEGMENT.handler(lambda p: compute(db, clock, p.segment_id, cache)),
        ADDRESSES_CHANGED.handler(
            lambda p: addresses_changed(db, clock, p.project_id, p.emails, cache)
        ),
        SENT.handler(lambda p: drain_sent(db, clock, p.project_id, cache)),
    ]


# -- as events arrive --------------------------------------------------------------------------


class SegmentConsumer:
    """The event consumer (``domain.identity.EventConsumer``) that keeps segments current as
    events are stitched (see the module docstring)."""

    def __init__(self, clock: Clock, cache: RuleCache | None = None) -> None:
        self.clock = clock
        self.cache = cache or RuleCache()

    def __call__(self, session: Session, project_id: str, events: Sequence[Event]) -> None:
        touched = {e.profile_id for e in events if e.profile_id is not None}
        if not touched:
            return
        segments = self.cache.live(session, project_id)
        if not segments:
            return
        now = self.clock.now()
        names = {e.name for e in events if e.name}
        traits = {key for e in events if e.type == "identify" for key in (e.traits or {})}
        # Profiles that merged others have their events and traits: every segment may change.
        # Only an event naming two ids can merge (profiles.merged_into has no index: the
        # lookup is skipped for chunks that cannot have merged anything).
        survivors: set[str] = set()
        if any(sum(1 for i in (e.anonymous_id, e.external_id, e.user_id) if i) > 1 for e in events):
            found = profile_store.merged_into(session, touched)
            survivors = {p.merged_into for p in found if p.merged_into is not None}
        for segment in segments:
            relevant = (
                segment.admits_empty
                or bool(segment.reads.events & names)
                or bool(segment.reads.traits & traits)
                or bool(segment.reads.feedback & names)
            )
            refresh(session, [segment], touched if relevant else survivors & touched, now)
        if survivors:
            store.leave_gone(session, project_id, now, among=survivors)


# -- as time passes ----------------------------------------------------------------------------


class SegmentRunner(Periodic):
    """The periodic pass (see the module docstring), every ``interval`` on a thread of its
    own; :meth:`run_once` does one pass in the caller's thread (tests, tools)."""

    name = "segments"
    #: Profiles changed this long before the previous pass are looked at again: a change
    #: committed late (a transaction that began before the pass) is not missed.
    OVERLAP = timedelta(minutes=1)

    def __init__(
        self, db: Database, clock: Clock, interval: float = 30.0, cache: RuleCache | None = None
    ) -> None:
        super().__init__(interval)
        self.db = db
        self.clock = clock
        self.cache = cache or RuleCache()

    def run_once(self) -> dict[str, int]:
        """One pass over every project with segments (or with ``segment_pending`` rows
        left by segments since deleted); totals of what changed."""
        with self.db.read() as session:
            projects = sorted(
                {*store.projects_with_segments(session), *segment_pending.projects(session)}
            )
        totals = {"entered": 0, "left": 0}
        for project_id in projects:
            entered, left = self.pass_project(project_id)
            totals["entered"] += entered
            totals["left"] += left
        return totals

    def pass_project(self, project_id: str) -> tuple[int, int]:
        """One project's pass, from its last recorded one (none: every segment recomputed),
        in transactions of at most a page of profiles each."""
        # Profiles' updated_at is the system's time, whatever the engine's clock says.
        started = datetime.now(UTC)
        now = self.clock.now()
        with self.db.read() as session:
            last = segment_pending.last_pass(session, project_id)
            since = None if last is None else last.started_at - self.OVERLAP
            last_now = None if last is None else last.engine_at
            segments = self.cache.live(session, project_id)
        full = last_now is None or since is None or last_now > now
        with self.db.transaction() as session:
            lock_project(session, project_id)
            left = store.leave_gone(session, project_id, now)
        entered = 0
        again = {s.id for s in segments if full or s.recomputed_by_the_pass}
        if again:
            more, fewer = recompute_in_pages(self.db, self.clock, project_id, again, self.cache)
            entered, left = entered + more, left + fewer
        if full:
            seed_sent_windows(self.db, self.clock, project_id, again, self.cache)
        rest = [s for s in segments if s.id not in again]
        if rest and last_now is not None and since is not None:
            for segment in (s for s in rest if s.windowed):
                with self.db.read() as session:
                    crossed = store.crossed_windows(
                        session, project_id, segment.windows, last_now, now
                    )
                    crossed += store.crossed_email_windows(
                        session, project_id, segment.email_windows, last_now, now
                    )
                more, fewer = refresh_in_pages(
                    self.db, self.clock, project_id, {segment.id}, crossed, self.cache
                )
                entered, left = entered + more, left + fewer
            with self.db.read() as session:
                changed = store.profiles_changed_since(session, project_id, since)
            more, fewer = refresh_in_pages(
                self.db, self.clock, project_id, {s.id for s in rest}, changed, self.cache
            )
            entered, left = entered + more, left + fewer
        sent = drain_sent(self.db, self.clock, project_id, self.cache)
        entered, left = entered + sent["entered"], left + sent["left"]
        with self.db.transaction() as session:
            segment_pending.record_pass(session, project_id, now, started)
        return entered, left
