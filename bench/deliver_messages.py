"""GetFluxly delivery workers: messages per second from the ledger to Postfix's smtp-sink,
next to FluxMail's raw pool to the same kind of sink in the same run.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/deliver_messages.py              # SQLite and PostgreSQL, N=5,000
    .venv/bin/python bench/deliver_messages.py --postgres   # one database only (or --sqlite)
    .venv/bin/python bench/deliver_messages.py --quick      # N=500, one round: a smoke run
    .venv/bin/python bench/deliver_messages.py --profile    # + where the workers' time goes

For each database, on a fresh database migrated to head, each round runs two phases, each
against a fresh ``smtp-sink`` on a fresh loopback port:

- ``raw``: FluxMail alone. N messages rendered from one ``MessageTemplate`` (the workload of
  ``smtp_throughput.py``) and sent with ``FluxMail.pool(...).send_many`` over as many
  connections, in batches as large, as the server's SMTP provider uses. No database.
- ``workers``: the server's delivery loop (``domain.delivery.Dispatcher``, as
  ``getfluxly worker`` runs it, ``--threads`` threads). N transactional messages are queued
  first through the API: the real ``getfluxly api`` on the same database, ``POST
  /v1/messages`` from ``--clients`` keep-alive HTTP clients with the project's server key,
  one message per request (a template whose subject and text are the same workload in
  Liquid, with ``data`` naming the recipient); that is timed on its own and shown as the
  ``api`` rate. Then the clock runs from the workers' start until no message is pending:
  claimed, rendered (Liquid, per message), suppression-checked, sent through the provider's
  warm FluxMail pool, and recorded (status, reply, queue id, Message-ID, a history row each).

A phase counts only when all N messages were accepted, seen from both ends: every message
``sent`` in the ledger (or every ``SendResult`` a 250 for ``raw``), and the sink's own
counter (``smtp-sink -c``) at N. The targets (issue 16, on this 2-core machine): workers at
least 1,000 messages/s and at least 0.5 x raw. stdout is a table and one JSON line; progress
on stderr; exit status 0 when every count was exact, 1 otherwise, 2 on bad usage. With
``--profile`` (or when a target is missed) the workers' phase is run once more in one thread
under cProfile and the top of the profile is printed to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import io
import json
import os
import platform
import pstats
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "testkit"))  # flux_testkit.ledger: the ledger's rows

import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402
from ingest_throughput import free_port, getfluxly_command  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402
from smtp_throughput import Sink, find_program, running_sink  # noqa: E402
from sqlalchemy import text  # noqa: E402
from workload import BODY_TEMPLATE, SENDER, SUBJECT_TEMPLATE, name, recipient  # noqa: E402

from flux_testkit import ledger, pgadmin  # noqa: E402
from fluxmail import EmailInstance, FluxMail, MessageTemplate, SendResult  # noqa: E402
from getfluxly_server.crypto import Keyring  # noqa: E402
from getfluxly_server.delivery import smtp as smtp_provider  # noqa: E402
from getfluxly_server.delivery.base import BuildContext  # noqa: E402
from getfluxly_server.delivery.clients import ClientCache  # noqa: E402
from getfluxly_server.delivery.smtp import SMTPProvider  # noqa: E402
from getfluxly_server.domain import tenancy  # noqa: E402
from getfluxly_server.domain.delivery import Dispatcher  # noqa: E402
from getfluxly_server.storage.db import Database  # noqa: E402
from getfluxly_server.storage.models import EmailProvider  # noqa: E402
from getfluxly_server.storage.schema import upgrade  # noqa: E402

Backend = Literal["sqlite", "postgres"]
Phase = Literal["raw", "workers"]

DEFAULT_MESSAGES, QUICK_MESSAGES = 5_000, 500
DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_PROCESSES = 3, 2, 2
TARGET_RATE, TARGET_RATIO = 1_000.0, 0.5
HOST = "127.0.0.1"
POSTGRES_URL_ENV = "GETFLUXLY_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://getfluxly:getfluxly@127.0.0.1:5432/postgres"
PENDING = "SELECT count(*) FROM messages WHERE status IN ('queued', 'deferred', 'sending')"
SENT = "SELECT count(*) FROM messages WHERE status = 'sent'"
#: The workload's subject and body in Liquid: the recipient's name and number from ``data``.
LIQUID_SUBJECT = SUBJECT_TEMPLATE.replace("{{ name }}", "{{ data.name }}")
LIQUID_TEXT = BODY_TEMPLATE.replace("{{ name }}", "{{ data.name }}").replace(
    "{{ n }}", "{{ data.n }}"
)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class PhaseResult:
    phase: Phase
    messages: int
    seconds: float | None = None
    accepted: int = 0
    sink_messages: int = 0
    error: str | None = None
    #: ``workers``: how long the API took to accept the N sends (before the clock ran).
    api_seconds: float | None = None

    @property
    def api_rate(self) -> float | None:
        return self.messages / self.api_seconds if self.api_seconds else None

    @property
    def exact(self) -> bool:
        return self.error is None and self.accepted == self.sink_messages == self.messages

    @property
    def rate(self) -> float | None:
        return self.messages / self.seconds if self.exact and self.seconds else None


@dataclass
class Round:
    backend: Backend
    index: int
    phases: dict[str, PhaseResult] = field(default_factory=dict)


# Databases.


def postgres_admin(admin_url: str, statement: pgsql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def fresh_database(backend: Backend, workdir: Path) -> Iterator[Database]:
    """A new database migrated to head, opened as the server opens it; removed afterwards."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{workdir / f'deliver-{secrets.token_hex(3)}.db'}")
        try:
            upgrade(db)
            yield db
        finally:
            db.dispose()
        return
    admin_url = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
    db_name = f"gf_bench_{secrets.token_hex(6)}"
    postgres_admin(admin_url, pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(db_name)))
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{db_name}"))
    db = Database("postgresql+psycopg://" + url.split("://", 1)[1])
    try:
        upgrade(db)
        yield db
    finally:
        db.dispose()
        pgadmin.drop_database(admin_url, db_name)


def count(db: Database, statement: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(statement)).scalar() or 0)


# The phases.


def run_raw(sink_binary: Path, n: int) -> PhaseResult:
    """FluxMail's pool, configured as the server's SMTP provider configures it."""
    result = PhaseResult("raw", n)
    template = MessageTemplate(sender=SENDER, subject=SUBJECT_TEMPLATE, text=BODY_TEMPLATE)
    with running_sink(sink_binary) as sink:
        mailer = FluxMail("smtp", HOST, port=sink.port, timeout=30.0)
        started = time.perf_counter()
        items = [template.render(recipient(i), name=name(i), n=i) for i in range(n)]
        with mailer.pool(
            max_connections=smtp_provider.MAX_CONNECTIONS, batch_size=smtp_provider.BATCH_SIZE
        ) as pool:
            outcomes = pool.send_many(items)
        result.seconds = time.perf_counter() - started
        result.accepted = sum(1 for o in outcomes if isinstance(o, SendResult))
        result.sink_messages = sink.settled_count(n)
    if result.accepted != n:
        bad = next(o for o in outcomes if not isinstance(o, SendResult))
        result.error = f"{n - result.accepted} not accepted, e.g. {bad!r}"
    return result


@dataclass(frozen=True)
class Install:
    project_id: str
    template_id: str
    #: GETFLUXLY_ENCRYPTION_KEYS of the API the messages are queued through.
    keys: str
    #: The project's server key (POST /v1/messages).
    server_key: str

    @property
    def keyring(self) -> Keyring:
        return Keyring.parse(self.keys)


def install(db: Database) -> Install:
    with db.transaction() as session:
        workspace, _key = tenancy.create_workspace(session, "Bench")
    project = ledger.make_project(db, workspace.id, "Bench")
    template = ledger.add_template(db, project, LIQUID_SUBJECT, text=LIQUID_TEXT)
    with db.transaction() as session:
        key = tenancy.issue_key(session, "secret", workspace.id, project, "bench")
    return Install(project, template, Keyring.generate(), key.plaintext)


