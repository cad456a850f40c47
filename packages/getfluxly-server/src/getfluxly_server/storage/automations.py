"""The automations' SQL: definitions and versions, runs and their wake-ups, the step log,
and the per-project cursors of the streams automations read.

Due runs are claimed like the outbox claims messages: ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (runners on any number of machines take different runs without waiting for each
other), SQLite's single writer taken at BEGIN (see db.py) elsewhere. A claimed run is held
by the claiming transaction itself; it is advanced and committed in that transaction, so a
runner that dies leaves the run exactly where the last commit put it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import (
    Automation,
    AutomationCursor,
    AutomationRun,
    AutomationStepLog,
    AutomationVersion,
    SegmentTransition,
)
from getfluxly_server.storage.paging import newest_first

RUNNING = "running"


def get(session: Session, automation_id: str, *, lock: bool = False) -> Automation | None:
    """The automation (deleted or not). ``lock``: hold its row to the end of the transaction."""
    return session.get(Automation, automation_id, with_for_update=lock or None)


def live_page(
    session: Session, project_id: str, *, limit: int, before: tuple[datetime, str] | None = None
) -> Sequence[Automation]:
    """Up to ``limit`` live automations of the project, newest first."""
    query = select(Automation).where(
        Automation.project_id == project_id, Automation.deleted_at.is_(None)
    )
    query = newest_first(query, Automation.created_at, Automation.id, limit=limit, before=before)
    return session.scalars(query).all()


def active(session: Session, project_id: str) -> Sequence[Automation]:
    """The project's active automations."""
    query = select(Automation).where(
        Automation.project_id == project_id,
        Automation.status == "active",
        Automation.deleted_at.is_(None),
    )
    return session.scalars(query.order_by(Automation.created_at, Automation.id)).all()


def projects_with_active(session: Session) -> list[str]:
    query = (
        select(Automation.project_id)
        .where(Automation.status == "active", Automation.deleted_at.is_(None))
        .distinct()
    )
    return list(session.scalars(query))


def save_version(session: Session, automation_id: str, version: int, definition: Any) -> None:
    """Keep ``version`` (once: a version is never rewritten)."""
    if session.get(AutomationVersion, (automation_id, version)) is None:
        session.add(
            AutomationVersion(automation_id=automation_id, version=version, definition=definition)
        )
        session.flush()


def version(session: Session, automation_id: str, number: int) -> dict[str, Any] | None:
    row = session.get(AutomationVersion, (automation_id, number))
    return None if row is None else row.definition


# -- runs --------------------------------------------------------------------------------------


def due(session: Session, moment: datetime, n: int) -> Sequence[AutomationRun]:
    """Up to ``n`` running runs of active automations whose wake-up has come, soonest
    first, locked (PostgreSQL: runs another runner holds are skipped)."""
    query = (
        select(AutomationRun)
        .join(Automation, Automation.id == AutomationRun.automation_id)
        .where(AutomationRun.status == RUNNING, AutomationRun.wake_at <= moment)
        # A paused automation's runs stay where they are until it is activated again.
        .where(Automation.status == "active", Automation.deleted_at.is_(None))
        .order_by(AutomationRun.wake_at)
        .limit(n)
        .with_for_update(of=AutomationRun, skip_locked=True)
    )
    return session.scalars(query).all()


def next_wake(session: Session) -> datetime | None:
    """The soonest wake-up of any running run."""
    return session.scalar(
        select(func.min(AutomationRun.wake_at)).where(AutomationRun.status == RUNNING)
    )


def lock_run(session: Session, run_id: str) -> AutomationRun | None:
    """The run, its row held (waiting for a runner that holds it)."""
    return session.get(AutomationRun, run_id, with_for_update=True, populate_existing=True)


def running_of(
    session: Session, profile_ids: Collection[str], automation_ids: Collection[str] | None = None
) -> Sequence[AutomationRun]:
    """The running runs of these profiles (of these automations, if given), locked."""
    if not profile_ids:
        return []
    query = select(AutomationRun).where(
        AutomationRun.status == RUNNING, AutomationRun.profile_id.in_(list(profile_ids))
    )
    if automation_ids is not None:
        query = query.where(AutomationRun.automation_id.in_(list(automation_ids)))
    return session.scalars(query.order_by(AutomationRun.entered_at).with_for_update()).all()


def last_entries(
    session: Session, automation_id: str, profile_ids: Collection[str]
) -> dict[str, tuple[datetime, str]]:
    """Per profile, when it last entered the automation and that run's status."""
    if not profile_ids:
        return {}
    query = (
        select(AutomationRun.profile_id, AutomationRun.entered_at, AutomationRun.status)
        .where(
            AutomationRun.automation_id == automation_id,
            AutomationRun.profile_id.in_(list(profile_ids)),
        )
        .order_by(AutomationRun.entered_at)
    )
    return {row.profile_id: (row.entered_at, row.status) for row in session.execute(query)}


def has_trigger_key(session: Session, automation_id: str, profile_id: str, key: str) -> bool:
    query = select(AutomationRun.id).where(
        AutomationRun.automation_id == automation_id,
        AutomationRun.profile_id == profile_id,
        AutomationRun.trigger_key == key,
    )
    return session.scalar(query.limit(1)) is not None


