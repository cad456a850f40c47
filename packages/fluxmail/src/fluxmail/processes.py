"""Bulk sending from several processes: one core each, a connection pool each.

One Python process sends on one core: past a few thousand messages a second, rendering and
the SMTP conversations keep it busy, whatever the number of connections.
:meth:`fluxmail.BulkSender.send_rows` with ``processes=N`` (and ``fluxmail bulk --processes
N``) forks N worker processes and shares the rows out among them:

* the parent reads the rows (streamed: at most a few chunks per worker are held), hands them
  out in chunks over one queue, so a worker that is ahead takes more;
* each worker renders its chunks with the template it inherited and sends them through its
  own asyncio pool, opened once (``pool_options`` are each worker's: ``max_connections=10``
  with ``processes=2`` is 20 connections), on uvloop when it is installed
  (:mod:`fluxmail.loops`); a rate limit is divided among the workers, so together they keep
  to it;
* outcomes come back in small batches; the parent settles every row (report, progress bar,
  ``on_result``) in its own thread, as they arrive, so callbacks and the progress bar work as
  with one process.

A row's outcome is the :class:`~fluxmail.SendResult`, or a :class:`~fluxmail.FluxMailException`
of the same code and message as in the worker (exceptions cross processes as their code, see
``FluxMailException.__reduce__``). Workers are forked (the template and the mailer are
inherited, never pickled): where ``fork`` is not available (Windows), ``processes`` > 1 is
``invalid_config``.

Stopping: if ``on_result`` raises (the bulk CLI's Ctrl-C), the parent hands out nothing more
and tells the workers to stop; the messages they have in flight are settled (and reported)
first, then the exception is raised. Workers ignore SIGINT (the parent decides), and stop on
their own if the parent disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.synchronize
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fluxmail import loops
from fluxmail.errors import FluxMailException
from fluxmail.protocol.commands import Envelope
from fluxmail.protocol.transaction import Outcome
from fluxmail.ratelimit import RateLimit

if TYPE_CHECKING:
    from fluxmail.client import FluxMail
    from fluxmail.compose import MessageTemplate
    from fluxmail.pool import AsyncSMTPPool

#: ``settle(row_index, row, outcome)``: what the caller does with each row's outcome.
Settle = Callable[[int, Mapping[str, Any], Outcome], object]
#: Rows per chunk handed to a worker: small enough to share the work out evenly, large enough
#: that a chunk is worth a queue round trip.
CHUNK = 250
#: Chunks a worker sends at once (the next one starts while the last of the previous one
#: finish, so its connections never wait for the slowest of a chunk).
CONCURRENT_CHUNKS = 2
#: Outcomes a worker buffers before sending them back to the parent.
RESULTS_BATCH = 32
#: Seconds between the parent's checks that its workers are alive while it waits.
POLL = 0.5


class _Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised in a worker's result callback to end its sends (the parent asked it to stop)."""


def render_rows(
    template: MessageTemplate,
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    to: str,
    failed: Callable[[int, FluxMailException], object],
) -> tuple[list[tuple[Envelope, bytes]], list[int]]:
    """Render ``(row index, row)`` pairs: the wire items, and the row index of each. A row
    that cannot be rendered (a bad address, a missing field) goes to ``failed`` alone."""
    items: list[tuple[Envelope, bytes]] = []
    where: list[int] = []
    for index, row in rows:
        try:
            items.append(template.render(str(row.get(to, "")), **row))
        except FluxMailException as exc:
            failed(index, exc)
        else:
            where.append(index)
    return items, where


