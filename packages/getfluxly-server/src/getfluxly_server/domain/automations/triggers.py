"""What starts, resumes and ends runs: events as they are stitched, segment transitions, and
date traits coming due.

* :func:`consume_events` is the feature's event consumer (``Feature.event_consumers``): called
  with each chunk of a project's events in the transaction that stitched them (the project's
  lock held), it reconciles runs of profiles merged by this chunk, ends runs whose automation
  exits on one of the events (``exit_on``, even in the middle of a delay), resumes runs
  waiting for one, and enters profiles into automations the events trigger, in event order.
* :func:`read_segment_transitions` takes a project's ``segment_transitions`` after its cursor
  (contract: they are written under the project's lock, so their ids commit in order within
  a project) and enters the profiles into ``segment_entered``/``segment_left`` automations.
* :func:`check_dates` enters profiles whose date trait plus the trigger's offset has come
  (since the automation was activated), once per value of the trait.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.domain import identity
from getfluxly_server.domain.automations import engine
from getfluxly_server.domain.automations.conditions import event_matches
from getfluxly_server.domain.automations.definition import (
    DateTrigger,
    Definition,
    EventTrigger,
    SegmentTrigger,
)
from getfluxly_server.domain.clock import Clock
from getfluxly_server.storage import automations as store
from getfluxly_server.storage.models import Automation, AutomationRun, Event, Profile

SEGMENT_BATCH = 1000
log = logging.getLogger("getfluxly.automations")


def _active(session: Session, project_id: str) -> list[tuple[Automation, Definition]]:
    found = []
    for automation in store.active(session, project_id):
        definition = engine.definition_of(session, automation.id, automation.version)
        if definition is not None:
            found.append((automation, definition))
    return found


class EventConsumer:
    """The automations' consumer of stitched events, on the engine's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, session: Session, project_id: str, events: Sequence[Event]) -> None:
        consume_events(session, project_id, events, self.clock.now())


def consume_events(
    session: Session, project_id: str, events: Sequence[Event], now: datetime
) -> None:
    track = [e for e in events if e.type == "track" and e.name and e.profile_id]
    profile_ids = list(dict.fromkeys(e.profile_id for e in events if e.profile_id))
    if not profile_ids:
        return
    # (Runs of profiles merged while stitching were handed over by identity.merge.)
    if not track:
        return
    automations = _active(session, project_id)
    names = {e.name for e in track}
    starts = [
        (a, d) for a, d in automations
        if isinstance(d.trigger, EventTrigger) and d.trigger.event in names
    ]  # fmt: skip
    profiles = list(dict.fromkeys(e.profile_id for e in track if e.profile_id))
    running = list(store.running_of(session, profiles))
    # Runs under way are checked against the version each is on (exit_on, waits).
    if not starts and not running:
        return
    by_id = {a.id: (a, d) for a, d in automations}
    # Entries are gathered and made together (one query and one insert per automation, one
    # savepoint for advancing them), not one event at a time. What an entry depends on is its
    # own profile's runs, so the gathered entries are made before the next event of one of
    # their profiles is looked at: every event still sees the runs the earlier ones made.
    entries = _Entries(session, starts, now)
    for event in track:
        if event.profile_id in entries.profiles:
            running.extend(entries.make())
        properties = event.properties or {}
        mine = [
            r for r in running if r.profile_id == event.profile_id and r.status == store.RUNNING
        ]
        for run in mine:
            found = by_id.get(run.automation_id)
            current = engine.definition_of(session, run.automation_id, run.version)
            if current is None:
                continue
            # exit_on of the version the run is on (an edit applies to new runs only).
            if current.exit_on is not None and event_matches(
                current.exit_on, event.name, properties
            ):
                engine.exit_runs(session, [run], "exit_on", now)
                continue
            if run.waiting and run.wait_event == event.name and run.step_id and found is not None:
                step = current.by_id.get(run.step_id)
                if (
                    step is not None
                    and step.type == "wait_for_event"
                    and event_matches(
                        EventTrigger(step.event or "", step.where), event.name, properties
                    )
                ):
                    engine.event_arrived(session, run, step, current, now)
                    engine.wake_runners(session)
        for automation, definition in starts:
            trigger = definition.trigger
            assert isinstance(trigger, EventTrigger)
            if event_matches(trigger, event.name, properties):
                assert event.profile_id is not None
                context = {"event": {"name": event.name, "properties": properties}}
                entries.add(automation.id, event.profile_id, context)
    entries.make()
    session.flush()


