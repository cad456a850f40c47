"""``BulkSender``: many messages over one connection, with progress and per-message results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from fluxmail.errors import FluxMailException
from fluxmail.progress import ProgressBar
from fluxmail.result import SendResult

if TYPE_CHECKING:
    from fluxmail.client import FluxMail

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
