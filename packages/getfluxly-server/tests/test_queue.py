"""The durable job queue (storage/jobs.py, queue/worker.py) on SQLite and on PostgreSQL.

Contract: a job is visible to workers only once the transaction that enqueued it commits;
each due job is claimed by exactly one worker; a failing handler is retried with exponential
backoff (2**attempts seconds, or a :class:`Retry`'s delay) until ``max_attempts``, then
recorded as failed; a worker that dies mid-job leaves the job leased, and when the lease runs
out another worker claims it and runs it again.

The first tests drive the queue in-process against a fresh, migrated database (the harness's
template); the last ones run real ``getfluxly worker`` processes behind the real API.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from flux_testkit.gfserver import GFDatabase, GFServer
from getfluxly_server.queue.worker import Retry, Worker
from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Job, now

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

KIND = "test.job"


@contextlib.contextmanager
def _in_process(database: GFDatabase) -> Iterator[Database]:
    """``database`` opened in this process the way the server opens it (disposed on exit)."""
    opened = Database(database.sqlalchemy_url)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def db(gf_database: GFDatabase) -> Iterator[Database]:
    """The test's database, opened in this process."""
    with _in_process(gf_database) as database:
        yield database


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _jobs(db: Database) -> list[Job]:
    with db.read() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs(db: Database) -> None:
    ran: list[dict[str, Any]] = []
    worker = Worker(db, {KIND: lambda payload: ran.append(payload) or {}}, poll_seconds=0.02)

    def enqueue_then_roll_back() -> None:
        with db.transaction() as session:
            jobs.enqueue(session, KIND, {"n": "rolled back"})
            # Workers poll meanwhile (on PostgreSQL; SQLite makes them wait for the write
            # lock): an uncommitted job must stay invisible to them.
            time.sleep(0.3)
            raise RuntimeError("changed my mind")

    worker.start()
    try:
        with pytest.raises(RuntimeError, match="changed my mind"):
            enqueue_then_roll_back()
        with db.transaction() as session:
            jobs.enqueue(session, KIND, {"n": "committed"})
        _wait(lambda: len(ran) >= 1, 10, "the committed job")
        time.sleep(0.2)  # time enough for a wrongly visible job to run as well
    finally:
        worker.stop()
    assert ran == [{"n": "committed"}]
    assert [(j.payload, j.status, j.attempts) for j in _jobs(db)] == [
        ({"n": "committed"}, "done", 1)
    ]


