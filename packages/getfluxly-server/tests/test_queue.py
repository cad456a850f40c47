"""The durable job queue (storage/jobs.py, queue/kinds.py, queue/worker.py) on SQLite and on
PostgreSQL.

Contract: a job is visible to workers only once the transaction that enqueued it commits;
each due job is claimed by exactly one worker, in batches, by priority (transactional before
default before bulk) then due time, never more of a kind at once than its concurrency; a
failing handler is retried after a capped, jittered exponential backoff (or a
:class:`Retry`'s delay) until ``max_attempts``, then recorded as failed; a payload that does
not fit its kind's model fails that job, not the worker; finished jobs are deleted after the
retention; on PostgreSQL an enqueue wakes an idle worker; a worker that dies mid-job leaves
the job leased, and when the lease runs out another worker claims it and runs it again.

The first tests drive the queue in-process against a fresh, migrated database (the harness's
template); the last ones run real ``getfluxly worker`` processes behind the real API.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from flux_testkit.gfserver import GFDatabase, GFServer
from flux_testkit.waiting import eventually
from getfluxly_server.domain.providers import TEST_SEND, TestSend
from getfluxly_server.queue.kinds import JobKind, JobPayload, Queue, Registry
from getfluxly_server.queue.retry import RetryPolicy, backoff
from getfluxly_server.queue.worker import Permanent, Retry, Worker
from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database, FairLock
from getfluxly_server.storage.models import Job, JobStatus, now

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory


class Item(JobPayload):
    n: int = 0
    label: str = ""


class Nested(JobPayload):
    when: datetime
    tags: list[str]
    weights: dict[str, float]


class Rich(JobPayload):
    """A payload with more than strings in it, to check the JSON round trip."""

    id: str
    count: int
    ratio: float
    flag: bool
    nested: Nested
    optional: str | None = None


KIND = JobKind("test.job", Item)
URGENT = JobKind("test.urgent", Item, queue=Queue.TRANSACTIONAL)
BULK = JobKind("test.bulk", Item, queue=Queue.BULK)
LIMITED = JobKind("test.limited", Item, concurrency=2)
RICH = JobKind("test.rich", Rich)
THREE_TRIES = JobKind("test.three_tries", Item, retry=RetryPolicy(max_attempts=3))

Handler = Callable[[Item], dict[str, Any] | None]


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


@contextlib.contextmanager
def _running(worker: Worker) -> Iterator[Worker]:
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _jobs(db: Database) -> list[Job]:
    with db.read() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def _claim(db: Database, limits: dict[str, int], n: int, worker: str = "t") -> list[int]:
    with db.transaction() as session:
        return [j.id for j in jobs.claim(session, worker, limits, timedelta(seconds=60), n)]


def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs(db: Database) -> None:
    ran: list[Item] = []
    worker = Worker(db, [KIND.handler(lambda item: ran.append(item) or {})], poll_seconds=0.02)

    def enqueue_then_roll_back() -> None:
        with db.transaction() as session:
            KIND.enqueue(session, Item(label="rolled back"))
            # Workers poll meanwhile (on PostgreSQL; SQLite makes them wait for the write
            # lock): an uncommitted job must stay invisible to them.
            time.sleep(0.3)
            raise RuntimeError("changed my mind")

    with _running(worker):
        with pytest.raises(RuntimeError, match="changed my mind"):
            enqueue_then_roll_back()
        with db.transaction() as session:
            KIND.enqueue(session, Item(label="committed"))
        eventually(lambda: len(ran) >= 1, "the committed job", 10, poll=0.02)
        time.sleep(0.2)  # time enough for a wrongly visible job to run as well
    assert ran == [Item(label="committed")]
    assert [(j.payload, j.status, j.attempts) for j in _jobs(db)] == [
        ({"n": 0, "label": "committed"}, JobStatus.DONE, 1)
    ]


def test_each_job_is_claimed_by_exactly_one_of_many_workers(db: Database) -> None:
    count = 40
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(item: Item) -> dict[str, Any]:
        with lock:
            runs[item.n] += 1
        time.sleep(0.01)  # long enough for the other workers to try the same job
        return {"n": item.n}

    with db.transaction() as session:
        KIND.enqueue_many(session, (Item(n=n) for n in range(count)))
    # Three workers of four threads each, as three processes would run them.
    workers = [
        Worker(db, [KIND.handler(handler)], threads=4, poll_seconds=0.01, name=f"w{i}")
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        eventually(
            lambda: all(j.status == "done" for j in _jobs(db)), "every job to finish", 30, poll=0.02
        )
    finally:
        for worker in workers:
            worker.stop()
    assert runs == Counter(range(count))
    finished = _jobs(db)
    assert [j.result for j in finished] == [{"n": n} for n in range(count)]
    assert {j.attempts for j in finished} == {1}


def test_a_failing_job_is_retried_with_jittered_backoff_until_max_attempts(
    db: Database,
) -> None:
    def fail(item: Item) -> dict[str, Any]:
        raise ValueError("the relay is on fire")

    # The worker's random draws, replayed: each retry waits the full-jitter delay of its
    # attempt (the kind's default base of 1 s, under the worker's cap of 600 s).
    worker = Worker(db, [THREE_TRIES.handler(fail)], rng=random.Random(7))
    expected = random.Random(7)
    with db.transaction() as session:
        job_id = THREE_TRIES.enqueue(session, Item())

    for attempt in (1, 2):
        before = now()
        assert worker.run_once()
        after = now()
        [job] = _jobs(db)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, attempt)
        assert job.last_error == "ValueError: the relay is on fire"
        assert job.locked_by is None
        delay = timedelta(seconds=backoff(attempt, base=1.0, cap=600.0, rng=expected))
        assert delay <= timedelta(seconds=2.0**attempt)
        assert before + delay <= job.run_at <= after + delay
        if delay > timedelta(seconds=0.5):  # (a draw near 0 is due again at once: right)
            assert not worker.run_once(), "claimed before its backoff ran out"
        with db.transaction() as session:  # let the backoff pass without sleeping
            row = session.get(Job, job_id)
            assert row is not None
            row.run_at = now() - timedelta(seconds=1)

    assert worker.run_once()
    [job] = _jobs(db)
    assert (job.status, job.attempts, job.result) == (JobStatus.FAILED, 3, None)
    assert job.last_error == "ValueError: the relay is on fire"
    assert job.finished_at is not None
    assert not worker.run_once(), "a failed job was claimed again"


def test_a_permanent_failure_is_not_retried(db: Database) -> None:
    def refuse(item: Item) -> dict[str, Any]:
        raise Permanent("550 no such user")

    worker = Worker(db, [KIND.handler(refuse)])
    with db.transaction() as session:
        KIND.enqueue(session, Item())
    assert worker.run_once()
    [job] = _jobs(db)
    assert (job.status, job.attempts, job.max_attempts) == (JobStatus.FAILED, 1, 5)
    assert job.last_error == "Permanent: 550 no such user"


def test_retry_with_a_delay_runs_again_after_that_delay(db: Database) -> None:
    calls: list[float] = []

    def flaky(item: Item) -> dict[str, Any]:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise Retry("busy", delay=0.2)
        return {"ok": True}

    worker = Worker(db, [THREE_TRIES.handler(flaky)], poll_seconds=0.02)
    with db.transaction() as session:
        THREE_TRIES.enqueue(session, Item())
    with _running(worker):
        eventually(lambda: _jobs(db)[0].status == "done", "the third attempt", 10, poll=0.02)
    [job] = _jobs(db)
    assert (job.attempts, job.result, job.last_error) == (3, {"ok": True}, None)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert all(gap >= 0.19 for gap in gaps), gaps


# Priorities and batch claiming.


def test_a_transactional_job_runs_first_behind_ten_thousand_bulk_jobs(db: Database) -> None:
    """10,000 bulk jobs are queued, then one transactional job. Every bulk job blocks until
    the transactional one has run: if the transactional job were not in the worker's first
    claim, all its threads would wait on bulk jobs and the test would time out."""
    threads = 4
    urgent_ran = threading.Event()
    started: list[str] = []
    lock = threading.Lock()

    def bulk(item: Item) -> None:
        with lock:
            started.append(f"bulk {item.n}")
        assert urgent_ran.wait(20), "a bulk job waited for the transactional one in vain"

    def urgent(item: Item) -> None:
        with lock:
            started.append("urgent")
        urgent_ran.set()

    with db.transaction() as session:
        assert BULK.enqueue_many(session, (Item(n=n) for n in range(10_000))) == 10_000
    with db.transaction() as session:
        urgent_id = URGENT.enqueue(session, Item())

    # The order the claim itself hands out: the transactional job, then the oldest bulk ones.
    with db.transaction() as session:
        first = jobs.claim(session, "peek", {BULK.name: 9, URGENT.name: 9}, timedelta(1), 3)
        assert [(j.kind, j.payload["n"]) for j in first] == [
            (URGENT.name, 0), (BULK.name, 0), (BULK.name, 1)
        ]  # fmt: skip
        session.rollback()  # (only looking)

    worker = Worker(db, [BULK.handler(bulk), URGENT.handler(urgent)], threads=threads)
    with _running(worker):
        assert urgent_ran.wait(30), "the transactional job never ran"
        with lock:
            assert "urgent" in started[:threads], started
        eventually(lambda: len(started) >= 3 * threads, "bulk jobs to carry on", 30, poll=0.02)
    with db.read() as session:
        urgent_job = session.get(Job, urgent_id)
        assert urgent_job is not None
        assert (urgent_job.status, urgent_job.priority) == (JobStatus.DONE, Queue.TRANSACTIONAL)


def test_a_batch_claim_takes_n_distinct_due_jobs_in_priority_then_due_order(
    db: Database,
) -> None:
    moment = now()
    with db.transaction() as session:
        later = KIND.enqueue(session, Item(n=1), run_at=moment - timedelta(seconds=10))
        earlier = KIND.enqueue(session, Item(n=2), run_at=moment - timedelta(seconds=20))
        KIND.enqueue(session, Item(n=3), run_at=moment + timedelta(hours=1))  # not yet due
        bulk = BULK.enqueue(session, Item(n=4), run_at=moment - timedelta(hours=1))
        urgent = URGENT.enqueue(session, Item(n=5))
    limits = {KIND.name: 10, BULK.name: 10, URGENT.name: 10}
    assert _claim(db, limits, 3) == [urgent, earlier, later]
    assert _claim(db, limits, 3) == [bulk]  # what is left and due
    assert _claim(db, limits, 3) == []
    claimed = [j for j in _jobs(db) if j.status == JobStatus.RUNNING]
    assert {(j.attempts, j.locked_by) for j in claimed} == {(1, "t")}
    assert all(j.lease_until is not None and j.lease_until > moment for j in claimed)


def test_an_expired_lease_is_claimed_again_and_a_live_one_is_not(db: Database) -> None:
    with db.transaction() as session:
        job_id = KIND.enqueue(session, Item())
    with db.transaction() as session:
        assert jobs.claim(session, "dead", {KIND.name: 1}, timedelta(seconds=-1))
    assert _claim(db, {KIND.name: 1}, 1, "alive") == [job_id]  # the lease had run out
    assert _claim(db, {KIND.name: 1}, 1, "third") == []  # alive's lease has not
    [row] = _jobs(db)
    assert (row.attempts, row.locked_by) == (2, "alive")
    with db.transaction() as session:
        assert not jobs.finish(session, job_id, "dead"), "the dead worker finished it"
        assert jobs.finish(session, job_id, "alive", result={"ok": True})


def test_concurrent_batch_claims_never_take_the_same_job(db: Database) -> None:
    """One claimer holds its claim's transaction open while another claims: PostgreSQL skips
    the locked rows and answers at once; SQLite makes the second wait for the write lock.
    Then claimers in threads take everything in batches: each job exactly once."""
    with db.transaction() as session:
        KIND.enqueue_many(session, (Item(n=n) for n in range(300)))
    limits = {KIND.name: 1000}
    second: list[int] = []
    second_done = threading.Event()

    def claim_second() -> None:
        second.extend(_claim(db, limits, 10, "second"))
        second_done.set()

    with db.transaction() as session:
        first = [j.id for j in jobs.claim(session, "first", limits, timedelta(60), 10)]
        thread = threading.Thread(target=claim_second)
        thread.start()
        if not db.is_sqlite:  # SKIP LOCKED: no waiting on the open transaction
            assert second_done.wait(10), "the second claimer waited for the first's locks"
    thread.join(30)
    assert len(first) == len(set(first)) == 10
    assert len(second) == len(set(second)) == 10
    assert not set(first) & set(second)

    taken: list[list[int]] = []

    def drain(name: str) -> None:
        while batch := _claim(db, limits, 7, name):
            taken.append(batch)

    claimers = [threading.Thread(target=drain, args=(f"c{i}",)) for i in range(4)]
    for claimer in claimers:
        claimer.start()
    for claimer in claimers:
        claimer.join(60)
    every = [job_id for batch in taken for job_id in batch] + first + second
    assert sorted(every) == [j.id for j in _jobs(db)]
    assert all(len(batch) <= 7 for batch in taken)


def test_a_claim_keeps_each_kind_within_its_limit_without_starving_the_others(
    db: Database,
) -> None:
    with db.transaction() as session:
        urgent = [URGENT.enqueue(session, Item(n=n)) for n in range(5)]
        other = [KIND.enqueue(session, Item(n=n)) for n in range(5)]
    # The urgent kind fills its one place; the claim reads on past its backlog.
    assert _claim(db, {URGENT.name: 1, KIND.name: 10}, 4) == [urgent[0], *other[:3]]
    assert _claim(db, {URGENT.name: 0, KIND.name: 10}, 4) == other[3:]
    assert _claim(db, {KIND.name: 10}, 4) == []  # kinds not named are never taken


def test_a_worker_runs_no_more_of_a_kind_at_once_than_its_concurrency(db: Database) -> None:
    """LIMITED allows 2 at once in a worker of 6 threads. Its jobs meet in pairs at a
    barrier (so 2 do run at once) while a counter checks that never 3 do; jobs of an
    unlimited kind run alongside on the other threads."""
    pair = threading.Barrier(2, timeout=20)
    lock = threading.Lock()
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()

    def tracked(kind: str, meet: bool) -> Handler:
        def run(item: Item) -> None:
            with lock:
                running[kind] += 1
                most[kind] = max(most[kind], running[kind])
            try:
                if meet:
                    pair.wait()
                time.sleep(0.02)
            finally:
                with lock:
                    running[kind] -= 1

        return run

    with db.transaction() as session:
        LIMITED.enqueue_many(session, (Item(n=n) for n in range(12)))
        KIND.enqueue_many(session, (Item(n=n) for n in range(12)))
    handlers = [LIMITED.handler(tracked("limited", True)), KIND.handler(tracked("other", False))]
    with _running(Worker(db, handlers, threads=6, poll_seconds=0.02)):
        eventually(lambda: all(j.status == "done" for j in _jobs(db)), "every job", 60, poll=0.02)
    assert most["limited"] == 2
    assert not pair.broken


# Backoff.


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    rng = random.Random(2026)
    for attempt in range(1, 200):
        ceiling = min(600.0, 2.0**attempt)
        draws = [backoff(attempt, base=1.0, cap=600.0, rng=rng) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in draws), (attempt, max(draws))
        assert len(set(draws)) == len(draws), "the same delay twice: no jitter"
    # Past the cap the draws spread over the whole of [0, cap] (full jitter), seeded so the
    # figures are fixed: the mean is about cap / 2 and both ends are reached.
    capped = [backoff(40, base=1.0, cap=600.0, rng=random.Random(1))]
    spread = [backoff(40, base=1.0, cap=600.0, rng=rng) for _ in range(2000)]
    assert 270 < statistics.fmean(spread) < 330
    assert min(spread) < 30
    assert max(spread) > 570
    assert capped == [backoff(40, base=1.0, cap=600.0, rng=random.Random(1))]  # seeded: fixed
    # A kind's own cap wins over the worker's; without one, the worker's applies.
    own = RetryPolicy(base_seconds=10.0, cap_seconds=5.0)
    assert all(own.delay(9, rng, cap=600.0) <= 5.0 for _ in range(100))
    assert max(RetryPolicy().delay(30, rng, cap=60.0) for _ in range(100)) <= 60.0
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


# Retention.


def test_retention_deletes_only_jobs_finished_before_it(db: Database) -> None:
    old, recent = now() - timedelta(days=8), now() - timedelta(days=6)
    rows = [
        ("done old", JobStatus.DONE, old),
        ("failed old", JobStatus.FAILED, old),
        ("done recent", JobStatus.DONE, recent),
        ("failed recent", JobStatus.FAILED, recent),
        ("queued old", JobStatus.QUEUED, None),
        ("running old", JobStatus.RUNNING, None),
    ]
    with db.transaction() as session:
        for label, status, finished in rows:
            session.add(
                Job(kind=KIND.name, payload={"label": label}, status=status, finished_at=finished,
                    created_at=old, run_at=old)
            )  # fmt: skip
    worker = Worker(db, [KIND.handler(lambda item: None)], retention=timedelta(days=7))
    assert worker.sweep() == 2
    assert [j.payload["label"] for j in _jobs(db)] == [
        "done recent", "failed recent", "queued old", "running old"
    ]  # fmt: skip
    assert worker.sweep() == 0
    assert Worker(db, [KIND.handler(lambda item: None)]).sweep() == 0  # no retention: keeps all
    # A running worker sweeps by itself, every sweep_seconds.
    with db.transaction() as session:
        session.add(Job(kind=KIND.name, payload={"label": "done later"}, status=JobStatus.DONE,
                        finished_at=old))  # fmt: skip
    sweeping = Worker(
        db, [KIND.handler(lambda item: None)], retention=timedelta(days=7), sweep_seconds=0.05
    )
    with _running(sweeping):
        eventually(lambda: len(_jobs(db)) == 4, "the worker's own sweep", 10, poll=0.02)


def test_retention_deletes_in_batches_of_its_size(db: Database) -> None:
    old = now() - timedelta(days=30)
    with db.transaction() as session:
        KIND.enqueue_many(session, (Item(n=n) for n in range(25)))
        session.execute(Job.__table__.update().values(status="done", finished_at=old))
    with db.transaction() as session:
        assert jobs.delete_finished(session, now(), batch=10) == 10
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 15


# Typed payloads.


def test_a_typed_payload_round_trips_to_its_handler(db: Database) -> None:
    received: list[Rich] = []
    sent = Rich(
        id="prf_1", count=3, ratio=0.25, flag=True,
        nested=Nested(when=now(), tags=["a", "b"], weights={"x": 1.5}),
    )  # fmt: skip
    worker = Worker(db, [RICH.handler(lambda rich: received.append(rich) or {"got": rich.id})])
    with db.transaction() as session:
        RICH.enqueue(session, sent)
    assert worker.run_once()
    assert received == [sent]
    assert isinstance(received[0].nested, Nested)
    [job] = _jobs(db)
    assert (job.status, job.result) == (JobStatus.DONE, {"got": "prf_1"})


def test_a_payload_that_does_not_fit_fails_its_job_not_the_worker(db: Database) -> None:
    ran: list[Item] = []
    worker = Worker(db, [KIND.handler(lambda item: ran.append(item) or None)], poll_seconds=0.02)
    with db.transaction() as session:
        # Written as an older release might have, or by hand: the kind's model refuses it.
        bad = jobs.enqueue(session, KIND.name, {"n": "many", "colour": "red"}).id
        good = KIND.enqueue(session, Item(n=7))
    with _running(worker):
        eventually(
            lambda: {j.status for j in _jobs(db)} <= {"done", "failed"}, "both jobs", 10, poll=0.02
        )
    assert ran == [Item(n=7)]
    with db.read() as session:
        failed, done = session.get(Job, bad), session.get(Job, good)
        assert failed is not None
        assert done is not None
        assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)  # never retried
        assert failed.last_error == (
            "invalid payload for test.job: n: Input should be a valid integer, unable to parse "
            "string as an integer; colour: Extra inputs are not permitted"
        )
        assert "red" not in failed.last_error  # input values stay out of the record
        assert done.status == JobStatus.DONE


def test_a_kind_takes_only_its_own_payload_and_a_worker_one_handler_per_kind() -> None:
    with pytest.raises(TypeError, match=r"test\.rich takes a Rich payload, not Item"):
        RICH.dump(Item())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"two handlers for job kind 'test\.job'"):
        Registry([KIND.handler(lambda item: None), KIND.handler(lambda item: None)])
    with pytest.raises(ValueError, match="1 to 64 characters"):
        JobKind("x" * 65, Item)


# Unique jobs.


def test_a_unique_job_that_fails_while_an_equal_one_waits_is_not_queued_twice(
    db: Database,
) -> None:
    """enqueue_once keeps one queued job per key; a running one's retry must not break that
    (the queued twin will do the same work)."""
    with db.transaction() as session:
        assert KIND.enqueue_once(session, Item(), "test:one")
        assert not KIND.enqueue_once(session, Item(), "test:one")
    [running] = _claim(db, {KIND.name: 1}, 1)
    with db.transaction() as session:
        assert KIND.enqueue_once(session, Item(), "test:one")  # the first one is running
    with db.transaction() as session:
        assert jobs.finish(session, running, "t", error="boom", retry_at=now())
    first, twin = _jobs(db)
    assert (first.status, twin.status) == (JobStatus.FAILED, JobStatus.QUEUED)
    assert first.last_error == "boom (not retried: an equal job is queued)"


def test_a_unique_job_asked_for_later_is_due_then_and_a_waiting_one_keeps_its_time(
    db: Database,
) -> None:
    """enqueue_once's run_at: an added job is due then (not claimed before); asking again
    while it waits adds nothing and does not move it."""
    later = now() + timedelta(hours=1)
    with db.transaction() as session:
        assert KIND.enqueue_once(session, Item(), "test:later", run_at=later)
    with db.transaction() as session:
        assert not KIND.enqueue_once(session, Item(), "test:later")
    [job] = _jobs(db)
    assert job.run_at == later
    assert _claim(db, {KIND.name: 1}, 1) == []


# Waking idle workers.


def test_an_enqueue_wakes_an_idle_worker_at_once(db: Database) -> None:
    """The worker polls once an hour: only the enqueue's wake-up, sent when its transaction
    commits, can make it run the job within the test's timeout. On PostgreSQL that is the
    NOTIFY (the in-process hook is SQLite's only); on SQLite the hook of this process."""
    ran = threading.Event()
    worker = Worker(db, [KIND.handler(lambda item: ran.set())], poll_seconds=3600)
    with _running(worker):
        eventually(lambda: worker.waiting, "the worker to go idle", 10, poll=0.02)
        with db.transaction() as session:
            KIND.enqueue(session, Item())
            time.sleep(0.2)
            assert not ran.is_set(), "woken before the enqueue committed"
        assert ran.wait(20), "the notification did not wake the worker"
        eventually(lambda: worker.waiting, "the worker to go idle again", 10, poll=0.02)
        with db.transaction() as session:  # and again: it listens on
            KIND.enqueue_many(session, [Item(n=1), Item(n=2)])
        eventually(
            lambda: [j.status for j in _jobs(db)] == ["done"] * 3,
            "the second wake-up",
            20,
            poll=0.02,
        )


@pytest.mark.parametrize("gf_backend", ["sqlite"])
def test_sqlite_wakers_hear_their_own_kinds_in_this_process_and_another(db: Database) -> None:
    """A waker registered for kinds is called after commits that announce one of them, in
    this process and from another process on the same file (the channel beside the file),
    not after commits of other kinds; a waker of every kind hears all of them."""
    mine, every = threading.Event(), threading.Event()
    stops = [
        jobs.on_local_enqueue(db, mine.set, [KIND.name]),
        jobs.on_local_enqueue(db, every.set),
    ]
    try:
        with db.transaction() as session:
            BULK.enqueue(session, Item())
        assert every.wait(5)
        assert not mine.is_set()
        every.clear()
        with db.transaction() as session:
            KIND.enqueue(session, Item())
        assert mine.wait(5)
        assert every.wait(5)
        mine.clear(), every.clear()
        # From another process: an enqueue there, then a wake-up of another kind.
        code = (
            "import sys\n"
            "from getfluxly_server.storage import jobs\n"
            "from getfluxly_server.storage.db import Database\n"
            "db = Database(sys.argv[1])\n"
            "with db.transaction() as session:\n"
            "    jobs.wake_workers(session, sys.argv[2])\n"
        )
        other = ["python", "-c", code, db.url]
        subprocess.run([sys.executable, *other[1:], "test.elsewhere"], check=True, timeout=60)
        assert every.wait(10), "the other process's commit did not wake this one"
        assert not mine.is_set()
        subprocess.run([sys.executable, *other[1:], KIND.name], check=True, timeout=60)
        assert mine.wait(10), "the other process's enqueue of this kind did not wake it"
    finally:
        for stop in stops:
            stop()


def test_sqlite_writers_of_one_process_take_the_database_in_turn() -> None:
    """The SQLite write lock of a process (``storage.db.FairLock``) goes to its waiters in
    the order they came, even when its holder asks again at once; it is re-entrant."""
    lock = FairLock()
    order: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with lock, lock:  # re-entrant
            release.wait(10)
        with lock:  # asks again at once: the waiters before it go first
            order.append("holder again")

    def waiter(name: str) -> None:
        with lock:
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    eventually(lambda: lock._owner is not None, "the holder to take the lock", 5, poll=0.02)
    waiters = []
    for count, name in enumerate(("a", "b", "c"), 1):
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        eventually(
            lambda count=count: len(lock._waiters) == count, f"{name} to queue", 5, poll=0.02
        )
        waiters.append(thread)
    release.set()
    for thread in (first, *waiters):
        thread.join(10)
    assert order == ["a", "b", "c", "holder again"]


@pytest.mark.parametrize("gf_backend", ["sqlite"])
def test_a_sqlite_writer_waits_for_another_processs_write_lock(db: Database) -> None:
    """A write transaction begun while another connection (as another process would) holds
    SQLite's write lock waits for it (in short naps, not SQLite's busy handler), then goes
    through."""
    import sqlite3

    path = db.url.split("///", 1)[1]
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.5, other.execute, args=("COMMIT",))
    released.start()
    try:
        with db.transaction() as session:  # (BEGIN IMMEDIATE finds the lock taken)
            KIND.enqueue(session, Item(n=7))
    finally:
        released.join()
        other.close()
    assert [j.payload["n"] for j in _jobs(db)] == [7]


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
    eventually(lambda: "worker started" in worker.logs(), "the worker process", 30, poll=0.02)
    with _in_process(server.database) as database, database.transaction() as session:
        for n in range(count):
            TEST_SEND.enqueue(
                session, TestSend(provider_id=provider["id"], to=f"user{n}@example.com")
            )

    # Which processes hold running jobs, sampled while they run.
    holders: set[int] = set()

    def sample() -> bool:
        rows = server.database.query("SELECT locked_by FROM jobs WHERE status = 'running'")
        holders.update(_pid_of(r["locked_by"]) for r in rows)
        return _all_done(server, count)

    eventually(sample, "every job recorded as done", 60, poll=0.02)
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
        TEST_SEND.enqueue(session, TestSend(provider_id=provider["id"], to=RECIPIENT))
    try:
        eventually(
            lambda: "DATA" in relay.commands, "the first worker to reach DATA", 30, poll=0.02
        )
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

        eventually(
            lambda: _all_done(server, 1), "the job to finish on the second worker", 30, poll=0.02
        )
    finally:
        relay.faults.delay_reply_seconds = 0
    [job] = server.database.query("SELECT status, attempts, locked_by FROM jobs")
    assert (job["status"], job["attempts"], job["locked_by"]) == ("done", 2, None)
    [message] = relay.wait_for_messages(1)
    assert message.rcpt_tos == [RECIPIENT]
    assert second.alive