@contextlib.contextmanager
def running_api(db: Database, setup: Install, workdir: Path) -> Iterator[str]:
    """The real ``getfluxly api`` on ``db`` (no workers), on a free port; its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GETFLUXLY_")}
    env.update(
        GETFLUXLY_DATABASE_URL=db.url, GETFLUXLY_ENCRYPTION_KEYS=setup.keys,
        GETFLUXLY_LOG_LEVEL="WARNING", GETFLUXLY_RATE_LIMIT_PER_SECOND="1000000",
        GETFLUXLY_RATE_LIMIT_BURST="10000000",
    )  # fmt: skip
    log = workdir / f"api-{port}.log"
    with log.open("ab") as out:
        api = subprocess.Popen(
            [*getfluxly_command(), "api", "--host", HOST, "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                probe = http.client.HTTPConnection(HOST, port, timeout=1)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    break
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"getfluxly api did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"{HOST}:{port}"
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait(5)


def post_messages(address: str, setup: Install, provider: str, n: int, clients: int) -> float:
    """N ``POST /v1/messages`` from ``clients`` keep-alive connections; the seconds they took
    (every answer must be a 202)."""
    host, port = address.rsplit(":", 1)
    headers = {"Authorization": f"Bearer {setup.server_key}", "Content-Type": "application/json"}
    failures: list[str] = []

    def client(first: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        for i in range(first, n, clients):
            body = {
                "to": recipient(i), "template_id": setup.template_id, "provider_id": provider,
                "data": {"name": name(i), "n": i},
            }  # fmt: skip
            connection.request("POST", "/v1/messages", json.dumps(body), headers)
            answer = connection.getresponse()
            text_ = answer.read()
            if answer.status != 202:
                failures.append(f"{answer.status} {text_[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} sends refused, e.g. {failures[0]}")
    return seconds


def queue(
    db: Database, setup: Install, sink: Sink, n: int, args: argparse.Namespace, workdir: Path
) -> tuple[str, float]:
    """N messages for the template through ``POST /v1/messages``, via a provider on ``sink``;
    the provider's id and the seconds the API took."""
    body = ledger.smtp_body(HOST, sink.port, from_email=SENDER)
    provider = ledger.add_provider(db, setup.keyring, setup.project_id, body)
    with running_api(db, setup, workdir) as address:
        seconds = post_messages(address, setup, provider, n, args.clients)
    if not db.is_sqlite:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE messages"))
    return provider, seconds


def kept_clients(db: Database, provider_id: str, port: int) -> ClientCache:
    """The client cache a worker process uses, holding the provider's client.

    smtp-sink answers AUTH with ``250`` where RFC 4954 says ``235``, so no client can log in
    to it; the provider's client is the server's own SMTP provider with a FluxMail mailer
    that does not log in (as the raw phase does not), kept where the workers look for it.
    """
    with db.read() as session:
        row = session.get(EmailProvider, provider_id)
        assert row is not None
        config, version = dict(row.config), row.updated_at.isoformat()
    client = SMTPProvider(config, {"password": "-"}, BuildContext(keep_connections=True))
    client._mailer = FluxMail("smtp", EmailInstance(HOST), port=port, timeout=30.0)
    clients = ClientCache()
    clients.get(provider_id, version, lambda: client)
    return clients


def dispatcher(
    db: Database, setup: Install, clients: ClientCache, threads: int, args: argparse.Namespace
) -> Dispatcher:
    return Dispatcher(
        db, keyring=setup.keyring, build_context=BuildContext(timeout=30.0), clients=clients,
        threads=threads, batch=args.batch, chunk=args.chunk, lease_seconds=120,
        poll_seconds=0.05,
    )  # fmt: skip


def worker_process(
    db: Database,
    setup: Install,
    provider: str,
    port: int,
    args: argparse.Namespace,
    siblings: Sequence[int],
) -> tuple[int, int]:
    """Fork one worker process (as ``getfluxly worker``: its own engine, clients and
    threads) that starts when a byte arrives on its pipe and stops at the pipe's end;
    returns (pid, the pipe's write end). ``siblings``: the write ends of the processes forked
    before it, closed in the child (else the first child never sees its pipe end)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    status = 0
    try:
        for fd in (write_end, *siblings):
            os.close(fd)
        own = Database(db.url)
        clients = kept_clients(own, provider, port)
        workers = dispatcher(own, setup, clients, args.threads, args)
        os.read(read_end, 1)  # go
        workers.start()
        os.read(read_end, 1)  # b"" once the parent closes its end: stop
        workers.stop()
        clients.close()
        own.dispose()
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def run_workers(
    db: Database,
    setup: Install,
    sink_binary: Path,
    n: int,
    args: argparse.Namespace,
    workdir: Path,
) -> PhaseResult:
    result = PhaseResult("workers", n)
    with running_sink(sink_binary) as sink:
        provider, result.api_seconds = queue(db, setup, sink, n, args, workdir)
        db.dispose()  # no connection may be shared across the fork
        children: list[tuple[int, int]] = []
        for _ in range(args.processes):
            pipes = [pipe for _, pipe in children]
            children.append(worker_process(db, setup, provider, sink.port, args, pipes))
        started = time.perf_counter()
        for _pid, pipe in children:
            os.write(pipe, b"g")
        try:
            deadline = started + args.timeout
            while count(db, PENDING) and time.perf_counter() < deadline:
                time.sleep(0.02)
            result.seconds = time.perf_counter() - started
        finally:
            failed = 0
            for pid, pipe in children:
                os.close(pipe)
                failed += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0
        result.accepted = count(db, SENT)
        result.sink_messages = sink.settled_count(n)
    with db.transaction() as session:
        session.execute(text("DELETE FROM message_history"))
        session.execute(text("DELETE FROM messages"))
    if failed:
        result.error = f"{failed} worker processes failed (see stderr)"
    elif result.accepted != n:
        result.error = f"{result.accepted} of {n} sent (timeout {args.timeout:.0f} s?)"
    return result


def profile_workers(
    db: Database,
    setup: Install,
    sink_binary: Path,
    n: int,
    args: argparse.Namespace,
    workdir: Path,
) -> str:
    """The workers' phase once more, one cycle after another in this thread under cProfile:
    the functions where the time goes."""
    with running_sink(sink_binary) as sink:
        clients = kept_clients(db, queue(db, setup, sink, n, args, workdir)[0], sink.port)
        workers = dispatcher(db, setup, clients, 1, args)
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            while workers.run_once():
                pass
        finally:
            profiler.disable()
            workers.stop()
            clients.close()
    with db.transaction() as session:
        session.execute(text("DELETE FROM message_history"))
        session.execute(text("DELETE FROM messages"))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def run_backend(
    backend: Backend, args: argparse.Namespace, sink_binary: Path, workdir: Path
) -> tuple[list[Round], dict[str, Any]]:
    rounds: list[Round] = []
    profile: str | None = None
    with fresh_database(backend, workdir) as db:
        setup = install(db)
        for index in range(args.rounds):
            round_ = Round(backend, index)
            order: tuple[Phase, Phase] = ("raw", "workers") if index % 2 == 0 else (
                "workers", "raw")  # fmt: skip
            for phase in order:
                note(f"{backend} round {index + 1}/{args.rounds}: {phase} ...")
                if phase == "raw":
                    round_.phases[phase] = run_raw(sink_binary, args.messages)
                else:
                    round_.phases[phase] = run_workers(
                        db, setup, sink_binary, args.messages, args, workdir
                    )
            rounds.append(round_)
        summary = summarize(rounds)
        if args.profile or (summary["met"] is False and not args.no_profile):
            note(f"{backend}: profiling the workers (one thread, cProfile) ...")
            profile = profile_workers(db, setup, sink_binary, args.messages, args, workdir)
            note(profile)
    summary["profiled"] = profile is not None
    return rounds, summary


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present and len(present) == len(values) else None


def summarize(rounds: list[Round]) -> dict[str, Any]:
    raw = median_of([r.phases["raw"].rate for r in rounds])
    workers = median_of([r.phases["workers"].rate for r in rounds])
    api = median_of([r.phases["workers"].api_rate for r in rounds])
    ratio = workers / raw if raw and workers else None
    met = None if workers is None or ratio is None else (
        workers >= TARGET_RATE and ratio >= TARGET_RATIO)  # fmt: skip
    return {
        "raw_per_second": raw,
        "workers_per_second": workers,
        "api_sends_per_second": api,
        "workers_over_raw": ratio,
        "met": met,
        "rounds": [
            {"index": r.index, "phases": {k: phase_json(p) for k, p in r.phases.items()}}
            for r in rounds
        ],
    }


def phase_json(result: PhaseResult) -> dict[str, Any]:
    return {
        **asdict(result), "exact": result.exact, "per_second": result.rate,
        "api_per_second": result.api_rate,
    }  # fmt: skip


def fmt(value: float | None, digits: int = 0) -> str:
    return "FAILED" if value is None else f"{value:,.{digits}f}"


def print_table(rounds: list[Round], summaries: dict[str, dict[str, Any]]) -> None:
    header = ("database", "round", "phase", "messages", "seconds", "msg/s", "queued by API/s")
    rows = [header]
    for r in rounds:
        for p in r.phases.values():
            rows.append(
                (r.backend, str(r.index + 1), p.phase, f"{p.messages:,}", fmt(p.seconds, 2),
                 fmt(p.rate) if p.exact else f"FAILED: {p.error}",
                 "" if p.api_seconds is None else fmt(p.api_rate))
            )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print()
    for backend, s in summaries.items():
        ratio = s["workers_over_raw"]
        print(
            f"{backend}: POST /v1/messages queued {fmt(s['api_sends_per_second'])} sends/s; "
            f"workers {fmt(s['workers_per_second'])} msg/s, FluxMail raw pool "
            f"{fmt(s['raw_per_second'])} msg/s (medians): workers / raw = "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'}; targets >= {TARGET_RATE:,.0f} "
            f"msg/s and >= {TARGET_RATIO}x raw: {'met' if s['met'] else 'NOT met'}"
        )


def versions() -> dict[str, str | None]:
    import sqlite3

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "postgresql": None,
    }
    with contextlib.suppress(Exception):
        admin = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
        with psycopg.connect(admin, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found["postgresql"] = str(row[0]) if row else None
    return found


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite only")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    parser.add_argument("-n", "--messages", type=positive, help=f"per phase ({DEFAULT_MESSAGES:,})")
    parser.add_argument("-r", "--rounds", type=positive, help=f"rounds ({DEFAULT_ROUNDS})")
    parser.add_argument("-t", "--threads", type=positive, default=DEFAULT_THREADS,
                        help=f"delivery threads ({DEFAULT_THREADS})")  # fmt: skip
    parser.add_argument("-p", "--processes", type=positive, default=DEFAULT_PROCESSES,
                        help=f"worker processes ({DEFAULT_PROCESSES})")  # fmt: skip
    parser.add_argument("-b", "--batch", type=positive, default=500, help="claim size (500)")
    parser.add_argument("-c", "--chunk", type=positive, default=50, help="chunk size (50)")
    parser.add_argument(
        "--clients", type=positive, default=16, help="HTTP clients queuing through the API (16)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per phase (300)")
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_MESSAGES:,}, one round")
    parser.add_argument("--profile", action="store_true", help="always print the profile")
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    args = parser.parse_args(argv)
    args.messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    args.rounds = args.rounds or (1 if args.quick else DEFAULT_ROUNDS)
    chosen = [b for b, on in (("sqlite", args.sqlite), ("postgres", args.postgres)) if on]
    args.backends = chosen or ["sqlite", "postgres"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sink_binary = find_program("smtp-sink")
    if sink_binary is None:
        note("Postfix's smtp-sink is not installed: run scripts/setup-bench")
        return 2
    every_round: list[Round] = []
    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gf-deliver-bench-") as workdir:
        for backend in args.backends:
            rounds, summaries[backend] = run_backend(backend, args, sink_binary, Path(workdir))
            every_round += rounds
    print_table(every_round, summaries)
    exact = all(p.exact for r in every_round for p in r.phases.values())
    report = {
        "benchmark": "deliver_messages",
        "messages": args.messages,
        "rounds": args.rounds,
        "processes": args.processes,
        "threads": args.threads,
        "batch": args.batch,
        "chunk": args.chunk,
        "queued_through": "POST /v1/messages (getfluxly api), timed apart",
        "targets": {"per_second": TARGET_RATE, "over_raw": TARGET_RATIO},
        "counts_exact": exact,
        "databases": summaries,
        "versions": versions(),
    }
    import json

    print(json.dumps(report, separators=(",", ":")))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
