"""``fluxmail bulk``: send a template to every row of a CSV file, resumably.

    fluxmail bulk --csv PATH --sender ADDR --subject TEMPLATE (--text TEMPLATE | --text-file PATH)
        [--html-file PATH] [--reply-to ADDR] [--attachments PATH...] [--to-column NAME]
        [--connections N] [--processes N] [--rate PER_SECOND] [--burst N] [--max-per-hour N]
        [--log PATH]
        [--max-retries N] [--retry-delay S] [--dry-run] [--no-progress] [connection flags]

A run reads the CSV twice, streaming: once to check every row and count the work before
anything is sent (a malformed file mails no one), once to send. Rows go through
:meth:`fluxmail.bulk.BulkSender.send_rows`; each settled row is appended to the log (see
:mod:`fluxmail.cli.sendlog`) before the next result is handled, which is what makes a re-run
send only what is not yet sent. The exact guarantee is in the epilog below.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from fluxmail.bulk import BulkSender
from fluxmail.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    BadFlagsError,
    Parser,
    connection_flags,
    error,
    flag_or_env,
    int_at_least,
    mailer,
    non_negative_number,
    object_type_of,
    one_line,
    out,
    positive_number,
)
from fluxmail.cli.csvrows import CsvRows, Row
from fluxmail.cli.sendlog import History, SendLog, address_key
from fluxmail.client import FluxMail
from fluxmail.compose import MessageTemplate
from fluxmail.config import EmailObject
from fluxmail.errors import FluxMailException
from fluxmail.protocol.transaction import Outcome
from fluxmail.ratelimit import RateLimit

DEFAULT_CONNECTIONS = 4
DEFAULT_MAX_RETRIES = 2
_EXAMPLES_PER_CODE = 3  # errors shown per code in the summary
_DRY_RUN_LISTED = 50  # rows that fail to render, listed by --dry-run

_EPILOG = """\
The subject, --text and --html-file are Jinja templates; each CSV row is their context, one
variable per column ({{ name }} for a column "name"). The CSV must be UTF-8 (a BOM is fine)
with a header row; it is streamed, never loaded whole, and checked in full before anything is
sent. Connection flags fall back to the FLUXMAIL_* variables as for sending one message, and
--max-retries/--retry-delay to FLUXMAIL_MAX_RETRIES/FLUXMAIL_RETRY_DELAY.

log (--log, default CSVPATH.sent.log): JSON Lines, one object per settled row, appended and
written through as soon as the row settles:
  {"row": 3, "address": "ada@example.com", "status": "sent", "code": null,
   "reply": "250 2.0.0 Ok: queued as 4Fz1", "queue_id": "4Fz1", "at": "2025-06-01T09:30:12Z"}
row is the data row's number (1 = first after the header); status is sent or failed; code is
the error code of a failure; reply is the relay's final reply or the error text.

resuming: run the same command again. Rows whose address the log has as sent are skipped (and
counted as skipped); failed rows are tried again. Addresses compare case-insensitively, and a
second row for an address already taken in the same run is skipped as a duplicate, so no
address is mailed twice by this command. One exception: a message the relay accepted in the
instant before the process was killed (SIGKILL, power loss, a second Ctrl-C), when its log line
was not yet written, is sent again on resume: at most one message per connection (--connections)
per kill; with --processes N, each process also reports its results 32 at a time, so at most
32 more per process. A first Ctrl-C stops cleanly: the messages in flight finish and are
logged, nothing new starts. Two runs cannot share a log (it is locked). Retries share a limit
of SMTP itself: when the reply to a transmitted message is lost (a timeout, a dropped
connection), the retry may deliver it twice; --max-retries 0 rules that out.

processes (--processes N): one process sends on one core; with more cores, N processes each
render and send their share of the rows over their own --connections, while this process
reads the CSV, writes the log and draws the progress bar. --rate and --max-per-hour hold for
the whole run (each process gets 1/N of them). Needs fork (Linux, macOS).

exit codes: 0 every row sent or skipped (--dry-run: every row renders); 1 bad flag combination,
unreadable or malformed CSV/template/log file, missing --to-column; 2 FluxMail error that stops
the whole run (template syntax, bad sender, relay unreachable or refusing our login, invalid
config) or usage error; 3 the run completed but some rows failed (--dry-run: some rows do not
render); 99 unexpected error; 130 interrupted (Ctrl-C; the log stays consistent).
"""


class _Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised from the result callback to end the run after Ctrl-C (see _ctrl_c_stops)."""


# -- the command ----------------------------------------------------------------------------