def fork_context(processes: int) -> multiprocessing.context.ForkContext:
    """The ``fork`` start method, checked: ``invalid_config`` for a bad count or no fork."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise FluxMailException(
            f"processes must be a whole number of at least 1, got {processes!r}",
            "invalid_config",
        )
    if "fork" not in multiprocessing.get_all_start_methods():
        raise FluxMailException(
            "processes > 1 forks worker processes, which this platform cannot do; "
            "send with processes=1 (or run one sender per part of the list)",
            "invalid_config",
        )
    return multiprocessing.context.ForkContext()


def share_rate(limit: RateLimit | None, processes: int) -> RateLimit | None:
    """Each worker's part of a rate limit, so that all of them together keep to it."""
    if limit is None:
        return None
    per_period = limit.max_per_period and max(limit.max_per_period // processes, 1)
    return replace(limit, per_second=limit.per_second / processes, max_per_period=per_period)


def send_rows_in_processes(
    mailer: FluxMail,
    template: MessageTemplate,
    rows: Iterable[Mapping[str, Any]],
    *,
    to: str,
    settle: Settle,
    processes: int,
    pool_options: Mapping[str, Any],
    on_total: Callable[[int], object] | None = None,
    chunk_size: int = CHUNK,
) -> None:
    """Send ``template`` to every row from ``processes`` forked workers; ``settle`` hears of
    every row's outcome, in this process and thread. ``on_total`` hears how many rows were
    read so far, as they are read (for a progress bar)."""
    context = fork_context(processes)
    options = dict(pool_options)
    options["rate_limit"] = share_rate(options.get("rate_limit"), processes)
    tasks = context.Queue()
    results = context.Queue()
    stop = context.Event()
    parent = os.getpid()
    workers = [
        context.Process(
            target=_worker,
            args=(mailer, template, to, options, tasks, results, stop, parent),
            name=f"fluxmail-sender-{number}",
            daemon=True,
        )
        for number in range(processes)
    ]
    for worker in workers:
        worker.start()
    pending: dict[int, Mapping[str, Any]] = {}  # handed out, not yet settled
    chunks = _chunks(rows, chunk_size)
    read = 0
    failure: BaseException | None = None
    ended = False  # the workers were told that no more chunks come

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            for _ in workers:
                tasks.put(None)

    def settle_one(index: int, row: Mapping[str, Any], outcome: Outcome) -> None:
        nonlocal failure
        try:
            settle(index, row, outcome)
        except BaseException as exc:  # raised at the end, once the rest is settled
            if failure is None:
                failure = exc
                stop.set()  # the workers start nothing new...
                end()  # ...and end once their messages in flight are settled

    try:
        while not ended or pending:
            # Hand out chunks while fewer than a few per worker are in the workers' hands.
            while not ended and len(pending) < processes * 3 * chunk_size:
                try:
                    next_chunk = next(chunks, None)
                except BaseException as exc:
                    failure = exc
                    stop.set()
                    next_chunk = None
                if next_chunk is None:
                    end()
                    break
                start, chunk = next_chunk
                read += len(chunk)
                if on_total is not None:
                    on_total(read)
                task, unsendable = _task(start, chunk)
                for index, error in unsendable.items():
                    settle_one(index, chunk[index - start], error)
                for offset, row in enumerate(chunk):
                    if start + offset not in unsendable:
                        pending[start + offset] = row
                tasks.put(task)
            if not pending:
                continue
            batch = _next_results(results, workers)
            if batch is None:  # every worker has ended
                break
            for index, outcome in batch:
                if index not in pending:
                    continue
                settle_one(index, pending.pop(index), outcome)
        if failure is None:  # what a worker held when it died was never reported
            for index, row in list(pending.items()):
                settle(index, row, _lost())
            pending.clear()
    finally:
        if failure is not None or pending:
            stop.set()
        end()
        # Chunks left in the queue when the workers stop early are dropped, never waited on.
        tasks.cancel_join_thread()
        _join(workers, results)
    if failure is not None:
        raise failure


def _task(start: int, chunk: list[Mapping[str, Any]]) -> tuple[bytes, dict[int, FluxMailException]]:
    """A chunk pickled here, in the caller's thread (a queue would pickle it in a thread of its
    own and only print why it could not), and the rows that cannot be pickled, each with its
    error; the task holds the rest."""
    rows = [(start + offset, dict(row)) for offset, row in enumerate(chunk)]
    try:
        whole = pickle.dumps(rows)
    except Exception:
        whole = None
    if whole is not None:
        return whole, {}
    unsendable: dict[int, FluxMailException] = {}
    for index, row in rows:
        try:
            pickle.dumps(row)
        except Exception as exc:
            unsendable[index] = FluxMailException(
                f"Row {index} cannot be handed to a worker process: {exc}", "invalid_params"
            )
    kept = [(index, row) for index, row in rows if index not in unsendable]
    return pickle.dumps(kept), unsendable


def _lost() -> FluxMailException:
    return FluxMailException(
        "The worker process sending this row ended before reporting it; it may or may not "
        "have been sent",
        "worker_failed",
    )


def _next_results(
    results: multiprocessing.Queue[Any], workers: Sequence[multiprocessing.process.BaseProcess]
) -> list[tuple[int, Outcome]] | None:
    """The next batch of outcomes from any worker; None once every worker has ended."""
    while True:
        try:
            message = results.get(timeout=POLL)
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers):
                try:  # what a worker sent just before it ended
                    message = results.get(timeout=POLL)
                except queue.Empty:
                    return None
            else:
                continue
        if isinstance(message, list):
            return message
        # A worker crashed: it said why; the rows it held are settled as lost at the end.