class _Entries:
    """Profiles to enter into the event-triggered automations, gathered (a profile at most
    once per automation) and then made at once by :meth:`make`."""

    def __init__(
        self, session: Session, starts: Sequence[tuple[Automation, Definition]], now: datetime
    ) -> None:
        self.session = session
        self.starts = starts
        self.now = now
        self.profiles: set[str] = set()
        self._contexts: dict[str, dict[str, dict[str, Any]]] = {a.id: {} for a, _ in starts}

    def add(self, automation_id: str, profile_id: str, context: dict[str, Any]) -> None:
        self._contexts[automation_id].setdefault(profile_id, context)
        self.profiles.add(profile_id)

    def make(self) -> list[AutomationRun]:
        """Enter the gathered profiles (in the order of the automations, then of the events),
        each run taken as far as it goes at once (:func:`advance_all`); the runs made."""
        made: list[tuple[AutomationRun, Automation]] = []
        for automation, definition in self.starts:
            contexts = self._contexts[automation.id]
            if contexts:
                runs = engine.enter(
                    self.session, automation, definition, list(contexts), self.now,
                    contexts=contexts,
                )  # fmt: skip
                made += [(run, automation) for run in runs]
                contexts.clear()
        self.profiles.clear()
        advance_all(self.session, made, self.now)
        return [run for run, _ in made]


def advance_all(
    session: Session, runs: Sequence[tuple[AutomationRun, Automation]], now: datetime
) -> None:
    """:func:`advance_now` for several runs, in one savepoint; if any step raises, that is
    rolled back and each run is advanced in a savepoint of its own instead (so the failing
    one alone is left for the runner)."""
    if not runs:
        return
    try:
        with session.begin_nested():
            logs: list[dict[str, Any]] = []
            sends = engine.Sends()  # (new runs: no message can hold their keys yet)
            for run, automation in runs:
                engine.advance(session, run, automation, now, logs=logs, sends=sends)
            sends.record(session)
            engine.log_steps(session, logs)
    except Exception:
        log.warning("a batch of new runs failed; advancing them one at a time", exc_info=True)
        for run, automation in runs:
            session.expire(run)
            advance_now(session, run, automation, now)


def advance_now(
    session: Session, run: AutomationRun, automation: Automation, now: datetime
) -> None:
    """Take a run just started by an event as far as it goes at once, in the transaction that
    started it: an automation that begins with a send records its message without waiting
    for a runner. In a savepoint: a step that raises leaves the run due for the runner (which
    retries it with backoff) and never holds up the events."""
    try:
        with session.begin_nested():
            engine.advance(session, run, automation, now)
    except Exception:
        log.warning("run %s could not start at once; the runner takes it", run.id, exc_info=True)
        session.expire(run)


def read_segment_transitions(session: Session, project_id: str, now: datetime) -> int:
    """Enter profiles into the project's segment-triggered automations for the transitions
    after the project's cursor; returns how many transitions were read."""
    cursor = store.cursor(session, project_id, "segments")
    automations = [
        (a, d) for a, d in _active(session, project_id) if isinstance(d.trigger, SegmentTrigger)
    ]
    if not automations:
        # Nothing listens: move the cursor to the end, so an automation activated later
        # starts from the transitions after its activation.
        cursor.position = store.last_transition(session, project_id)
        return 0
    rows = store.transitions_after(session, project_id, cursor.position, SEGMENT_BATCH)
    for transition in rows:
        for automation, definition in automations:
            trigger = definition.trigger
            assert isinstance(trigger, SegmentTrigger)
            if trigger.segment_id != transition.segment_id or trigger.kind != transition.kind:
                continue
            profile = session.get(Profile, transition.profile_id)
            if profile is None or profile.erased_at is not None:
                continue
            survivor = identity.live(session, profile).id
            context = {"segment": {"id": transition.segment_id, "kind": transition.kind}}
            engine.enter(session, automation, definition, [survivor], now, context=context)
    if rows:
        cursor.position = rows[-1].id
    return len(rows)


def _date(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def check_dates(session: Session, project_id: str, now: datetime) -> int:
    """Enter profiles whose date trigger came due; how many runs started.

    Reads the project's live profiles (traits are JSON, not indexed: a pass is a scan, run
    every few minutes, not per event). A date fires once per value of the trait (a changed
    ``trial_ends_at`` fires again, as the re-entry policy allows), and only if it falls after
    the automation was activated.
    """
    automations = [
        (a, d) for a, d in _active(session, project_id) if isinstance(d.trigger, DateTrigger)
    ]
    if not automations:
        return 0
    started = 0
    query = select(Profile.id, Profile.traits).where(
        Profile.project_id == project_id, Profile.merged_into.is_(None), Profile.erased_at.is_(None)
    )
    profiles = session.execute(query).all()
    for automation, definition in automations:
        trigger = definition.trigger
        assert isinstance(trigger, DateTrigger)
        since = automation.activated_at or automation.created_at
        for profile_id, traits in profiles:
            raw = (traits or {}).get(trigger.trait)
            moment = _date(raw)
            if moment is None:
                continue
            due = moment + trigger.offset
            if not since <= due <= now:
                continue
            context = {"date_trait": {"trait": trigger.trait, "value": raw}}
            started += len(
                engine.enter(
                    session, automation, definition, [profile_id], now,
                    context=context, trigger_key=f"{trigger.trait}={raw}"[:255],
                )
            )  # fmt: skip
    return started