def run(argv: list[str], env: Mapping[str, str]) -> int:
    """Send (or with ``--dry-run`` only render) the template to the CSV's rows.

    Returns 0 or 3; raises for the other exit codes (mapped by ``common.exit_code``).
    """
    started = time.monotonic()
    args = _parser().parse_args(argv)
    text, html = _bodies(args)
    rows = CsvRows(Path(args.csv), args.to_column)
    log_path = Path(args.log) if args.log else Path(f"{args.csv}.sent.log")
    if args.dry_run:
        return _dry_run(_template(args, text, html), rows, History.read(log_path))
    pool = _pool_options(args)
    sender = _mailer(args, env)
    template = _template(args, text, html)
    with SendLog(log_path) as log:
        tally = _plan(rows, log.history)
        if tally.pending:  # with nothing to send, do not even connect
            _check_then_send(sender, template, rows, log, tally, pool, started)
    out(tally.summary(time.monotonic() - started, log_path))
    return EXIT_SOME_FAILED if tally.failed else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fluxmail bulk",
        description="Send a personalised message to every row of a CSV file, resumably.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_flags()],
    )
    source = parser.add_argument_group("recipients")
    source.add_argument("--csv", required=True, metavar="PATH", help="UTF-8 CSV with a header")
    source.add_argument(
        "--to-column", default="email", metavar="NAME", help="column of addresses (email)"
    )
    source.add_argument("--log", metavar="PATH", help="resumable log (default CSVPATH.sent.log)")
    message = parser.add_argument_group("message (templates)")
    message.add_argument("--sender", required=True, metavar="ADDRESS", help="From address")
    message.add_argument("--subject", required=True, metavar="TEMPLATE")
    message.add_argument("--text", metavar="TEMPLATE", help="plain-text body")
    message.add_argument("--text-file", metavar="PATH", help="UTF-8 file with the text body")
    message.add_argument("--html-file", metavar="PATH", help="UTF-8 file with an HTML body")
    message.add_argument("--reply-to", metavar="ADDRESS")
    message.add_argument(
        "--attachments", action="extend", nargs="+", default=[], metavar="PATH",
        help="file to attach to every message; repeatable",
    )  # fmt: skip
    sending = parser.add_argument_group("sending")
    sending.add_argument(
        "--connections", type=int_at_least(1), default=DEFAULT_CONNECTIONS, metavar="N",
        help=f"connections in parallel, per process (default {DEFAULT_CONNECTIONS})",
    )  # fmt: skip
    sending.add_argument(
        "--processes", type=int_at_least(1), default=1, metavar="N",
        help="sending processes, each with its own --connections (default 1; one per core "
        "is the most that helps); --rate and --max-per-hour are shared out among them",
    )  # fmt: skip
    sending.add_argument(
        "--rate", type=positive_number, metavar="PER_SECOND", help="at most this many a second"
    )
    sending.add_argument(
        "--burst", type=int_at_least(1), metavar="N", help="with --rate: bursts of up to N"
    )
    sending.add_argument(
        "--max-per-hour", type=int_at_least(1), metavar="N", help="at most N in any hour"
    )
    sending.add_argument(
        "--max-retries", type=int_at_least(0), metavar="N",
        help=f"further attempts after a transient failure (default {DEFAULT_MAX_RETRIES})",
    )  # fmt: skip
    sending.add_argument(
        "--retry-delay", type=non_negative_number, metavar="SECONDS", help="default 1.0"
    )
    sending.add_argument(
        "--dry-run", action="store_true",
        help="render every row and report, without connecting or writing the log",
    )  # fmt: skip
    sending.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


# -- from flags to the pieces ---------------------------------------------------------------


def _bodies(args: argparse.Namespace) -> tuple[str, str | None]:
    """The text template (from ``--text`` or ``--text-file``, exactly one) and the HTML one."""
    if args.text is not None and args.text_file is not None:
        raise BadFlagsError("--text and --text-file exclude each other; pass one")
    if args.text is None and args.text_file is None:
        raise BadFlagsError("no text body: pass --text TEMPLATE or --text-file PATH")
    text = args.text if args.text is not None else _read_text("--text-file", args.text_file)
    html = _read_text("--html-file", args.html_file) if args.html_file is not None else None
    return text, html


