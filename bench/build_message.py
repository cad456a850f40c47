"""Micro-benchmark: how long ``FluxMail.create()`` takes to build a message, against the
standard library's ``email.message.EmailMessage`` building the same message, in one run.

``python bench/build_message.py [-n N] [-r R] [--quick] [--profile plain|html]``

Two messages, both the benchmark workload's (``workload.py``, about 2 KB, personalised per
message ``i``): ``plain`` (text/plain) and ``html`` (multipart/alternative, text/plain and
text/html). Each builder makes N fresh messages per round and turns each into its wire bytes:

* ``create``: ``mailer.create(subject, [to], body, ...)`` (validation included), then the
  bytes it would send (``display()`` and ``send()`` use the same bytes);
* ``email``: ``EmailMessage()``, From/To/Subject/Date/Message-ID set, ``set_content`` (and
  ``add_alternative``), ``as_bytes(policy=SMTP)``: what a user of ``smtplib`` writes.

stdout: a table (CPU microseconds per message, ``time.process_time``, steadier than the wall
clock on a shared machine; the median of R rounds, and ``email`` / ``create``
as a speed-up) and one JSON line with every number. The targets are those of the issue:
``create()`` at most 60 us for the plain message and 120 us for the HTML one; they are shown,
never asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from workload import (
    BODY_FORMAT,
    MESSAGE_ID_DOMAIN,
    SENDER,
    SUBJECT_FORMAT,
    name,
    recipient,
)

from fluxmail import FluxMail

TARGETS_US = {"plain": 60.0, "html": 120.0}
HTML_FORMAT = "<html><body><pre>{body}</pre></body></html>"


def fields(i: int) -> tuple[str, str, str, str]:
    """Subject, recipient, plain body and HTML body of message ``i``."""
    text = BODY_FORMAT.format(name=name(i), n=i)
    return SUBJECT_FORMAT.format(name=name(i)), recipient(i), text, HTML_FORMAT.format(body=text)


def build_create(kind: str, count: int) -> Callable[[], int]:
    mailer = FluxMail("smtp", "localhost", sender=SENDER)
    inputs = [fields(i) for i in range(count)]

    def run() -> int:
        total = 0
        for subject, to, text, html in inputs:
            if kind == "plain":
                mailer.create(subject, [to], text)
            else:
                mailer.create(subject, [to], html, html_body=True, plain_body=text)
            draft = mailer._draft  # the bytes send() puts on the wire
            assert draft is not None
            total += len(draft.data)
        return total

    return run


def build_email(kind: str, count: int) -> Callable[[], int]:
    inputs = [fields(i) for i in range(count)]

    def run() -> int:
        total = 0
        for subject, to, text, html in inputs:
            msg = EmailMessage()
            msg["From"] = SENDER
            msg["To"] = to
            msg["Subject"] = subject
            msg["Date"] = formatdate(localtime=True)
            msg["Message-ID"] = make_msgid(domain=MESSAGE_ID_DOMAIN)
            msg.set_content(text)
            if kind == "html":
                msg.add_alternative(html, subtype="html")
            total += len(msg.as_bytes(policy=SMTP))
        return total

    return run


BUILDERS = {"create": build_create, "email": build_email}


def measure(count: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """CPU microseconds per message of every builder and kind, per round (interleaved)."""
    runs = {kind: {b: build(kind, count) for b, build in BUILDERS.items()} for kind in TARGETS_US}
    times: dict[str, dict[str, list[float]]] = {k: {b: [] for b in BUILDERS} for k in TARGETS_US}
    for builders in runs.values():  # warm-up: imports, caches, first Date line
        for run in builders.values():
            run()
    for _ in range(rounds):
        for kind, builders in runs.items():
            for builder, run in builders.items():
                started = time.process_time()
                run()
                times[kind][builder].append((time.process_time() - started) / count * 1e6)
    return times


def profile(kind: str, count: int) -> None:
    from pyinstrument import Profiler

    run = build_create(kind, count)
    run()
    profiler = Profiler(interval=0.0001)
    profiler.start()
    for _ in range(5):
        run()
    profiler.stop()
    sys.stderr.write(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--messages", type=int, default=2000)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N=100, R=1: a smoke run")
    parser.add_argument("--profile", choices=sorted(TARGETS_US), help="profile create() too")
    args = parser.parse_args(argv)
    count, rounds = (100, 1) if args.quick else (args.messages, args.repeats)
    if count < 1 or rounds < 1:
        parser.error("-n and -r must be at least 1")
    times = measure(count, rounds)
    report: dict[str, object] = {"messages": count, "rounds": rounds, "kinds": {}}
    print(f"{'message':8} {'create us':>10} {'email us':>10} {'speed-up':>9} {'target':>8}  met")
    for kind, builders in times.items():
        create = statistics.median(builders["create"])
        stdlib = statistics.median(builders["email"])
        met = create <= TARGETS_US[kind]
        print(
            f"{kind:8} {create:10.1f} {stdlib:10.1f} {stdlib / create:8.1f}x "
            f"{TARGETS_US[kind]:7.0f}  {'yes' if met else 'no'}"
        )
        report["kinds"][kind] = {  # type: ignore[index]
            "create_us": create,
            "email_us": stdlib,
            "speedup": stdlib / create,
            "target_us": TARGETS_US[kind],
            "met": met,
            "rounds": builders,
        }
    print(json.dumps(report))
    if args.profile:
        profile(args.profile, count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