def _join(workers: Sequence[multiprocessing.process.BaseProcess], results: Any) -> None:
    """Wait for the workers to end (draining what they still send, so none blocks on a full
    pipe); end the ones that do not within a few seconds."""
    for worker in workers:
        for _ in range(20):
            worker.join(timeout=0.25)
            if not worker.is_alive():
                break
            with contextlib.suppress(queue.Empty):
                while True:
                    results.get_nowait()
        if worker.is_alive():
            worker.terminate()
            worker.join()


def _chunks(
    rows: Iterable[Mapping[str, Any]], size: int
) -> Iterator[tuple[int, list[Mapping[str, Any]]]]:
    start = 0
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield start, chunk
            start += size
            chunk = []
    if chunk:
        yield start, chunk


# -- in a worker ------------------------------------------------------------------------------


def _worker(
    mailer: FluxMail,
    template: MessageTemplate,
    to: str,
    pool_options: dict[str, Any],
    tasks: multiprocessing.Queue[Any],
    results: multiprocessing.Queue[Any],
    stop: multiprocessing.synchronize.Event,
    parent: int,
) -> None:
    """A worker process: send the chunks it takes until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    outbox = _Outbox(results, stop, parent)
    try:
        loops.run(_work(mailer, template, to, pool_options, tasks, outbox))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        outbox.flush()


async def _work(
    mailer: FluxMail,
    template: MessageTemplate,
    to: str,
    pool_options: dict[str, Any],
    tasks: multiprocessing.Queue[Any],
    outbox: _Outbox,
) -> None:
    loop = asyncio.get_running_loop()
    async with mailer.async_pool(**pool_options) as pool:
        sending: set[asyncio.Future[None]] = set()
        try:
            while not outbox.stopping():
                task = await loop.run_in_executor(None, tasks.get)
                if task is None or outbox.stopping():
                    break
                rows = pickle.loads(task)  # noqa: S301 - the parent's own bytes, over a pipe
                job = _send_chunk(pool, template, to, rows, outbox)
                sending.add(asyncio.ensure_future(job))
                if len(sending) >= CONCURRENT_CHUNKS:
                    done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        future.result()
            await asyncio.gather(*sending)
        except _Stopped:
            await asyncio.gather(*sending, return_exceptions=True)


async def _send_chunk(
    pool: AsyncSMTPPool,
    template: MessageTemplate,
    to: str,
    rows: list[tuple[int, Mapping[str, Any]]],
    outbox: _Outbox,
) -> None:
    items, where = render_rows(template, rows, to, outbox.add)

    def on_result(position: int, outcome: Outcome) -> None:
        outbox.add(where[position], outcome)
        if outbox.stopping():
            raise _Stopped  # this message is reported; the connection's next one is not sent

    if items:
        await pool.send_many(items, on_result)
    outbox.flush()


class _Outbox:
    """A worker's outcomes on their way to the parent, a few at a time."""

    def __init__(
        self,
        results: multiprocessing.Queue[Any],
        stop: multiprocessing.synchronize.Event,
        parent: int,
    ) -> None:
        self._results, self._stop, self._parent = results, stop, parent
        self._buffer: list[tuple[int, Outcome]] = []
        self._lock = threading.Lock()

    def add(self, index: int, outcome: Outcome) -> None:
        with self._lock:
            self._buffer.append((index, outcome))
            full = len(self._buffer) >= RESULTS_BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._results.put(batch)

    def stopping(self) -> bool:
        """Whether to send nothing more: the parent asked, or is gone (then stop at once)."""
        return self._stop.is_set() or os.getppid() != self._parent