def _read_text(flag: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BadFlagsError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BadFlagsError(f"cannot read {flag} {path}: not UTF-8 text ({exc})") from None


def _template(args: argparse.Namespace, text: str, html: str | None) -> MessageTemplate:
    """Compile the templates; FluxMailException (exit 2) for bad syntax or a bad address."""
    return MessageTemplate(
        sender=args.sender,
        subject=args.subject,
        text=text,
        html=html,
        reply_to=args.reply_to,
        attachments=args.attachments,
    )


def _rate_limit(args: argparse.Namespace) -> RateLimit | None:
    if args.burst is not None and args.rate is None:
        raise BadFlagsError("--burst only shapes --rate; pass --rate PER_SECOND too")
    if args.rate is None and args.max_per_hour is None:
        return None
    return RateLimit(
        per_second=args.rate or 0,
        burst=args.burst or 1,
        max_per_period=args.max_per_hour or 0,
        period=3600 if args.max_per_hour else 0,
    )


def _mailer(args: argparse.Namespace, env: Mapping[str, str]) -> FluxMail:
    if object_type_of(args.type, env) is not EmailObject.SMTP:
        raise BadFlagsError("bulk sends need an SMTP relay; --type outlook cannot send them")
    return mailer(
        args,
        env,
        max_retries=flag_or_env(
            args.max_retries, env, "FLUXMAIL_MAX_RETRIES", int, DEFAULT_MAX_RETRIES
        ),
        retry_delay=flag_or_env(args.retry_delay, env, "FLUXMAIL_RETRY_DELAY", float, 1.0),
    )


# -- which rows a run sends -----------------------------------------------------------------


class _Selector:
    """Decides per row, in file order: ``skipped`` when the log has its address as sent,
    ``duplicate`` when an earlier row of this run has the same address, else ``send``.

    A blank address is always ``send``: that row then fails on its own, as it should.
    """

    def __init__(self, history: History) -> None:
        self._sent = history.sent
        self._taken: set[str] = set()

    def verdict(self, row: Row, to_column: str) -> Literal["send", "skipped", "duplicate"]:
        key = address_key(row[to_column])
        if not key:
            return "send"
        if key in self._sent:
            return "skipped"
        if key in self._taken:
            return "duplicate"
        self._taken.add(key)
        return "send"


@dataclass
class _Tally:
    """A run's counts, and the first few errors of each code."""

    rows: int = 0
    pending: int = 0  # rows to send, as planned
    skipped: int = 0
    duplicates: int = 0
    sent: int = 0
    failed: int = 0
    errors: dict[str, list[str]] = field(default_factory=dict)
    error_counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def settle(self, row: Row, address: str, outcome: Outcome) -> None:
        """Count one settled row (called from the pool's worker threads)."""
        with self._lock:
            if not isinstance(outcome, FluxMailException):
                self.sent += 1
                return
            self.failed += 1
            code = outcome.code or "error"
            self.error_counts[code] = self.error_counts.get(code, 0) + 1
            examples = self.errors.setdefault(code, [])
            if len(examples) < _EXAMPLES_PER_CODE:
                examples.append(f"row {row.number} {address.strip()}: {one_line(outcome)}")

    def summary(self, elapsed: float, log: Path) -> str:
        """The final report: ``name: value`` lines, then the errors grouped by code."""
        lines = [
            f"rows:        {self.rows}",
            f"sent:        {self.sent}",
            f"failed:      {self.failed}",
            f"skipped:     {self.skipped} (already sent, per the log)",
            f"duplicates:  {self.duplicates} (address repeated in the CSV, not sent again)",
        ]
        if self.interrupted:
            lines.append(f"not sent:    {self.pending - self.sent - self.failed} (interrupted)")
        lines += [
            f"elapsed:     {elapsed:.2f} s",
            f"rate:        {self.sent / elapsed if elapsed > 0 else 0.0:.1f} messages/s",
            f"log:         {log}",
        ]
        return "\n".join(lines + self._error_lines())

    def _error_lines(self) -> list[str]:
        if not self.errors:
            return []
        lines = [f"errors by code (first {_EXAMPLES_PER_CODE} of each):"]
        for code, count in sorted(self.error_counts.items(), key=lambda item: -item[1]):
            lines.append(f"  {code}: {count}")
            lines += [f"    {example}" for example in self.errors[code]]
        return lines


def _plan(rows: CsvRows, history: History) -> _Tally:
    """Read every row once, before sending: BadFlagsError if any is malformed; else the
    counts of rows to send, to skip as already sent, and duplicates."""
    _warn_unreadable(history)
    tally = _Tally()
    selector = _Selector(history)
    for row in rows:
        tally.rows += 1
        verdict = selector.verdict(row, rows.to_column)
        if verdict == "send":
            tally.pending += 1
        elif verdict == "skipped":
            tally.skipped += 1
        else:
            tally.duplicates += 1
    return tally


def _warn_unreadable(history: History) -> None:
    if history.unreadable:  # a torn line from a crash; or an edit gone wrong
        error(f"warning: ignored {history.unreadable} unreadable line(s) in the log")


# -- sending --------------------------------------------------------------------------------


def _check_then_send(
    sender: FluxMail,
    template: MessageTemplate,
    rows: CsvRows,
    log: SendLog,
    tally: _Tally,
    pool: dict[str, Any],
    started: float,
) -> None:
    """Check the relay, then :func:`_send`. After a Ctrl-C, print the summary so far and
    raise KeyboardInterrupt (exit 130)."""
    # Fail fast (exit 2) when the relay cannot be reached or refuses our login: otherwise
    # every row would fail the same way, each after its retries.
    sender.test_connection()
    try:
        _send(sender, template, rows, log, tally, pool)
    except _Stopped:
        tally.interrupted = True
        out(tally.summary(time.monotonic() - started, log.path))
        raise KeyboardInterrupt from None


def _send(
    sender: FluxMail,
    template: MessageTemplate,
    rows: CsvRows,
    log: SendLog,
    tally: _Tally,
    pool: dict[str, Any],
) -> None:
    """Send the rows the plan counted as pending, logging and counting each as it settles.

    ``pool`` holds ``send_rows``'s keyword arguments beyond the rows and the callback. Raises
    _Stopped after a Ctrl-C, once the messages in flight are settled and logged.
    """
    to_column = rows.to_column
    with _ctrl_c_stops() as stop, contextlib.closing(_to_send(rows, log.history, stop)) as todo:

        def on_result(index: int, row: Mapping[str, Any], outcome: Outcome) -> None:
            assert isinstance(row, Row)  # send_rows hands back the objects _to_send yields
            address = row[to_column]
            log.append(row.number, address, outcome)  # first: resuming trusts the log
            tally.settle(row, address, outcome)
            if stop.is_set():
                raise _Stopped  # ends this worker; its message is settled and logged

        BulkSender(sender).send_rows(template, todo, to=to_column, on_result=on_result, **pool)


def _pool_options(args: argparse.Namespace) -> dict[str, Any]:
    """``send_rows`` keyword arguments from the flags (BadFlagsError for a bad combination)."""
    return {
        "progress": not args.no_progress,
        "max_connections": args.connections,
        "processes": args.processes,
        # The pool reports each message the moment its relay answers, and a pipelined
        # connection has one message awaiting that answer at a time: a kill can leave at
        # most one message per connection sent but unlogged.
        "rate_limit": _rate_limit(args),
    }


def _to_send(rows: CsvRows, history: History, stop: threading.Event) -> Generator[Row, None, None]:
    """The rows to send, as :func:`_plan` chose them; stops (raising _Stopped) on Ctrl-C."""
    selector = _Selector(history)
    for row in rows:
        if stop.is_set():
            raise _Stopped
        if selector.verdict(row, rows.to_column) == "send":
            yield row


@contextlib.contextmanager
def _ctrl_c_stops() -> Iterator[threading.Event]:
    """While active, a first Ctrl-C sets the yielded event instead of raising
    KeyboardInterrupt, so the run can stop between messages; a second one ends the process
    at once (exit 130).

    Why not let KeyboardInterrupt fly: it arrives in the main thread only, while the pool's
    worker threads go on sending the rest of the chunk, and it can strike between a message's
    acceptance and its log line. Only signal handlers of the main thread can be replaced; from
    another thread this does nothing and Ctrl-C keeps its default.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        # os.write, not sys.stderr: the handler may interrupt a write to the same stream.
        if stop.is_set():
            os.write(2, b"\ninterrupted\n")
            os._exit(130)  # every logged line is already in the file
        stop.set()
        os.write(2, b"\nstopping after the messages in flight (Ctrl-C again to stop now)\n")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


# -- dry run --------------------------------------------------------------------------------


def _dry_run(template: MessageTemplate, rows: CsvRows, history: History) -> int:
    """Render every row that a run would send, report, connect to nothing. 0 or 3."""
    _warn_unreadable(history)
    tally = _Tally()
    selector = _Selector(history)
    failures: list[str] = []
    for row in rows:
        tally.rows += 1
        verdict = selector.verdict(row, rows.to_column)
        if verdict == "skipped":
            tally.skipped += 1
        elif verdict == "duplicate":
            tally.duplicates += 1
        elif (problem := _render_problem(template, row, rows.to_column)) is None:
            tally.pending += 1
        else:
            tally.failed += 1
            if len(failures) < _DRY_RUN_LISTED:
                failures.append(f"  row {row.number} {row[rows.to_column].strip()}: {problem}")
    out("\n".join(_dry_run_report(tally, failures)))
    return EXIT_SOME_FAILED if tally.failed else EXIT_OK


def _render_problem(template: MessageTemplate, row: Row, to_column: str) -> str | None:
    try:
        template.render(row[to_column], **row)
    except FluxMailException as exc:
        return f"{one_line(exc)} (code: {exc.code})"
    return None


def _dry_run_report(tally: _Tally, failures: list[str]) -> list[str]:
    lines = [
        "dry run: nothing was sent",
        f"rows:           {tally.rows}",
        f"would send:     {tally.pending}",
        f"skipped:        {tally.skipped} (already sent, per the log)",
        f"duplicates:     {tally.duplicates} (address repeated in the CSV)",
        f"fail to render: {tally.failed}",
    ]
    lines += failures
    if tally.failed > len(failures):
        lines.append(f"  ... and {tally.failed - len(failures)} more")
    return lines
