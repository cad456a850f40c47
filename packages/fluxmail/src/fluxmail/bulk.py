"""``BulkSender``: many messages with progress and per-message results.

``send_batch`` (the contract's) sends ``create()`` argument dicts over one connection;
``send_rows`` sends a compiled :class:`~fluxmail.compose.MessageTemplate` to rows of data
through a connection pool, which is what a CSV of thousands of recipients wants.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from fluxmail.errors import FluxMailException
from fluxmail.progress import ProgressBar
from fluxmail.protocol.transaction import Outcome
from fluxmail.result import SendResult

if TYPE_CHECKING:
    from fluxmail.client import FluxMail
    from fluxmail.compose import MessageTemplate

Message = Mapping[str, Any]
OnSuccess = Callable[[int, Message], object]
OnError = Callable[[int, Message, FluxMailException], object]


class BatchReport(TypedDict):
    """What a batch did. ``errors`` holds ``(index, exception)``; ``results`` one
    :class:`SendResult` per message (``None`` for a failed one)."""

    sent: int
    failed: int
    total: int
    errors: list[tuple[int, FluxMailException]]
    results: list[SendResult | None]


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
    goes on. ``on_success(index, message)`` and ``on_error(index, message, exc)`` are called as
    each message finishes.
    """

    def __init__(self, mailer: FluxMail) -> None:
        self.mailer = mailer

    def send_batch(
        self,
        messages: Iterable[Message],
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        progress: bool = True,
    ) -> BatchReport:
        batch = list(messages)
        report = _new_report(len(batch))
        bar = ProgressBar(len(batch)) if progress else None
        mailer = self.mailer
        owns_session = not mailer.in_context
        if owns_session:
            mailer.__enter__()
        try:
            for index, message in enumerate(batch):
                try:
                    mailer.create(**message).send()
                except FluxMailException as exc:
                    _failed(report, bar, on_error, index, message, exc)
                else:
                    _succeeded(report, bar, on_success, index, message, mailer.last_result)
        finally:
            if owns_session:
                mailer.close()
            if bar is not None:
                bar.close()
        return report

    async def send_batch_async(
        self,
        messages: Iterable[Message],
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        progress: bool = True,
        max_per_second: float = 0,
    ) -> BatchReport:
        """The asyncio twin of :meth:`send_batch`; ``max_per_second`` > 0 paces the sends."""
        batch = list(messages)
        report = _new_report(len(batch))
        bar = ProgressBar(len(batch)) if progress else None
        mailer = self.mailer
        owns_session = not mailer.in_context
        if owns_session:
            await mailer.__aenter__()
        started = time.monotonic()
        try:
            for index, message in enumerate(batch):
                if max_per_second > 0:
                    # Pace against the start, not the previous send, so slow sends do not
                    # push the whole batch later and fast ones cannot burst.
                    wait = started + index / max_per_second - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                try:
                    await mailer.create(**message).send_async()
                except FluxMailException as exc:
                    _failed(report, bar, on_error, index, message, exc)
                else:
                    _succeeded(report, bar, on_success, index, message, mailer.last_result)
        finally:
            if owns_session:
                await mailer.aclose()
            if bar is not None:
                bar.close()
        return report

    def send_rows(
        self,
        template: MessageTemplate,
        rows: Iterable[Mapping[str, Any]],
        *,
        to: str = "email",
        on_result: OnRowResult | None = None,
        progress: bool = True,
        chunk_size: int = 1000,
        **pool_options: Any,
    ) -> RowsReport:
        """Send ``template`` to each row (the address in column ``to``, the row as context).

        The fast path for personalised bulk mail: rows are rendered with the compiled
        template and sent through a connection pool (``pool_options``: max_connections,
        rate_limit, ...), ``chunk_size`` rows at a time so a large file never sits in memory
        whole. A row that cannot be rendered (a bad address, a missing field) fails alone.
        """
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

        try:
            with self.mailer.pool(**pool_options) as pool:
                for start, chunk in _chunks(rows, chunk_size):
                    report["total"] += len(chunk)
                    if bar is not None:
                        bar.total = report["total"]
                    items, where = [], []
                    for offset, row in enumerate(chunk):
                        try:
                            items.append(template.render(str(row.get(to, "")), **row))
                            where.append(offset)
                        except FluxMailException as exc:
                            settle(start + offset, row, exc)
                    pool.send_many(items, _forward(settle, start, where, chunk))
        finally:
            if bar is not None:
                bar.close()
        return report


def _forward(
    settle: OnRowResult, start: int, where: list[int], chunk: list[Mapping[str, Any]]
) -> Callable[[int, Outcome], None]:
    """Map the pool's index among rendered items back to the row it came from."""

    def forward(index: int, outcome: Outcome) -> None:
        settle(start + where[index], chunk[where[index]], outcome)

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


def _new_report(total: int) -> BatchReport:
    return {"sent": 0, "failed": 0, "total": total, "errors": [], "results": [None] * total}


def _succeeded(
    report: BatchReport,
    bar: ProgressBar | None,
    callback: OnSuccess | None,
    index: int,
    message: Message,
    result: SendResult | None,
) -> None:
    report["sent"] += 1
    report["results"][index] = result
    if bar is not None:
        bar.update(ok=True)
    if callback is not None:
        callback(index, message)


def _failed(
    report: BatchReport,
    bar: ProgressBar | None,
    callback: OnError | None,
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