def test_each_job_is_claimed_by_exactly_one_of_many_workers(db: Database) -> None:
    count = 40
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        with lock:
            runs[payload["n"]] += 1
        time.sleep(0.01)  # long enough for the other workers to try the same job
        return {"n": payload["n"]}

    with db.transaction() as session:
        for n in range(count):
            jobs.enqueue(session, KIND, {"n": n})
    # Three workers of four threads each, as three processes would run them.
    workers = [
        Worker(db, {KIND: handler}, threads=4, poll_seconds=0.01, name=f"w{i}") for i in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        _wait(lambda: all(j.status == "done" for j in _jobs(db)), 30, "every job to finish")
    finally:
        for worker in workers:
            worker.stop()
    assert runs == Counter(range(count))
    finished = _jobs(db)
    assert [j.result for j in finished] == [{"n": n} for n in range(count)]
    assert {j.attempts for j in finished} == {1}


def test_a_failing_job_is_retried_with_backoff_until_max_attempts(db: Database) -> None:
    def fail(payload: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("the relay is on fire")

    worker = Worker(db, {KIND: fail})
    with db.transaction() as session:
        job_id = jobs.enqueue(session, KIND, {}, max_attempts=3).id

    for attempt, backoff in ((1, 2), (2, 4)):
        before = now()
        assert worker.run_once()
        after = now()
        [job] = _jobs(db)
        assert (job.status, job.attempts) == ("queued", attempt)
        assert job.last_error == "ValueError: the relay is on fire"
        assert job.locked_by is None
        # Due again 2**attempts seconds after the failure, which happened in run_once().
        delay = timedelta(seconds=backoff)
        assert before + delay <= job.run_at <= after + delay
        assert not worker.run_once(), "claimed before its backoff ran out"
        with db.transaction() as session:  # let the backoff pass without sleeping
            row = session.get(Job, job_id)
            assert row is not None
            row.run_at = now() - timedelta(seconds=1)

    assert worker.run_once()
    [job] = _jobs(db)
    assert (job.status, job.attempts, job.result) == ("failed", 3, None)
    assert job.last_error == "ValueError: the relay is on fire"
    assert job.finished_at is not None
    assert not worker.run_once(), "a failed job was claimed again"


def test_retry_with_a_delay_runs_again_after_that_delay(db: Database) -> None:
    calls: list[float] = []

    def flaky(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise Retry("busy", delay=0.2)
        return {"ok": True}

    worker = Worker(db, {KIND: flaky}, poll_seconds=0.02)
    with db.transaction() as session:
        jobs.enqueue(session, KIND, {}, max_attempts=3)
    worker.start()
    try:
        _wait(lambda: _jobs(db)[0].status == "done", 10, "the third attempt")
    finally:
        worker.stop()
    [job] = _jobs(db)
    assert (job.attempts, job.result, job.last_error) == (3, {"ok": True}, None)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert all(gap >= 0.19 for gap in gaps), gaps


# Real worker processes behind the real API.

RECIPIENT = "ops@example.com"


def test_worker_threads_of_two_processes_send_each_message_once(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    """Test sends enqueued straight into the database are shared out among the worker
    threads of ``getfluxly serve`` and of a separate ``getfluxly worker`` process, all
    claiming at once: the relay gets every message exactly once."""
    relay = smtp_server(tls="none", auth=True)
    threads = {"GETFLUXLY_WORKER_THREADS": "3"}
    server = gf_server_factory(env=threads)
    project = server.create_project()
    provider = server.create_smtp_provider(project.id, relay.host, relay.port)
    relay.faults.delay_reply_seconds = 0.1  # each send holds its job a moment
    count = 30
    worker = server.start_worker(threads)
    _wait(lambda: "worker started" in worker.logs(), 30, "the worker process")
    with _in_process(server.database) as database, database.transaction() as session:
        for n in range(count):
            payload = {"provider_id": provider["id"], "to": f"user{n}@example.com"}
            jobs.enqueue(session, "provider.test_send", payload, max_attempts=1)

    # Which processes hold running jobs, sampled while they run.
    holders: set[int] = set()

    def sample() -> bool:
        rows = server.database.query("SELECT locked_by FROM jobs WHERE status = 'running'")
        holders.update(_pid_of(r["locked_by"]) for r in rows)
        return _all_done(server, count)

    _wait(sample, 60, "every job recorded as done")
    time.sleep(0.3)  # a duplicate would arrive about now
    recipients = Counter(r for m in relay.messages for r in m.rcpt_tos)
    assert recipients == Counter(f"user{n}@example.com" for n in range(count))
    rows = server.database.query("SELECT status, attempts FROM jobs")
    assert {(r["status"], r["attempts"]) for r in rows} == {("done", 1)}
    assert server.process is not None
    assert holders == {server.process.pid, worker.pid}, "both processes took part"


def _pid_of(locked_by: object) -> int:
    """The process id in a worker id, ``host:pid/thread`` (queue/worker.py)."""
    return int(str(locked_by).rsplit("/", 1)[0].rsplit(":", 1)[1])


def _all_done(server: GFServer, count: int) -> bool:
    rows = server.database.query("SELECT status FROM jobs WHERE status = 'done'")
    return len(rows) == count


@pytest.mark.slow
def test_a_job_of_a_killed_worker_completes_on_another_after_its_lease(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    """SIGKILL a worker while its test send waits for the relay's reply to DATA: the job
    stays leased to the dead worker; once the 2 s lease runs out a second worker runs it
    again (attempt 2) and the relay gets the message once (the killed connection's message
    was never accepted)."""
    relay = smtp_server(tls="none", auth=True)
    lease = {"GETFLUXLY_JOB_LEASE_SECONDS": "2", "GETFLUXLY_WORKER_THREADS": "1"}
    server = gf_server_factory(mode="api", env=lease)
    project = server.create_project()
    provider = server.create_smtp_provider(project.id, relay.host, relay.port)
    relay.faults.delay_reply_seconds = 60  # the first send hangs after DATA

    first = server.start_worker()
    # Straight into the queue: the API's test send no longer goes through a job.
    with _in_process(server.database) as database, database.transaction() as session:
        payload = {"provider_id": provider["id"], "to": RECIPIENT}
        jobs.enqueue(session, "provider.test_send", payload, max_attempts=1)
    try:
        _wait(lambda: "DATA" in relay.commands, 30, "the first worker to reach DATA")
        # The second worker starts now (its start-up overlaps the lease running out); it
        # cannot take the job while the first one renews its lease.
        second = server.start_worker()
        relay.faults.delay_reply_seconds = 0
        [job] = server.database.query("SELECT * FROM jobs")
        assert (job["status"], job["attempts"]) == ("running", 1)
        assert _pid_of(job["locked_by"]) == first.pid

        server.kill_worker(first, signal.SIGKILL)
        assert first.returncode == -signal.SIGKILL
        [job] = server.database.query("SELECT status, attempts, locked_by FROM jobs")
        assert (job["status"], job["attempts"]) == ("running", 1)  # still leased to the dead
        assert _pid_of(job["locked_by"]) == first.pid

        _wait(lambda: _all_done(server, 1), 30, "the job to finish on the second worker")
    finally:
        relay.faults.delay_reply_seconds = 0
    [job] = server.database.query("SELECT status, attempts, locked_by FROM jobs")
    assert (job["status"], job["attempts"], job["locked_by"]) == ("done", 2, None)
    [message] = relay.wait_for_messages(1)
    assert message.rcpt_tos == [RECIPIENT]
    assert second.alive
