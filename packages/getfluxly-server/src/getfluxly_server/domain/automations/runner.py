"""The automation runner: a worker's background loop (``Feature.runners``) that advances
runs whose wake-up has come, and reads the streams that start runs.

Each cycle, in short transactions:

1. claims up to ``batch`` due runs (``storage.automations.due``: ``FOR UPDATE SKIP LOCKED``
   on PostgreSQL, SQLite's single writer elsewhere) and advances each in a savepoint of the
   claiming transaction (a run whose step raises is rolled back alone and retried later with
   backoff), then commits: positions, messages, jobs and step log together;
2. reads each project's new segment transitions (segment-triggered automations);
3. every ``date_every`` seconds, checks date triggers.

Wake-ups: new runs and resumed waits notify the job queue's channel (kind ``automations``) at
commit, which a runner hears from any process (PostgreSQL ``LISTEN/NOTIFY``; SQLite, the
wake-up channel beside the database file); otherwise it polls every ``poll_seconds``. A
timer that came due while no runner ran is simply due: the first cycle after start takes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.automations import engine, triggers
from getfluxly_server.domain.clock import SYSTEM, Clock
from getfluxly_server.storage import automations as store
from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Automation, AutomationRun

log = logging.getLogger("getfluxly.automations")


class AutomationRunner:
    """Advances due runs until :meth:`stop` (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = SYSTEM,
        batch: int = 200,
        poll_seconds: float = 1.0,
        date_every: float = 60.0,
        listen: bool = True,
    ) -> None:
        self.db = db
        self.clock = clock
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.date_every = date_every
        self.listen = listen and not db.is_sqlite
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unhook: Callable[[], None] = lambda: None
        self._dates_checked = float("-inf")

    def start(self) -> None:
        self._stop.clear()
        # (SQLite only.) Woken for due runs (engine.wake_runners), not for every enqueue.
        self._unhook = jobs.on_local_enqueue(self.db, self._wake.set, [engine.WAKE_KIND])
        if self.listen:
            self._spawn(self._listen, "automations-listen")
        self._spawn(self._loop, "automations")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._unhook()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def run_once(self) -> int:
        """One cycle in this thread (tests, tools): how many runs it advanced. Date triggers
        are checked on every call."""
        self._dates_checked = float("-inf")
        return self._cycle()

    def run_until_idle(self, limit: int = 1000) -> int:
        """Cycles until one advances nothing (tests): how many runs were advanced in all."""
        total = 0
        for _ in range(limit):
            done = self.run_once()
            total += done
            if not done:
                return total
        raise RuntimeError(f"the runner still had due runs after {limit} cycles")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                advanced = self._cycle()
            except Exception:  # a broken database must not end the thread: log, back off
                log.exception("the automation runner could not advance runs")
                advanced = 0
            if advanced >= self.batch:
                continue
            self._wake.wait(self.poll_seconds)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with jobs.listening(self.db) as notified:
                    self._wake.set()
                    while not self._stop.is_set():
                        if notified(1.0):
                            self._wake.set()
            except Exception:
                log.warning("automation wake-ups lost; polling until they are back", exc_info=True)
                self._stop.wait(self.poll_seconds)

    def _cycle(self) -> int:
        advanced = self.advance_due()
        return advanced + self.read_streams()

    def advance_due(self) -> int:
        """Claim and advance one batch of due runs; how many.

        The batch is advanced in one transaction with no savepoint per run (each costs two
        round trips); if any run's step raises, the whole batch is rolled back and done again
        with each run in a savepoint of its own, so the failing run alone is put off (with
        backoff) and the others go on.
        """
        now = self.clock.now()
        try:
            with self.db.transaction() as session:
                return len(self._advance(session, store.due(session, now, self.batch), now))
        except Exception:
            log.warning("a batch of runs failed; advancing them one at a time", exc_info=True)
        with self.db.transaction() as session:
            return len(
                self._advance(session, store.due(session, now, self.batch), now, isolated=True)
            )

    def _advance(
        self,
        session: Session,
        runs: Sequence[AutomationRun],
        now: datetime,
        *,
        isolated: bool = False,
    ) -> Sequence[AutomationRun]:
        automations: dict[str, Automation] = {}
        logs: list[dict[str, Any]] = []  # (not isolated: inserted together at the end)
        for run in runs:
            automation = automations.get(run.automation_id) or store.get(session, run.automation_id)
            assert automation is not None  # (the claim joined it)
            automations[automation.id] = automation
            if not isolated:
                engine.advance(session, run, automation, now, logs=logs)
                continue
            try:
                with session.begin_nested():
                    engine.advance(session, run, automation, now)
            except Exception as exc:
                log.exception("automation %s: run %s failed", run.automation_id, run.id)
                session.expire(run)
                engine.retry_later(run, f"{type(exc).__name__}: {exc}", now)
        engine.log_steps(session, logs)
        return runs

    def read_streams(self) -> int:
        """Segment transitions (every cycle) and date triggers (every ``date_every`` s); how
        many transitions were read and runs started."""
        now = self.clock.now()
        with self.db.read() as session:
            projects = store.projects_with_active(session)
        check_dates = time.monotonic() - self._dates_checked >= self.date_every
        moved = 0
        for project_id in projects:
            try:
                with self.db.transaction() as session:
                    moved += triggers.read_segment_transitions(session, project_id, now)
                if check_dates:
                    with self.db.transaction() as session:
                        moved += triggers.check_dates(session, project_id, now)
            except Exception:
                log.exception("automation triggers of project %s could not be read", project_id)
        if check_dates:
            self._dates_checked = time.monotonic()
        return moved