def move_runs(session: Session, from_ids: Collection[str], to_id: str) -> None:
    """Give every run of ``from_ids`` to ``to_id`` (a merge: the survivor's history)."""
    session.execute(
        update(AutomationRun)
        .where(AutomationRun.profile_id.in_(list(from_ids)))
        .values(profile_id=to_id)
        .execution_options(synchronize_session=False)
    )


# -- step log ----------------------------------------------------------------------------------


def log(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    batch = list(rows)
    if batch:
        session.execute(insert(AutomationStepLog), batch)


def stats(session: Session, automation_id: str) -> dict[str, dict[str, int]]:
    """Per step id, how many runs had each outcome there."""
    query = (
        select(AutomationStepLog.step_id, AutomationStepLog.outcome, func.count())
        .where(AutomationStepLog.automation_id == automation_id)
        .group_by(AutomationStepLog.step_id, AutomationStepLog.outcome)
    )
    found: dict[str, dict[str, int]] = {}
    for step_id, outcome, count in session.execute(query):
        found.setdefault(step_id, {})[outcome] = int(count)
    return found


def sends_since(session: Session, project_id: str, profile_id: str, since: datetime) -> int:
    """How many automation messages the profile was sent (by any automation) since ``since``."""
    query = select(func.count()).where(
        AutomationStepLog.project_id == project_id,
        AutomationStepLog.profile_id == profile_id,
        AutomationStepLog.outcome == "sent",
        AutomationStepLog.at > since,
    )
    return int(session.scalar(query) or 0)


def move_log(session: Session, from_ids: Collection[str], to_id: str) -> None:
    session.execute(
        update(AutomationStepLog)
        .where(AutomationStepLog.profile_id.in_(list(from_ids)))
        .values(profile_id=to_id)
        .execution_options(synchronize_session=False)
    )


# -- cursors -----------------------------------------------------------------------------------


def cursor(session: Session, project_id: str, stream: str) -> AutomationCursor:
    """The project's cursor on ``stream``, locked (made at 0 if new)."""
    row = session.get(AutomationCursor, (project_id, stream), with_for_update=True)
    if row is None:
        row = AutomationCursor(project_id=project_id, stream=stream, position=0)
        session.add(row)
        session.flush()
    return row


def transitions_after(
    session: Session, project_id: str, after: int, limit: int
) -> Sequence[SegmentTransition]:
    query = (
        select(SegmentTransition)
        .where(SegmentTransition.project_id == project_id, SegmentTransition.id > after)
        .order_by(SegmentTransition.id)
        .limit(limit)
    )
    return session.scalars(query).all()


def last_transition(session: Session, project_id: str) -> int:
    query = select(func.max(SegmentTransition.id)).where(SegmentTransition.project_id == project_id)
    return int(session.scalar(query) or 0)


def scrub_profiles(session: Session, profile_ids: Collection[str], when: datetime) -> None:
    """An erasure: the profiles' runs under way end (``erased``), and every run of theirs
    forgets what started it (the triggering event's properties) and its last error."""
    if not profile_ids:
        return
    ids = list(profile_ids)
    session.execute(
        update(AutomationRun)
        .where(AutomationRun.profile_id.in_(ids), AutomationRun.status == RUNNING)
        .values(
            status="exited",
            exit_reason="erased",
            step_id=None,
            waiting=False,
            wait_event=None,
            wake_at=None,
            finished_at=when,
            updated_at=when,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(AutomationRun)
        .where(AutomationRun.profile_id.in_(ids))
        .values(context={}, last_error=None)
        .execution_options(synchronize_session=False)
    )


def merge_profiles(
    session: Session, loser_ids: Collection[str], survivor_id: str, when: datetime
) -> None:
    """Profiles merged (``domain.identity.merge``): the losers' runs become the survivor's.
    Where two of them had a run of one automation under way, the one that entered first goes
    on and the others end (``merged``), so the person continues once, not twice."""
    losers = [p for p in loser_ids if p != survivor_id]
    if not losers:
        return
    running = session.scalars(
        select(AutomationRun)
        .where(
            AutomationRun.status == RUNNING,
            AutomationRun.profile_id.in_([*losers, survivor_id]),
        )
        .order_by(AutomationRun.entered_at, AutomationRun.id)
        .with_for_update()
    ).all()
    kept: set[str] = set()
    ended = []
    for run in running:
        if run.automation_id not in kept:
            kept.add(run.automation_id)
            continue
        ended.append({
            "project_id": run.project_id, "automation_id": run.automation_id, "run_id": run.id,
            "profile_id": survivor_id, "step_id": run.step_id or "-", "outcome": "exited",
            "at": when, "message_id": None,
        })  # fmt: skip
        run.status, run.exit_reason, run.step_id = "exited", "merged", None
        run.waiting, run.wait_event, run.wake_at = False, None, None
        run.finished_at = run.updated_at = when
    session.flush()
    log(session, ended)
    move_runs(session, losers, survivor_id)
    move_log(session, losers, survivor_id)
    for run in running:
        run.profile_id = survivor_id  # (what the UPDATE did, on the loaded objects)
