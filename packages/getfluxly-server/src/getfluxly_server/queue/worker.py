"""The worker: claim due jobs in batches, run them on a pool of threads, record the outcomes;
renew leases meanwhile, sweep old finished jobs, and sleep until there is work.

One dispatcher thread claims as many jobs as there are idle threads, in one transaction, by
priority, within each kind's concurrency (:mod:`getfluxly_server.queue.kinds`). Never more
than idle threads: a claimed job starts at once instead of waiting, leased, behind others
that another worker could have run. When nothing is due it sleeps until a job is enqueued
in any process (PostgreSQL ``LISTEN/NOTIFY``; SQLite, the wake-up channel beside the
database file, for this worker's kinds only: see ``storage/jobs.py``), a running job ends
while others were waiting for room, or ``poll_seconds`` pass (the fallback).

A handler gets its kind's typed payload. One that raises :class:`Retry` (or any error while
attempts remain) is queued again after the kind's backoff (capped, jittered); one that
raises :class:`Permanent`, exhausts its attempts, or whose stored payload does not fit its
model fails for good with the reason recorded on the job. A worker killed mid-job leaves the
job leased; when the lease runs out another worker claims it and runs it again, so handlers
must be idempotent (they work from ids and record their effects in the database).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from getfluxly_server.queue.kinds import InvalidPayload, JobHandler, Registry
from getfluxly_server.queue.retry import DEFAULT_BACKOFF_CAP_SECONDS, Permanent, Retry
from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import now

__all__ = ["Permanent", "Retry", "Worker"]

log = logging.getLogger("getfluxly.worker")


class Worker:
    """Runs jobs of the given handlers' kinds in ``threads`` threads until :meth:`stop`.

    ``retention``: finished jobs older than this are deleted, checked every ``sweep_seconds``
    (None keeps them). ``backoff_cap_seconds``: the longest backoff of kinds that set no cap.
    ``listen``: on PostgreSQL, wake on enqueue notifications (polling stays the fallback).
    """

    def __init__(
        self,
        db: Database,
        handlers: Iterable[JobHandler[Any]],
        *,
        lease_seconds: float = 60.0,
        threads: int = 4,
        poll_seconds: float = 0.2,
        name: str | None = None,
        backoff_cap_seconds: float = DEFAULT_BACKOFF_CAP_SECONDS,
        retention: timedelta | None = None,
        sweep_seconds: float = 300.0,
        listen: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.registry = Registry(handlers)
        self.lease = timedelta(seconds=lease_seconds)
        self.threads = threads
        self.poll_seconds = poll_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        #: What this worker writes in ``locked_by``: its name and a token of its own, so two
        #: workers of one process never finish or renew each other's jobs.
        self.id = f"{self.name}/{secrets.token_hex(3)}"
        self.backoff_cap_seconds = backoff_cap_seconds
        self.retention = retention
        self.sweep_seconds = sweep_seconds
        self.listen = listen and not db.is_sqlite
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._caps = {
            name: min(handler.kind.concurrency or threads, threads)
            for name, handler in self.registry.items()
        }
        self._lock = threading.Lock()  # guards the counts below
        self._claiming = threading.Lock()  # one claim at a time, so counts stay within caps
        self._running: Counter[str] = Counter()  # in flight, by kind
        self._held: set[int] = set()  # ids of the jobs in flight (their leases are renewed)
        self._backlog = False  # did the last claim leave due jobs behind (room or caps)?
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._listening = threading.Event()
        self._run_once_done = threading.Event()
        self._waiting = threading.Event()  # set while the dispatcher sleeps (for tests)
        self._stopped = threading.Event()  # set once the jobs in hand are done
        self._jobs: queue.SimpleQueue[jobs.ClaimedJob | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._renewer: threading.Thread | None = None
        self._executors: list[threading.Thread] = []
        self._unhook: Callable[[], None] = lambda: None

    # Life cycle.

    def start(self) -> None:
        # (SQLite only.) Woken for its own kinds of job, not for other loops' wake-ups.
        self._unhook = jobs.on_local_enqueue(self.db, self._wake.set, self.registry)
        if self.listen:
            self._listener = self._spawn(self._listen, "worker-listen")
            # Listen before the first claim, so a job enqueued just after start() is heard;
            # if PostgreSQL is slow to answer, polling covers the gap.
            self._listening.wait(5.0)
        self._renewer = self._spawn(self._renew, "worker-leases", self._stopped)
        self._executors = [
            self._spawn(self._execute_loop, f"worker-{index}") for index in range(self.threads)
        ]
        self._dispatcher = self._spawn(self._dispatch, "worker-claim")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; wait for running jobs to finish (their leases cover the rest)."""
        self._stop.set()
        self._unhook()
        self._wake.set()
        # Claiming ends first, so no job is handed over after the executors' last call; the
        # leases are renewed until the jobs in hand are done.
        for thread in (self._dispatcher, self._listener):
            if thread is not None:
                thread.join(timeout)
        for _ in self._executors:
            self._jobs.put(None)
        for thread in self._executors:
            thread.join(timeout)
        self._stopped.set()
        if self._renewer is not None:
            self._renewer.join(timeout)
        self._dispatcher = self._listener = self._renewer = None
        self._executors = []

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def run_once(self) -> bool:
        """Claim and run one due job in this thread; whether there was one (tests, CLI)."""
        claimed = self._claim(1)
        if not claimed:
            return False
        renewer = None
        if self._renewer is None:  # not started: nothing else renews this job's lease
            renewer = threading.Thread(target=self._renew, args=(self._run_once_done,))
            renewer.start()
        try:
            self._execute(claimed[0])
        finally:
            if renewer is not None:
                self._run_once_done.set()
                renewer.join()
                self._run_once_done.clear()
        return True

    @property
    def waiting(self) -> bool:
        """Whether the dispatcher is asleep waiting for work (tests wait for this)."""
        return self._waiting.is_set()

    def sweep(self) -> int:
        """Delete finished jobs older than ``retention``; how many."""
        if self.retention is None:
            return 0
        before, deleted, batch = now() - self.retention, 0, 10_000
        while True:  # a transaction per batch: the write lock is never held for long
            with self.db.transaction() as session:
                count = jobs.delete_finished(session, before, batch)
            deleted += count
            if count < batch:
                return deleted

    # The dispatcher: claim while there is room and work, else sleep until woken.

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._sweep_if_due()
                claimed = self._claim(self.threads - len(self._held))
            except Exception:  # a broken database must not kill the thread: log and back off
                log.exception("worker %s could not claim jobs", self.id)
                claimed = []
            for job in claimed:
                self._jobs.put(job)
            if claimed and self._backlog and len(self._held) < self.threads:
                continue  # more is due and there is room: claim again at once
            self._waiting.set()
            self._wake.wait(self.poll_seconds)
            self._waiting.clear()

    def _claim(self, room: int) -> list[jobs.ClaimedJob]:
        """Claim up to ``room`` jobs within each kind's free concurrency; count them in flight."""
        with self._claiming:
            with self._lock:
                limits = {
                    kind: min(room, cap - self._running[kind]) for kind, cap in self._caps.items()
                }
            if room <= 0:
                self._backlog = True  # woken while full: look again when a job ends
                return []
            with self.db.transaction() as session:
                claimed = jobs.claim(session, self.id, limits, self.lease, room)
            taken = Counter(job.kind for job in claimed)
            with self._lock:
                self._running.update(taken)
                self._held.update(job.id for job in claimed)
            # Due jobs may remain if the claim was cut short by room or by a kind's cap.
            self._backlog = len(claimed) == room or any(
                taken[kind] >= limit for kind, limit in limits.items()
            )
            return claimed

    def _sweep_if_due(self) -> None:
        if self.retention is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_seconds
            deleted = self.sweep()
            if deleted:
                log.info("deleted %d finished jobs older than %s", deleted, self.retention)

    # Running jobs.

    def _execute_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._execute(job)

    def _execute(self, job: jobs.ClaimedJob) -> None:
        try:
            self._run(job)
        except Exception:  # recording the outcome failed: the lease will lapse, and it reruns
            log.exception("could not record the outcome of job %s (%s)", job.id, job.kind)
        finally:
            with self._lock:
                self._running[job.kind] -= 1
                self._held.discard(job.id)
            if self._backlog:
                self._wake.set()

    def _run(self, job: jobs.ClaimedJob) -> None:
        handler = self.registry[job.kind]
        try:
            result = handler(job.payload)
        except InvalidPayload as exc:  # no attempt can fix a stored payload
            log.error("job %s failed for good: %s", job.id, exc)
            self._finish(job, error=str(exc))
        except Permanent as exc:
            self._finish(job, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            if not isinstance(exc, Retry):
                log.exception("job %s (%s) failed on attempt %d", job.id, job.kind, job.attempts)
            retry_at = None
            if job.attempts < job.max_attempts:
                if isinstance(exc, Retry) and exc.delay is not None:
                    delay = exc.delay
                else:
                    policy = handler.kind.retry
                    delay = policy.delay(job.attempts, self.rng, self.backoff_cap_seconds)
                retry_at = now() + timedelta(seconds=delay)
            self._finish(job, error=f"{type(exc).__name__}: {exc}", retry_at=retry_at)
        else:
            self._finish(job, result=dict(result or {}))

    def _finish(self, job: jobs.ClaimedJob, **outcome: Any) -> None:
        with self.db.transaction() as session:
            jobs.finish(session, job.id, self.id, **outcome)

    # Helpers of the dispatcher.

    def _renew(self, done: threading.Event) -> None:
        """Renew the leases of the jobs in flight every third of the lease's length, so long
        jobs keep them (one UPDATE for all of them), until ``done``."""
        interval = self.lease.total_seconds() / 3
        while not done.wait(interval):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                with self.db.transaction() as session:
                    jobs.extend(session, self.id, self.lease, held)
            except Exception:
                log.exception("could not renew the leases of worker %s", self.id)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with jobs.listening(self.db) as notified:
                    # Whatever was enqueued before we listened: look once. (Before the
                    # signal that start() waits for, so this wake-up precedes the first claim.)
                    self._wake.set()
                    self._listening.set()
                    while not self._stop.is_set():
                        if notified(timeout=1.0):
                            self._wake.set()
            except Exception:
                log.warning("job notifications lost; polling until they are back", exc_info=True)
                self._stop.wait(5.0)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread
