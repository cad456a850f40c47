"""FluxMail at scale: messages per second into Postfix's smtp-sink, FluxMail beside its peers.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/smtp_throughput.py                # N=5000, R=3, every client
    .venv/bin/python bench/smtp_throughput.py --quick        # N=200, R=1: a smoke run, < 30 s
    .venv/bin/python bench/smtp_throughput.py --profile      # FluxMail 1-conn under pyinstrument

Every client sends the same N personalised messages of about 2 KB (:mod:`workload`), each to
its own recipient, to a fresh ``smtp-sink`` on a fresh loopback port. The clients run one
after another, each in a process of its own, and the whole round is repeated R times
(interleaved, so a noisy stretch of the shared machine hits every client alike; the order
is reversed every other round, so no client always runs first or right after another);
a client's speed is the median of its R rates. Before the first round every client runs
once, untimed, with a few messages (a warm-up: the programs and libraries read from disk,
the kernel's loopback paths warmed alike for all; not with ``--quick``). Each round prints
its ratios and each client's CPU per message; the target ratios are judged on the medians
and in every round.
Contracts:

* A run counts only if all N messages were accepted, seen from both ends: the client's own
  count of 250 replies (``smtp-source``: its exit status, as it aborts on any other reply)
  and the sink's own message counter (``smtp-sink -c``). Otherwise the run is reported as
  failed with the reason and the client gets no speed at all.
* A client whose tool or library is missing is *skipped* with a note; a missing tool makes a
  full run call ``scripts/setup-bench`` first (not ``--quick``, nor ``--no-setup``).
* stdout is a readable table and then one JSON line with every number; progress goes to
  stderr. Exit status: 0 when no run failed (targets not met are not failures), 1 when one
  did, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import email.policy
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from py_clients import EHLO_NAME, HOST, build_email
from workload import (
    BODY_FORMAT,
    NAME_PREFIX,
    RECIPIENT_DOMAIN,
    RECIPIENT_PREFIX,
    SENDER,
    SUBJECT_FORMAT,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_DIR = BENCH / "node"
SETUP_BENCH = REPO / "scripts" / "setup-bench"
# Debian installs Postfix's test tools in /usr/sbin, which is not on a normal user's PATH.
SBIN_DIRS = (Path("/usr/sbin"), Path("/usr/local/sbin"))
SINK_BACKLOG = 256
# smtp-sink refuses to run as root without dropping privileges to some user.
SINK_USER = "nobody"
# smtp-source writes From, To, Date, Message-Id and Subject (160 bytes with the options used
# here, measured on the wire) ahead of its ``-l`` payload, which counts its own CRLFs.
SMTP_SOURCE_HEADER_BYTES = 160
DEFAULT_MESSAGES, DEFAULT_REPEATS, DEFAULT_CONNECTIONS = 5000, 3, 20
QUICK_MESSAGES, QUICK_REPEATS = 200, 1
WARM_UP_MESSAGES = 200


@dataclass(frozen=True)
class Client:
    """One column of the comparison: what runs, over how many connections."""

    key: str  # also the worker's client name for the Python clients
    label: str  # "{c}" stands for the connection count
    kind: str  # "smtp-source" | "python" | "node"
    pooled: bool  # True: --connections connections; False: exactly one


CLIENTS: tuple[Client, ...] = (
    Client("smtp-source-1", "Postfix smtp-source (C), -d", "smtp-source", pooled=False),
    Client("smtp-source-pool", "Postfix smtp-source (C), -d -s {c}", "smtp-source", pooled=True),
    Client("smtplib", "Python smtplib + email", "python", pooled=False),
    Client("aiosmtplib", "aiosmtplib SMTP.send_message", "python", pooled=False),
    Client("nodemailer-1", "Nodemailer pool, maxConnections 1", "node", pooled=False),
    Client("nodemailer-pool", "Nodemailer pool, maxConnections {c}", "node", pooled=True),
    Client("fluxmail-1", "FluxMail pool(max_connections=1)", "python", pooled=False),
    Client("fluxmail-pool", "FluxMail async_pool(max_connections={c})", "python", pooled=True),
    Client(
        "fluxmail-pool-uvloop",
        "FluxMail async_pool(max_connections={c}), uvloop",
        "python",
        pooled=True,
    ),
    Client(
        "fluxmail-pool-2proc",
        "FluxMail send_rows(processes=2), {c} conns in all, uvloop if installed",
        "python",
        pooled=True,
    ),
    Client("fluxmail-create", "FluxMail with-block create().send()", "python", pooled=False),
    Client("fluxmail-bulksender", "FluxMail BulkSender.send_batch", "python", pooled=False),
)
CLIENT_KEYS = tuple(c.key for c in CLIENTS)
PROFILABLE = tuple(c.key for c in CLIENTS if c.kind == "python")

# (numerator, denominator, target): the targets; None is shown for information only.
RATIOS: tuple[tuple[str, str, float | None], ...] = (
    ("fluxmail-1", "smtp-source-1", 1.0),
    ("fluxmail-pool", "smtp-source-pool", 0.8),
    ("fluxmail-pool-uvloop", "smtp-source-pool", 0.8),
    ("fluxmail-pool-2proc", "smtp-source-pool", None),
    ("fluxmail-1", "aiosmtplib", 2.0),
    ("fluxmail-pool", "nodemailer-pool", 1.5),
    ("fluxmail-create", "smtp-source-1", 1.0),
    ("fluxmail-bulksender", "smtp-source-1", 1.5),
    ("fluxmail-1", "smtplib", None),
    ("fluxmail-pool", "smtplib", None),
    ("fluxmail-create", "smtplib", None),
)


def note(text: str) -> None:
    """Progress and notes go to stderr, so stdout stays the table and the JSON line."""
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools


@dataclass
class Tools:
    """Where each external tool is, or why it is not there (``missing`` maps kind -> note)."""

    sink: Path | None = None
    source: Path | None = None
    node: Path | None = None
    python: Path = field(default_factory=lambda: Path(sys.executable))
    missing: dict[str, str] = field(default_factory=dict)


def find_program(name: str) -> Path | None:
    """``name`` on PATH, else in the directories Debian puts administrator tools in."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for directory in SBIN_DIRS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def nodemailer_problem() -> str | None:
    """Why ``bench/node`` cannot run Nodemailer as locked, or None when it can."""
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    wanted = lock["packages"]["node_modules/nodemailer"]["version"]
    installed = NODE_DIR / "node_modules" / "nodemailer" / "package.json"
    if not installed.is_file():
        return "Nodemailer is not installed in bench/node (scripts/setup-bench runs npm ci)"
    version = json.loads(installed.read_text(encoding="utf-8"))["version"]
    if version != wanted:
        return f"bench/node has Nodemailer {version}, the lock says {wanted}"
    return None


