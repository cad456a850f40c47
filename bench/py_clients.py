"""One Python client's run of the benchmark, in a process of its own.

``python bench/py_clients.py CLIENT --port P --messages N [--connections C] [--profile]``
sends the workload of :mod:`workload` (N messages, each built fresh inside the timed section)
to the SMTP sink on ``127.0.0.1:P`` and prints exactly one JSON line on stdout::

    {"client": ..., "status": "ok" | "failed" | "unavailable", "messages": N,
     "accepted": k, "seconds": t, "cpu_seconds": c, "message_bytes": b, "errors": [...],
     "note": ...}

``accepted`` counts the messages whose final reply the client saw as an acceptance (250 for
the one recipient); ``status`` is ``ok`` only when ``accepted == N``. ``seconds`` covers
building every message, connecting, sending and closing, and nothing else (no interpreter
start, no imports); ``cpu_seconds`` is this process's CPU time over the same section.
``message_bytes`` is the size of message 0 as the client puts it on the wire, measured
after the clock stops. Exit status: 0 ok, 1 failed, 3 unavailable (the library or API is
missing), 2 bad usage.

``--profile`` runs the same timed section under pyinstrument and writes its text report to
stderr; its ``seconds`` then include the profiler's overhead.

Clients: ``smtplib`` and ``aiosmtplib`` (one connection each, messages built with the
``email`` package), ``fluxmail-1`` (FluxMail's sync pool with one connection),
``fluxmail-pool`` (FluxMail's asyncio pool with ``--connections`` connections, on the
default asyncio event loop), ``fluxmail-pool-uvloop`` (the same on uvloop's loop),
``fluxmail-pool-2proc`` (``BulkSender.send_rows(processes=2)``: two worker processes, each
with an asyncio pool of half the connections, on uvloop when it is installed), and the
everyday API over one connection: ``fluxmail-create`` (``create().send()`` in a ``with``
block) and ``fluxmail-bulksender`` (``BulkSender.send_batch``).
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import json
import resource
import smtplib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from workload import (
    BODY_FORMAT,
    BODY_TEMPLATE,
    MESSAGE_ID_DOMAIN,
    SENDER,
    SUBJECT_FORMAT,
    SUBJECT_TEMPLATE,
    name,
    recipient,
)

HOST = "127.0.0.1"
# What the Python peers say in EHLO: without it smtplib and aiosmtplib ask for the machine's
# fully qualified name, a DNS lookup that can stall on a machine without a resolver.
EHLO_NAME = "bench.example"
TIMEOUT = 30.0
MAX_ERRORS = 5  # errors quoted in the output; the count is in ``accepted``

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


@dataclass
class Outcome:
    """What one run produced; serialised as the worker's JSON line."""

    client: str
    messages: int
    status: str = "ok"
    accepted: int = 0
    seconds: float | None = None
    cpu_seconds: float | None = None
    message_bytes: int | None = None
    errors: list[str] = field(default_factory=list)
    note: str | None = None

    def error(self, text: str) -> None:
        """Remember an error, quoting only the first few (a dead connection repeats itself)."""
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def finish(self) -> Outcome:
        """Set ``status`` from the count: a run that lost even one message is a failure."""
        if self.status == "ok" and self.accepted != self.messages:
            self.status = "failed"
        return self


class UnavailableError(Exception):
    """The client's library, or the API the benchmark is written against, cannot be imported."""


@contextmanager
def timed(out: Outcome) -> Iterator[None]:
    """Time the block into ``out``: wall clock, and this process's CPU time (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        out.seconds = time.perf_counter() - wall
        out.cpu_seconds = time.process_time() - cpu


@contextmanager
def profiled(enabled: bool) -> Iterator[None]:
    """Run the block under pyinstrument when ``enabled`` and print the report to stderr."""
    if not enabled:
        yield
        return
    from pyinstrument import Profiler  # only the profile run needs it

    profiler = Profiler()
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False), file=sys.stderr)


def build_email(i: int) -> EmailMessage:
    """Message ``i`` built the way the standard library's documentation shows."""
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = recipient(i)
    msg["Subject"] = SUBJECT_FORMAT.format(name=name(i))
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=MESSAGE_ID_DOMAIN)
    msg.set_content(BODY_FORMAT.format(name=name(i), n=i))
    return msg


