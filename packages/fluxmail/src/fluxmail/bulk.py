"""``BulkSender``: many messages with progress and per-message results.

``send_batch`` (the contract's) sends ``create()`` argument dicts, pipelined through a
connection pool (one connection by default); ``send_rows`` sends a compiled
:class:`~fluxmail.compose.MessageTemplate` to rows of data through a pool, which is what a CSV
of thousands of recipients wants.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

from fluxmail.errors import FluxMailException, is_transient, send_failed
from fluxmail.processes import fork_context, render_rows, send_rows_in_processes
from fluxmail.progress import ProgressBar
from fluxmail.protocol.commands import Envelope
from fluxmail.protocol.transaction import Outcome
from fluxmail.ratelimit import RateLimit
from fluxmail.result import SendResult

if TYPE_CHECKING:
    from fluxmail.client import FluxMail
    from fluxmail.compose import MessageTemplate

Message = Mapping[str, Any]
OnSuccess = Callable[[int, Message], object]
#: ``on_error(index, message, exc)``, or 0.3.x's ``on_error(index, exc)``.
OnError = (
    Callable[[int, Message, FluxMailException], object] | Callable[[int, FluxMailException], object]
)


class BatchReport(dict[str, Any]):
    """What a batch did: the dict 0.3.x returned, ``{"sent", "failed", "total", "errors"}``
    (``errors`` holds ``(index, exception)`` in index order), so it still compares equal to
    one written out by hand.

    ``results`` (an attribute, not a key, so the dict stays 0.3.x's) holds one
    :class:`SendResult` per message, who was accepted and refused, or ``None`` for a message
    that failed.
    """

    def __init__(self, total: int) -> None:
        super().__init__(sent=0, failed=0, total=total, errors=[])
        self.results: list[SendResult | None] = [None] * total


class RowsReport(TypedDict):
    """What :meth:`BulkSender.send_rows` did: counts, and ``(row index, exception)`` for
    every row that failed (successes are reported through ``on_result``, not kept)."""

    sent: int
    failed: int
    total: int
    errors: list[tuple[int, FluxMailException]]


#: ``on_result(row_index, row, outcome)``: a SendResult or the FluxMailException that ended it.
OnRowResult = Callable[[int, Mapping[str, Any], "Outcome"], object]


class BulkSender:
    """Send a batch of messages, each a dict of ``FluxMail.create()`` arguments.

    Every message is attempted (with the mailer's retries); a failure is recorded and the batch
    goes on, also for a message dict ``create()`` cannot take (an unknown key, not a mapping):
    that one is counted as failed with ``send_failed``. ``on_success(index, message)`` and
    ``on_error(index, message, exc)`` are called as each message finishes (from the pool's
    worker thread with ``max_connections`` > 1); an ``on_error`` that takes two arguments is
    called as 0.3.x called it, ``on_error(index, exc)``.

    The messages are built with ``create()`` and sent pipelined through the mailer's
    connection pool: one connection by default (the mailer's own inside ``with``),
    ``max_connections`` to use more; ``max_per_second`` > 0 paces the sends with the pool's
    :class:`~fluxmail.ratelimit.RateLimiter`. A relay failure is reported as ``send_failed``
    chained to the relay's error, as ``send()`` raises it.
    """

    def __init__(self, mailer: FluxMail) -> None:
        self.mailer = mailer

    def send_batch(
        self,
        messages: Iterable[Message],
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        progress: bool = True,
        max_per_second: float = 0,
        *,
        max_connections: int = 1,
    ) -> BatchReport:
        options = _pool_options(max_per_second, max_connections)
        batch = _Batch(self.mailer, list(messages), on_success, on_error, progress)
        if self.mailer._outlook is not None:  # Outlook sends one by one, through COM
            try:
                for index in range(len(batch.messages)):
                    batch.send_alone(index)
            finally:
                batch.close()
            return batch.report
        try:
            with self.mailer._session_pool(**options) as pool:
                for start, chunk in _chunks(batch.messages, CHUNK):
                    items, where = batch.build(start, chunk)
                    if items:
                        pool.send_many(items, batch.forward(start, where))
        finally:
            batch.close()
        return batch.report

    async def send_batch_async(
        self,
        messages: Iterable[Message],
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        progress: bool = True,
        max_per_second: float = 0,
        *,
        max_connections: int = 1,
    ) -> BatchReport:
        """The asyncio twin of :meth:`send_batch`: the same decisions, awaited.

        Outlook cannot send asynchronously, so an Outlook mailer is ``invalid_config`` here,
        before anything is built (as in 0.3.x); use :meth:`send_batch`.
        """
        if not self.mailer.is_smtp():
            raise FluxMailException(
                "send_batch_async() sends over SMTP only; use send_batch() with Outlook",
                "invalid_config",
            )
        options = _pool_options(max_per_second, max_connections)
        batch = _Batch(self.mailer, list(messages), on_success, on_error, progress)
        try:
            async with self.mailer._async_session_pool(**options) as pool:
                for start, chunk in _chunks(batch.messages, CHUNK):
                    items, where = batch.build(start, chunk)
                    if items:
                        await pool.send_many(items, batch.forward(start, where))
        finally:
            batch.close()
        return batch.report

    def send_rows(
        self,
        template: MessageTemplate,
        rows: Iterable[Mapping[str, Any]],
        *,
        to: str = "email",
        on_result: OnRowResult | None = None,
        progress: bool = True,
        chunk_size: int = 1000,
        processes: int = 1,
        **pool_options: Any,
    ) -> RowsReport:
        """Send ``template`` to each row (the address in column ``to``, the row as context).

        The fast path for personalised bulk mail: rows are rendered with the compiled
        template and sent through a connection pool (``pool_options``: max_connections,
        rate_limit, ...), ``chunk_size`` rows at a time so a large file never sits in memory
        whole. A row that cannot be rendered (a bad address, a missing field) fails alone.

        ``processes`` > 1 renders and sends from that many forked worker processes (one core
        each), each with its own asyncio pool of ``pool_options`` (``max_connections`` is per
        process; a rate limit is shared out so that together they keep to it); ``on_result``
        and the progress bar still run here, in this thread, as each row settles. See
        :mod:`fluxmail.processes`; ``invalid_config`` where processes cannot be forked.
        """
        # Checked (invalid_config) before anything is read or sent.
        many = not (type(processes) is int and processes == 1) and bool(fork_context(processes))
        report: RowsReport = {"sent": 0, "failed": 0, "total": 0, "errors": []}
        bar = ProgressBar(0) if progress else None
        lock = threading.Lock()

        def settle(index: int, row: Mapping[str, Any], outcome: Outcome) -> None:
            with lock:  # pool workers call this from their threads
                ok = isinstance(outcome, SendResult)
                report["sent" if ok else "failed"] += 1
                if isinstance(outcome, FluxMailException):
                    report["errors"].append((index, outcome))
                if bar is not None:
                    bar.update(ok=ok)
                if on_result is not None:
                    on_result(index, row, outcome)

        def read(total: int) -> None:
            report["total"] = total
            if bar is not None:
                bar.total = total

        try:
            if many:
                send_rows_in_processes(
                    self.mailer,
                    template,
                    rows,
                    to=to,
                    settle=settle,
                    processes=processes,
                    pool_options=pool_options,
                    on_total=read,
                )
                return report
            with self.mailer.pool(**pool_options) as pool:
                for start, chunk in _chunks(rows, chunk_size):
                    read(report["total"] + len(chunk))

                    def failed(index: int, exc: FluxMailException) -> None:
                        settle(index, chunk[index - start], exc)  # noqa: B023 - called at once

                    items, where = render_rows(template, enumerate(chunk, start), to, failed)
                    pool.send_many(items, _forward(settle, where, chunk, start))
        finally:
            if bar is not None:
                bar.close()
        return report


#: Messages built (and held in memory) at a time by ``send_batch``.
CHUNK = 1000


class _Batch:
    """Everything ``send_batch`` and ``send_batch_async`` decide, written once: building each
    message, settling each outcome into the report, the callbacks and the progress bar. The
    two methods are only the shells that run it with or without ``await``."""

    def __init__(
        self,
        mailer: FluxMail,
        messages: list[Message],
        on_success: OnSuccess | None,
        on_error: OnError | None,
        progress: bool,
    ) -> None:
        self.mailer, self.messages = mailer, messages
        self.on_success, self.on_error = on_success, _error_callback(on_error)
        self.report = BatchReport(len(messages))
        self.bar = ProgressBar(len(messages)) if progress else None
        self._lock = threading.Lock()  # pool workers settle from their threads

    def build(
        self, start: int, chunk: list[Message]
    ) -> tuple[list[tuple[Envelope, bytes]], list[int]]:
        """The wire items of ``chunk`` (messages ``start``...) and the index of each; a message
        ``create()`` refuses is settled as failed at once."""
        items, where = [], []
        for offset, message in enumerate(chunk):
            try:
                items.append(self._create(start + offset, message)._draft_bytes())
            except FluxMailException as exc:
                self.settle(start + offset, exc)
            else:
                where.append(start + offset)
        return items, where

    def _create(self, index: int, message: Message) -> FluxMail:
        """``create(**message)``; a dict it cannot take at all (not a mapping, an unknown
        key: Python's ``TypeError``) is that message's ``send_failed``, not the batch's end."""
        try:
            return self.mailer.create(**message)
        except TypeError as exc:
            raise send_failed(f"Message {index} failed: {exc}", exc) from exc

    def forward(self, start: int, where: list[int]) -> Callable[[int, Outcome], None]:
        """The pool's ``on_result``: its index among the built items back to the batch's."""

        def forward(position: int, outcome: Outcome) -> None:
            if isinstance(outcome, FluxMailException):
                attempts = self.mailer.retry.attempts if is_transient(outcome) else 1
                failed = self.mailer._send_failed(outcome, attempts)
                failed.__cause__ = outcome
                outcome = failed
            self.settle(where[position], outcome)

        return forward

    def send_alone(self, index: int) -> None:
        """Send message ``index`` on its own with ``create().send()`` (Outlook, not SMTP)."""
        message = self.messages[index]
        try:
            self._create(index, message).send()
        except FluxMailException as exc:
            self.settle(index, exc)
        else:
            with self._lock:
                _succeeded(self.report, self.bar, self.on_success, index, message, None)

    def settle(self, index: int, outcome: Outcome) -> None:
        message = self.messages[index]
        with self._lock:
            if isinstance(outcome, SendResult):
                self.mailer._remember(outcome)
                _succeeded(self.report, self.bar, self.on_success, index, message, outcome)
            else:
                _failed(self.report, self.bar, self.on_error, index, message, outcome)

    def close(self) -> None:
        self.report["errors"].sort(key=lambda error: error[0])
        if self.bar is not None:
            self.bar.close()


def _forward(
    settle: OnRowResult, where: list[int], chunk: list[Mapping[str, Any]], start: int
) -> Callable[[int, Outcome], None]:
    """Map the pool's index among rendered items back to the row it came from (``where``
    holds row indexes, the chunk's first being ``start``)."""

    def forward(index: int, outcome: Outcome) -> None:
        row = where[index]
        settle(row, chunk[row - start], outcome)

    return forward


def _chunks(
    rows: Iterable[Mapping[str, Any]], size: int
) -> Iterator[tuple[int, list[Mapping[str, Any]]]]:
    """``(index of the first row, rows)`` for consecutive chunks of ``size`` rows."""
    iterator = iter(rows)
    start = 0
    while chunk := list(itertools.islice(iterator, size)):
        yield start, chunk
        start += len(chunk)


def _pool_options(max_per_second: float, max_connections: int) -> dict[str, Any]:
    """The pool's options for a batch, checked before anything is built or connected."""
    if isinstance(max_per_second, bool) or not isinstance(max_per_second, int | float):
        raise FluxMailException(
            f"max_per_second must be a number, got {max_per_second!r}", "invalid_config"
        )
    if not max_per_second >= 0:  # also refuses NaN
        raise FluxMailException(
            f"max_per_second must be 0 (no limit) or more, got {max_per_second!r}",
            "invalid_config",
        )
    # burst 1: messages go out evenly spaced, never in a burst after a slow one.
    limit = RateLimit(per_second=max_per_second) if max_per_second else None
    return {"max_connections": max_connections, "rate_limit": limit}


def _error_callback(
    on_error: OnError | None,
) -> Callable[[int, Message, FluxMailException], object] | None:
    """``on_error`` called as ``(index, message, exc)``, adapted once for a callable that
    takes 0.3.x's two arguments ``(index, exc)``.

    A callable whose signature cannot be read (some builtins) gets the three arguments.
    """
    if on_error is None:
        return None
    try:
        inspect.signature(on_error).bind(0, {}, None)
    except TypeError:
        legacy = cast("Callable[[int, FluxMailException], object]", on_error)

        def two(index: int, message: Message, exc: FluxMailException) -> object:
            return legacy(index, exc)

        return two
    except ValueError:
        pass
    return cast("Callable[[int, Message, FluxMailException], object]", on_error)


def _succeeded(
    report: BatchReport,
    bar: ProgressBar | None,
    callback: OnSuccess | None,
    index: int,
    message: Message,
    result: SendResult | None,
) -> None:
    report["sent"] += 1
    report.results[index] = result
    if bar is not None:
        bar.update(ok=True)
    if callback is not None:
        callback(index, message)


def _failed(
    report: BatchReport,
    bar: ProgressBar | None,
    callback: Callable[[int, Message, FluxMailException], object] | None,
    index: int,
    message: Message,
    exc: FluxMailException,
) -> None:
    report["failed"] += 1
    report["errors"].append((index, exc))
    if bar is not None:
        bar.update(ok=False)
    if callback is not None:
        callback(index, message, exc)