def find_tools() -> Tools:
    """Look every tool up; nothing is installed here."""
    tools = Tools()
    # The workers need the project's environment (fluxmail, aiosmtplib, pyinstrument) even
    # when this script was started by another interpreter.
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.is_file():
        tools.python = venv_python
    tools.sink = find_program("smtp-sink")
    tools.source = find_program("smtp-source")
    if tools.sink is None:
        tools.missing["sink"] = "Postfix's smtp-sink is not installed (scripts/setup-bench)"
    if tools.source is None:
        tools.missing["smtp-source"] = "Postfix's smtp-source is not installed"
    node = shutil.which("node")
    tools.node = Path(node) if node else None
    problem = "node is not on PATH" if node is None else nodemailer_problem()
    if problem:
        tools.missing["node"] = problem
    return tools


def missing_for(client: Client, tools: Tools) -> str | None:
    """Why ``client`` cannot run at all on this machine, or None."""
    if "sink" in tools.missing:
        return tools.missing["sink"]
    return tools.missing.get(client.kind)


def run_setup_bench() -> None:
    """Run ``scripts/setup-bench``; a failure is a note, as the missing clients are skipped."""
    note(f"== some tools are missing: running {SETUP_BENCH.relative_to(REPO)}")
    result = subprocess.run([str(SETUP_BENCH)], check=False)
    if result.returncode != 0:
        note(f"   setup-bench exited {result.returncode}; clients without tools are skipped")