def run_smtplib(port: int, n: int, profile: bool) -> Outcome:
    """smtplib over one connection: build, flatten with ``as_bytes`` and ``sendmail`` each one.

    ``sendmail`` raises unless the relay answered 250 to the data, and returns the refused
    recipients, so a message counts as accepted when it returned an empty mapping.
    """
    out = Outcome("smtplib", n)
    with timed(out), profiled(profile):
        try:
            with smtplib.SMTP(HOST, port, local_hostname=EHLO_NAME, timeout=TIMEOUT) as smtp:
                for i in range(n):
                    data = build_email(i).as_bytes(policy=email.policy.SMTP)
                    try:
                        refused = smtp.sendmail(SENDER, [recipient(i)], data)
                    except smtplib.SMTPException as exc:
                        out.error(f"message {i}: {exc!r}")
                        continue
                    if refused:
                        out.error(f"message {i}: refused {refused!r}")
                    else:
                        out.accepted += 1
        except (OSError, smtplib.SMTPException) as exc:
            out.error(f"connection: {exc!r}")
    out.message_bytes = len(build_email(0).as_bytes(policy=email.policy.SMTP))
    return out


def run_aiosmtplib(port: int, n: int, profile: bool) -> Outcome:
    """aiosmtplib's ``SMTP`` over one connection, ``send_message`` for each fresh message.

    ``send_message`` raises unless the data was answered 250 and returns the refused
    recipients, so a message counts as accepted when that mapping is empty.
    """
    try:
        import aiosmtplib  # a missing peer is reported, not a crash
    except ImportError as exc:
        raise UnavailableError(f"aiosmtplib is not importable: {exc}") from exc

    out = Outcome("aiosmtplib", n)

    async def send_all() -> None:
        smtp = aiosmtplib.SMTP(
            hostname=HOST,
            port=port,
            local_hostname=EHLO_NAME,
            timeout=TIMEOUT,
            start_tls=False,  # the sink offers no STARTTLS; say so rather than let it probe
        )
        try:
            async with smtp:
                for i in range(n):
                    try:
                        refused, _reply = await smtp.send_message(build_email(i))
                    except aiosmtplib.SMTPException as exc:
                        out.error(f"message {i}: {exc!r}")
                        continue
                    if refused:
                        out.error(f"message {i}: refused {refused!r}")
                    else:
                        out.accepted += 1
        except (OSError, aiosmtplib.SMTPException) as exc:
            out.error(f"connection: {exc!r}")

    with timed(out), profiled(profile):
        asyncio.run(send_all())
    # aiosmtplib flattens with the message's own policy and CRLF, as email.policy.SMTP does.
    out.message_bytes = len(build_email(0).as_bytes(policy=email.policy.SMTP))
    return out


def _fluxmail_api() -> tuple[Any, Any, type[Any], type[BaseException]]:
    """Import the FluxMail names the benchmark uses, or raise :class:`UnavailableError`."""
    try:
        # Imported here so that a missing API is reported as such, not as a crash.
        # (MessageTemplate is the bulk API being written; mypy may not know it yet.)
        from fluxmail import (  # type: ignore[attr-defined,unused-ignore]
            FluxMail,
            FluxMailException,
            MessageTemplate,
            SendResult,
        )
    except ImportError as exc:
        raise UnavailableError(f"FluxMail's bulk API is not importable: {exc}") from exc
    return FluxMail, MessageTemplate, SendResult, FluxMailException


def _count_fluxmail(
    out: Outcome, items: list[Any], results: list[Any], send_result: type[Any]
) -> None:
    """Count the results that are a 250 for exactly their own message's recipient.

    ``send_many`` answers one entry per item, a ``SendResult`` or the ``FluxMailException``
    that message ended with. Matching addresses as a multiset (not by position) keeps the
    check honest without assuming the order of the results.
    """
    if len(results) != len(items):
        out.error(f"send_many returned {len(results)} results for {len(items)} items")
    expected = {recipient(i) for i in range(out.messages)}
    for i, result in enumerate(results):
        if not isinstance(result, send_result):
            out.error(f"result {i}: {result!r}")
        elif result.reply.code != 250 or len(result.accepted) != 1:
            out.error(f"result {i}: reply {result.reply!r}, accepted {result.accepted!r}")
        elif result.accepted[0] not in expected:
            out.error(f"result {i}: accepted unexpected or repeated {result.accepted[0]!r}")
        else:
            expected.discard(result.accepted[0])
            out.accepted += 1


