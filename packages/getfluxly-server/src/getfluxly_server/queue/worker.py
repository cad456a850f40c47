"""The worker loop: claim a job, run its handler, record the outcome; renew leases meanwhile.

Handlers are plain functions ``handler(payload) -> result dict`` registered by kind. A handler
that raises :class:`Retry` (or any error while attempts remain) is queued again with
exponential backoff; its final failure is recorded on the job. A worker killed mid-job leaves
the job leased; when the lease runs out another worker claims it and runs it again, so
handlers must be idempotent (they work from ids and record their effects in the database).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import now

log = logging.getLogger("getfluxly.worker")

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class Retry(Exception):  # noqa: N818 - a request, not an error
    """Raised by a handler for a temporary failure: try again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Worker:
    """Runs jobs of the registered kinds in ``threads`` threads until :meth:`stop`."""

    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, Handler],
        *,
        lease_seconds: float = 60.0,
        threads: int = 4,
        poll_seconds: float = 0.2,
        name: str | None = None,
    ) -> None:
        self.db = db
        self.handlers = dict(handlers)
        self.lease = timedelta(seconds=lease_seconds)
        self.threads = threads
        self.poll_seconds = poll_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(
                target=self._loop,
                args=(f"{self.name}/{index}",),
                name=f"worker-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; wait for running jobs to finish (their leases cover the rest)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def run_once(self, worker_id: str | None = None) -> bool:
        """Claim and run one job if one is due; returns whether it did (for tests and CLI)."""
        worker_id = worker_id or f"{self.name}/once"
        with self.db.transaction() as session:
            job = jobs.claim(session, worker_id, list(self.handlers), self.lease)
            if job is None:
                return False
            job_id, kind, payload = job.id, job.kind, dict(job.payload)
            attempts, max_attempts = job.attempts, job.max_attempts
        self._run(job_id, kind, payload, attempts, max_attempts, worker_id)
        return True

    def _loop(self, worker_id: str) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once(worker_id)
            except Exception:  # a broken database must not kill the thread: log and back off
                log.exception("worker %s could not claim a job", worker_id)
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)

    def _run(
        self, job_id: int, kind: str, payload: dict[str, Any], attempts: int, max_attempts: int,
        worker_id: str,
    ) -> None:  # fmt: skip
        renewer = _LeaseRenewer(self, job_id, worker_id)
        renewer.start()
        try:
            result = self.handlers[kind](payload)
        except Exception as exc:
            renewer.stop()
            retry = attempts < max_attempts
            delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else 2.0**attempts
            if not isinstance(exc, Retry):
                log.exception("job %s (%s) failed on attempt %d", job_id, kind, attempts)
            with self.db.transaction() as session:
                jobs.finish(
                    session, job_id, worker_id, error=f"{type(exc).__name__}: {exc}",
                    retry_at=now() + timedelta(seconds=delay) if retry else None,
                )  # fmt: skip
            return
        renewer.stop()
        with self.db.transaction() as session:
            jobs.finish(session, job_id, worker_id, result=result or {})


class _LeaseRenewer:
    """Renews a running job's lease every third of its length, so long jobs keep it."""

    def __init__(self, worker: Worker, job_id: int, worker_id: str) -> None:
        self.worker, self.job_id, self.worker_id = worker, job_id, worker_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        interval = self.worker.lease.total_seconds() / 3
        while not self._done.wait(interval):
            try:
                with self.worker.db.transaction() as session:
                    jobs.extend(session, self.job_id, self.worker_id, self.worker.lease)
            except Exception:
                log.exception("could not renew the lease of job %s", self.job_id)