# --------------------------------------------------------------------------- the sink


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Sink:
    """A running ``smtp-sink -c`` on ``port``, whose stdout is the file ``counters``.

    ``-c`` makes the sink print ``sess=… quit=… mesg=…`` counters each time a message ends
    (before it answers the final dot): a short write per message, and a server-side count
    per run with no disk I/O, where ``-d``/``-D`` dumps would cost orders of magnitude more.
    """

    port: int
    counters: IO[bytes]

    def messages(self) -> int:
        """The sink's running message count (0 before its first message)."""
        fd = self.counters.fileno()
        size = os.fstat(fd).st_size
        # pread leaves the file offset alone: the sink writes through the same open file.
        tail = os.pread(fd, 256, max(0, size - 256))
        counts = re.findall(rb"mesg=(\d+)", tail)
        return int(counts[-1]) if counts else 0

    def settled_count(self, expected: int, wait: float = 2.0) -> int:
        """The message count once it reaches ``expected``, or after ``wait`` seconds.

        The sink counts a message before it replies, so when a client has seen every reply
        the count is already final; the wait only covers a client that stopped early.
        """
        deadline = time.monotonic() + wait
        count = self.messages()
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            count = self.messages()
        return count


def _sink_ready(proc: subprocess.Popen[bytes], port: int, wait: float = 5.0) -> bool:
    """Whether the sink accepts connections within ``wait`` seconds (False if it exited)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        # A connection that opens and closes is a session without a message: harmless.
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return True
        time.sleep(0.01)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_sink(binary: Path) -> Iterator[Sink]:
    """A fresh smtp-sink on a fresh loopback port for the duration of the block.

    Its extensions are left at their defaults (PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES,
    DSN, AUTH, XCLIENT, XFORWARD are advertised). Raises RuntimeError if it cannot start.
    """
    with tempfile.TemporaryFile() as counters, tempfile.TemporaryFile() as errors:
        for _attempt in range(3):  # another process may take the port between probe and bind
            port = free_port()
            argv = [str(binary), "-c"]
            if os.geteuid() == 0:
                argv += ["-u", SINK_USER]
            counters.truncate(0)
            proc = subprocess.Popen(
                [*argv, f"{HOST}:{port}", str(SINK_BACKLOG)], stdout=counters, stderr=errors
            )
            try:
                if _sink_ready(proc, port):
                    yield Sink(port, counters)
                    return
            finally:
                _stop(proc)
        errors.seek(0)
        raise RuntimeError(f"smtp-sink did not start: {errors.read().decode(errors='replace')}")


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One repetition of one client: a rate only when every message was accepted."""

    status: str  # "ok" | "failed" | "unavailable"
    seconds: float | None = None
    cpu_seconds: float | None = None  # the client process's CPU time over ``seconds``
    rate: float | None = None
    accepted: int | None = None
    sink_messages: int | None = None
    message_bytes: int | None = None
    errors: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True)
class Settings:
    """What every run of this invocation shares."""

    messages: int
    connections: int
    tools: Tools
    smtp_source_length: int
    timeout: float


def client_argv(client: Client, settings: Settings, port: int, profile: bool) -> list[str]:
    """The command line that runs ``client`` once against the sink on ``port``."""
    n, conns = settings.messages, (settings.connections if client.pooled else 1)
    tools = settings.tools
    if client.kind == "smtp-source":
        assert tools.source is not None
        return [
            str(tools.source),
            "-d",  # keep the connection for the next message, or every message reconnects
            "-s", str(conns),
            "-m", str(n),  # in total, shared by the sessions
            "-l", str(settings.smtp_source_length),
            "-N",  # a different recipient per message: 0user@…, 1user@…
            "-f", SENDER,
            "-t", f"{RECIPIENT_PREFIX}@{RECIPIENT_DOMAIN}",
            "-S", "Hello",
            "-M", EHLO_NAME,
            f"{HOST}:{port}",
        ]  # fmt: skip
    if client.kind == "node":
        assert tools.node is not None
        options = {
            "port": port,
            "messages": n,
            "connections": conns,
            "sender": SENDER,
            "subject": SUBJECT_FORMAT,
            "body": BODY_FORMAT,
            "ehloName": EHLO_NAME,
            "recipientPrefix": RECIPIENT_PREFIX,
            "recipientDomain": RECIPIENT_DOMAIN,
            "namePrefix": NAME_PREFIX,
        }
        return [str(tools.node), str(NODE_DIR / "send.js"), json.dumps(options)]
    argv = [str(tools.python), str(BENCH / "py_clients.py"), client.key]
    argv += ["--port", str(port), "--messages", str(n), "--connections", str(conns)]
    return [*argv, "--profile"] if profile else argv


def parse_worker(stdout: str) -> dict[str, Any] | None:
    """The worker's JSON line (its last line on stdout), or None if it printed none."""
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                return parsed
    return None