def _uvloop_run() -> Callable[[Any], Any]:
    """``uvloop.run``, or :class:`UnavailableError` if uvloop is not installed."""
    try:
        import uvloop
    except ImportError as exc:
        raise UnavailableError(f"uvloop is not installed: {exc}") from exc
    return uvloop.run  # type: ignore[no-any-return,unused-ignore]


def run_fluxmail(
    port: int, n: int, profile: bool, connections: int, use_async: bool, loop: str = "asyncio"
) -> Outcome:
    """FluxMail: render every message from a ``MessageTemplate``, then ``send_many``.

    With ``use_async`` false this is the sync pool with one connection (``fluxmail-1``);
    otherwise the asyncio pool with ``connections`` connections, on the default asyncio
    event loop (``fluxmail-pool``) or, with ``loop="uvloop"``, on uvloop's
    (``fluxmail-pool-uvloop``: ``uvloop.run``, as an application that chose it would). The
    template is compiled before the clock starts (a campaign compiles it once); rendering
    every message is inside the timed section, as building is for the peers.
    """
    flux_mail, message_template, send_result, flux_error = _fluxmail_api()
    run_loop: Callable[[Any], Any] = asyncio.run if loop == "asyncio" else _uvloop_run()
    key = (
        "fluxmail-1" if not use_async else f"fluxmail-pool{'' if loop == 'asyncio' else '-' + loop}"
    )
    out = Outcome(key, n)
    tpl = message_template(sender=SENDER, subject=SUBJECT_TEMPLATE, text=BODY_TEMPLATE)
    mailer = flux_mail("smtp", HOST, port=port, timeout=TIMEOUT)
    items: list[Any] = []
    results: list[Any] = []

    def render_all() -> list[Any]:
        return [tpl.render(recipient(i), name=name(i), n=i) for i in range(n)]

    async def send_async() -> tuple[list[Any], list[Any]]:
        batch = render_all()
        async with mailer.async_pool(max_connections=connections) as pool:
            return batch, list(await pool.send_many(batch))

    with timed(out), profiled(profile):
        try:
            if use_async:
                items, results = run_loop(send_async())
            else:
                items = render_all()
                with mailer.pool(max_connections=1) as pool:
                    results = list(pool.send_many(items))
        except (OSError, flux_error) as exc:
            out.error(f"pool: {exc!r}")
    if items:
        _envelope, data = items[0]
        out.message_bytes = len(data)
    if results:
        _count_fluxmail(out, items, results, send_result)
    return out


def run_fluxmail_processes(port: int, n: int, profile: bool, connections: int) -> Outcome:
    """FluxMail from two processes (``fluxmail-pool-2proc``): ``BulkSender.send_rows`` with
    ``processes=2``, each worker process rendering its share of the rows from the compiled
    ``MessageTemplate`` and sending it over an asyncio pool of ``connections // 2``
    connections (the same total as ``fluxmail-pool``). Starting the workers (a fork each) is
    inside the timed section; ``cpu_seconds`` counts this process and its ended children."""
    flux_mail, message_template, send_result, flux_error = _fluxmail_api()
    from fluxmail import BulkSender

    out = Outcome("fluxmail-pool-2proc", n)
    tpl = message_template(sender=SENDER, subject=SUBJECT_TEMPLATE, text=BODY_TEMPLATE)
    mailer = flux_mail("smtp", HOST, port=port, timeout=TIMEOUT)
    results: list[Any] = [None] * n

    def on_result(index: int, row: Any, outcome: Any) -> None:
        results[index] = outcome

    rows = [{"email": recipient(i), "name": name(i), "n": i} for i in range(n)]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with timed(out), profiled(profile):
        try:
            BulkSender(mailer).send_rows(
                tpl,
                rows,
                on_result=on_result,
                progress=False,
                processes=2,
                max_connections=max(connections // 2, 1),
            )
        except (OSError, flux_error) as exc:
            out.error(f"send_rows: {exc!r}")
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert out.cpu_seconds is not None
    out.cpu_seconds += (ended.ru_utime - children.ru_utime) + (ended.ru_stime - children.ru_stime)
    out.message_bytes = len(tpl.render(recipient(0), name=name(0), n=0)[1])
    _count_fluxmail(out, [None] * n, results, send_result)
    return out


def _everyday_args(i: int) -> dict[str, Any]:
    """``create()``'s arguments for message ``i``: what a user of the everyday API passes."""
    return {
        "subject": SUBJECT_FORMAT.format(name=name(i)),
        "recipients": [recipient(i)],
        "body": BODY_FORMAT.format(name=name(i), n=i),
    }


def run_fluxmail_everyday(port: int, n: int, profile: bool, bulk: bool) -> Outcome:
    """FluxMail's everyday API over one connection, messages built with ``create()``.

    ``fluxmail-create``: ``with FluxMail(...) as m:`` then ``m.create(...).send()`` per message
    (each waits for its reply; ``last_result`` says who was accepted). ``fluxmail-bulksender``:
    ``BulkSender(m).send_batch([create() arguments...], progress=False)``, whose
    ``report.results`` holds one ``SendResult`` per message. Building the argument dicts is
    inside the timed section.
    """
    flux_mail, _template, send_result, flux_error = _fluxmail_api()
    from fluxmail import BulkSender

    out = Outcome("fluxmail-bulksender" if bulk else "fluxmail-create", n)
    mailer = flux_mail(
        "smtp", HOST, port=port, timeout=TIMEOUT, sender=SENDER, local_hostname=EHLO_NAME
    )
    results: list[Any] = []
    with timed(out), profiled(profile):
        try:
            if bulk:
                report = BulkSender(mailer).send_batch(
                    [_everyday_args(i) for i in range(n)], progress=False
                )
                results = list(report.results)
                for index, exc in report["errors"][:MAX_ERRORS]:
                    out.error(f"message {index}: {exc!r}")
            else:
                with mailer:
                    for i in range(n):
                        try:
                            mailer.create(**_everyday_args(i)).send()
                        except flux_error as exc:
                            out.error(f"message {i}: {exc!r}")
                            results.append(exc)
                        else:
                            results.append(mailer.last_result)
        except (OSError, flux_error) as exc:
            out.error(f"connection: {exc!r}")
    mailer.create(**_everyday_args(0))
    out.message_bytes = len(mailer._draft.data)
    if results:
        _count_fluxmail(out, [None] * n, results, send_result)
    return out


CLIENTS: dict[str, Callable[[argparse.Namespace], Outcome]] = {
    "smtplib": lambda a: run_smtplib(a.port, a.messages, a.profile),
    "aiosmtplib": lambda a: run_aiosmtplib(a.port, a.messages, a.profile),
    "fluxmail-1": lambda a: run_fluxmail(a.port, a.messages, a.profile, 1, use_async=False),
    "fluxmail-pool": lambda a: run_fluxmail(
        a.port, a.messages, a.profile, a.connections, use_async=True
    ),
    "fluxmail-pool-uvloop": lambda a: run_fluxmail(
        a.port, a.messages, a.profile, a.connections, use_async=True, loop="uvloop"
    ),
    "fluxmail-pool-2proc": lambda a: run_fluxmail_processes(
        a.port, a.messages, a.profile, a.connections
    ),
    "fluxmail-create": lambda a: run_fluxmail_everyday(a.port, a.messages, a.profile, bulk=False),
    "fluxmail-bulksender": lambda a: run_fluxmail_everyday(
        a.port, a.messages, a.profile, bulk=True
    ),
}


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one client once, print its JSON line, and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--port", type=positive, required=True)
    parser.add_argument("--messages", type=positive, required=True)
    parser.add_argument("--connections", type=positive, default=20)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = CLIENTS[args.client](args).finish()
    except UnavailableError as exc:
        out = Outcome(args.client, args.messages, status="unavailable", note=str(exc))
    print(json.dumps(asdict(out)), flush=True)
    return {"ok": EXIT_OK, "unavailable": EXIT_UNAVAILABLE}.get(out.status, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