def _children_cpu() -> float:
    """User + system CPU seconds of every child reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(client: Client, settings: Settings, profile: bool = False) -> Run:
    """Start a sink, run ``client`` against it, and check both ends' counts.

    The rate is N / seconds, where seconds is the worker's own clock (building, connecting,
    sending, closing) for the Python and Node clients, and the wall clock of the whole
    process for smtp-source, which has no clock of its own (that includes a process start
    of a millisecond or two, in the peer's disfavour).
    """
    n = settings.messages
    assert settings.tools.sink is not None
    with running_sink(settings.tools.sink) as sink:
        argv = client_argv(client, settings, sink.port, profile)
        # The children's CPU clock moves only by the client here: the sink is still running,
        # and a child's time is added when it is reaped.
        cpu_before = _children_cpu()
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=settings.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return Run("failed", note=f"timed out after {settings.timeout:.0f} s")
        wall = time.perf_counter() - started
        process_cpu = _children_cpu() - cpu_before
        sink_messages = sink.settled_count(n)
    if profile and proc.stderr:
        print(proc.stderr)
    if client.kind == "smtp-source":
        # smtp-source aborts with a message on stderr at any reply it did not expect.
        accepted = n if proc.returncode == 0 else None
        run = Run("ok", seconds=wall, cpu_seconds=process_cpu, accepted=accepted)
        run.sink_messages = sink_messages
        run.message_bytes = settings.smtp_source_length + SMTP_SOURCE_HEADER_BYTES
        if proc.returncode != 0:
            run.status = "failed"
            run.errors = [f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"]
    else:
        report = parse_worker(proc.stdout)
        if report is None:
            detail = (proc.stderr or proc.stdout).strip()[-500:]
            return Run("failed", sink_messages=sink_messages, note=f"no report: {detail}")
        run = Run(
            status=report["status"],
            seconds=report["seconds"],
            cpu_seconds=report.get("cpu_seconds"),
            accepted=report["accepted"],
            sink_messages=sink_messages,
            message_bytes=report["message_bytes"],
            errors=report["errors"],
            note=report["note"],
        )
    if run.status == "ok" and run.accepted != n:
        run.status = "failed"
    if run.status == "ok" and sink_messages != n:
        run.status = "failed"
        run.note = "the sink's own count disagrees"
    if run.status == "ok" and run.seconds:
        run.rate = n / run.seconds
    return run


# --------------------------------------------------------------------------- results


@dataclass
class Summary:
    """A client over all its repetitions; ``median`` is None unless every run was ok."""

    key: str
    label: str
    connections: int
    messages: int
    status: str = "ok"  # "ok" | "failed" | "skipped" | "unavailable"
    runs: list[Run] = field(default_factory=list)
    note: str | None = None

    @property
    def rates(self) -> list[float]:
        return [r.rate for r in self.runs if r.rate is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.status == "ok" and self.rates else None

    @property
    def cpu_us_per_message(self) -> float | None:
        """Median client CPU time per message, in microseconds, over the ok runs.

        Steadier than the rate on a shared machine: a neighbour's load delays the client
        but adds little to the CPU time it spends itself.
        """
        per_message = [
            r.cpu_seconds / self.messages * 1e6
            for r in self.runs
            if r.rate is not None and r.cpu_seconds is not None
        ]
        return statistics.median(per_message) if self.median and per_message else None

    @property
    def message_bytes(self) -> int | None:
        sizes = [r.message_bytes for r in self.runs if r.message_bytes]
        return sizes[0] if sizes else None

    def add(self, run: Run) -> None:
        """Record a repetition; one failed run fails the client, as the issue asks."""
        self.runs.append(run)
        if run.status == "unavailable":
            self.status, self.note = "unavailable", run.note
        elif run.status != "ok" and self.status == "ok":
            self.status = "failed"
            accepted = "?" if run.accepted is None else run.accepted
            why = run.note or "; ".join(run.errors[:2]) or "no detail"
            self.note = f"accepted {accepted}, sink counted {run.sink_messages}: {why}"

    def to_json(self) -> dict[str, Any]:
        rates = self.rates
        return {
            "label": self.label,
            "connections": self.connections,
            "status": self.status,
            "msgs_per_s": self.median,
            "min": min(rates) if self.median is not None else None,
            "max": max(rates) if self.median is not None else None,
            "rates": rates,
            "cpu_us_per_msg": self.cpu_us_per_message,
            "message_bytes": self.message_bytes,
            "note": self.note,
            "runs": [asdict(r) for r in self.runs],
        }


def round_ratios(summaries: dict[str, Summary], num: str, den: str) -> list[float | None]:
    """``num``'s rate over ``den``'s, round by round (None where either run has no rate)."""
    pairs = zip(summaries[num].runs, summaries[den].runs, strict=False)
    return [a.rate / b.rate if a.rate and b.rate else None for a, b in pairs]


def ratios(summaries: dict[str, Summary]) -> list[dict[str, Any]]:
    """Each target ratio of medians, or None with the reason when a side has no speed; and
    the same ratio round by round (each round's two runs ran minutes apart at most)."""
    rows = []
    for num, den, target in RATIOS:
        if num not in summaries or den not in summaries:
            continue
        top, bottom = summaries[num].median, summaries[den].median
        value = top / bottom if top is not None and bottom is not None else None
        rounds = round_ratios(summaries, num, den) if value is not None else []
        lowest = min(rounds) if rounds and None not in rounds else None  # type: ignore[type-var]
        rows.append(
            {
                "ratio": f"{num} / {den}",
                "target": target,
                "value": value,
                "met": None if value is None or target is None else value >= target,
                "rounds": rounds,
                "min_round": lowest,
                "met_every_round": (None if lowest is None or target is None else lowest >= target),
            }
        )
    return rows


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_table(
    summaries: dict[str, Summary], ratio_rows: list[dict[str, Any]], settings: Settings, r: int
) -> None:
    """The human-readable part of stdout: one row per client, then the ratios."""
    print(
        f"\nSMTP throughput: {settings.messages} personalised messages (~2 KB) per run into "
        f"smtp-sink on {HOST}, median of {r} run(s); msg/s, higher is better"
    )
    print(
        f"{'client':<17} {'what':<40} {'conns':>5} {'msg/s':>7} {'min':>7} {'max':>7} "
        f"{'cpu us':>7} {'bytes':>5}  status"
    )
    for s in summaries.values():
        rates = s.rates if s.median is not None else []
        status = s.status if s.note is None else f"{s.status}: {s.note}"
        if len(status) > 90:  # the JSON line has it whole
            status = status[:87] + "..."
        cpu = s.cpu_us_per_message
        print(
            f"{s.key:<17} {s.label:<40} {s.connections:>5} {fmt_rate(s.median):>7} "
            f"{fmt_rate(min(rates) if rates else None):>7} "
            f"{fmt_rate(max(rates) if rates else None):>7} "
            f"{'-' if cpu is None else f'{cpu:,.0f}':>7} {s.message_bytes or '-':>5}  {status}"
        )
    print(
        f"\n{'ratio of medians (msg/s)':<34} {'target':>7} {'value':>7}  met  "
        f"{'min':>5}  every round  rounds"
    )
    yes_no = {True: "yes", False: "NO", None: "-"}
    for row in ratio_rows:
        target = "-" if row["target"] is None else f">= {row['target']:g}"
        value = "-" if row["value"] is None else f"{row['value']:.2f}"
        lowest = "-" if row["min_round"] is None else f"{row['min_round']:.2f}"
        rounds = ", ".join("-" if r is None else f"{r:.2f}" for r in row["rounds"])
        print(
            f"{row['ratio']:<34} {target:>7} {value:>7}  {yes_no[row['met']]:<3}  {lowest:>5}  "
            f"{yes_no[row['met_every_round']]:<11}  {rounds}"
        )
    print()


# --------------------------------------------------------------------------- main


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SMTP throughput of FluxMail and its peers into Postfix's smtp-sink.",
        epilog="See bench/README.md for what each column means and the targets.",
    )
    parser.add_argument(
        "-n", "--messages", type=positive, help=f"messages per run (default {DEFAULT_MESSAGES})"
    )
    parser.add_argument(
        "-r", "--repeats", type=positive, help=f"runs per client (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "-c",
        "--connections",
        type=positive,
        default=DEFAULT_CONNECTIONS,
        help=f"connections of the pooled clients (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--clients",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(CLIENT_KEYS),
        help="comma-separated subset of: " + ", ".join(CLIENT_KEYS),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: N={QUICK_MESSAGES}, R={QUICK_REPEATS}, missing tools skipped, no set-up",
    )
    parser.add_argument(
        "--no-setup",
        action="store_true",
        help="never run scripts/setup-bench; skip what is missing",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="fluxmail-1",
        choices=PROFILABLE,
        help="run one Python client (default fluxmail-1) once under pyinstrument, print its report",
    )
    parser.add_argument(
        "--timeout", type=positive, help="seconds one run may take (default 60 + N/50)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.clients) - set(CLIENT_KEYS))
    if unknown:
        parser.error(
            f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(CLIENT_KEYS)}"
        )
    default_n, default_r = (
        (QUICK_MESSAGES, QUICK_REPEATS) if args.quick else (DEFAULT_MESSAGES, DEFAULT_REPEATS)
    )
    args.messages = args.messages or default_n
    args.repeats = args.repeats or default_r
    return args


def warm_up(clients: Sequence[Client], settings: Settings) -> None:
    """Run each client once, untimed, with a few messages, before the measured rounds."""
    few = replace(settings, messages=min(settings.messages, WARM_UP_MESSAGES))
    note(f"== warm-up: {few.messages} messages per client, not counted")
    for c in clients:
        run = run_once(c, few)
        if run.status != "ok":
            note(f"   {c.key}: warm-up {run.status} ({run.note or run.errors}); measuring anyway")


def tool_versions(tools: Tools) -> dict[str, str | None]:
    """Versions worth recording beside the numbers (None where a tool is missing)."""
    versions: dict[str, str | None] = {"python": None, "node": None, "nodemailer": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        versions["python"] = subprocess.run(
            [str(tools.python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    if tools.node is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            versions["node"] = subprocess.run(
                [str(tools.node), "--version"], capture_output=True, text=True, check=True,
                timeout=30,
            ).stdout.strip()  # fmt: skip
    installed = NODE_DIR / "node_modules" / "nodemailer" / "package.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        versions["nodemailer"] = json.loads(installed.read_text(encoding="utf-8"))["version"]
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or the profile) and return the exit status."""
    args = parse_args(argv)
    tools = find_tools()
    if tools.missing and not (args.quick or args.no_setup):
        run_setup_bench()
        tools = find_tools()
    for kind, why in tools.missing.items():
        note(f"note: {kind}: {why}; the clients that need it are skipped")

    # smtp-source's payload is sized so its messages weigh what the personalised ones do.
    typical = len(build_email(args.messages // 2).as_bytes(policy=email.policy.SMTP))
    settings = Settings(
        messages=args.messages,
        connections=args.connections,
        tools=tools,
        smtp_source_length=typical - SMTP_SOURCE_HEADER_BYTES,
        timeout=float(args.timeout or 60 + args.messages / 50),
    )

    if args.profile:
        client = next(c for c in CLIENTS if c.key == args.profile)
        blocker = missing_for(client, tools)
        if blocker is not None:
            note(f"cannot profile {client.key}: {blocker}")
            return 1
        note(f"== profiling {client.key}: {args.messages} messages under pyinstrument")
        run = run_once(client, settings, profile=True)
        if run.status != "ok":
            note(f"{client.key} {run.status}: {run.note or run.errors}")
            return 1
        print(f"{client.key}: {fmt_rate(run.rate)} msg/s under the profiler (overhead included)")
        return 0

    chosen = [c for c in CLIENTS if c.key in args.clients]
    summaries = {
        c.key: Summary(
            c.key,
            c.label.format(c=args.connections),
            args.connections if c.pooled else 1,
            args.messages,
        )
        for c in chosen
    }
    for c in chosen:
        reason = missing_for(c, tools)
        if reason is not None:
            summaries[c.key].status, summaries[c.key].note = "skipped", reason
    runnable = [c for c in chosen if summaries[c.key].status not in ("skipped", "unavailable")]
    note(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.quick:  # a smoke run checks that every client works, not how fast
        warm_up(runnable, settings)
    for rep in range(1, args.repeats + 1):
        note(f"== round {rep}/{args.repeats}: {args.messages} messages per client")
        # Every other round in reverse: no client always goes first, or always follows
        # the same neighbour (whose sink, page cache and CPU frequency it would inherit).
        for c in runnable if rep % 2 else runnable[::-1]:
            summary = summaries[c.key]
            if summary.status in ("skipped", "unavailable"):
                continue
            run = run_once(c, settings)
            summary.add(run)
            cpu = (
                ""
                if run.cpu_seconds is None
                else f"{run.cpu_seconds / args.messages * 1e6:6.0f} us/msg"
            )
            note(f"   {c.key:<20} {run.status:<11} {fmt_rate(run.rate):>8} msg/s {cpu}")
        for num, den, _target in RATIOS:
            if num in summaries and den in summaries and summaries[num].runs:
                value = round_ratios(summaries, num, den)[-1]
                if value is not None:
                    note(f"   round {rep}: {num} / {den} = {value:.2f}")

    note(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratio_rows = ratios(summaries)
    print_table(summaries, ratio_rows, settings, args.repeats)
    print(
        json.dumps(
            {
                "benchmark": "smtp_throughput",
                "messages": args.messages,
                "repeats": args.repeats,
                "connections": args.connections,
                "machine": {
                    "cpus": os.cpu_count(),
                    "system": platform.platform(),
                    "load_average": os.getloadavg(),
                },
                "versions": tool_versions(tools),
                "clients": {key: s.to_json() for key, s in summaries.items()},
                "ratios": ratio_rows,
            }
        )
    )
    return 1 if any(s.status == "failed" for s in summaries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
