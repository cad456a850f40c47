"""GetFluxly broadcasts: the time for a broadcast to N profiles to complete, from the API's
``start`` to its status ``sent``, through the real server and workers to Postfix's
smtp-sink, next to FluxMail's raw pool sending the same number of messages in the same run.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/broadcast_throughput.py               # N=100,000, SQLite and PostgreSQL
    .venv/bin/python bench/broadcast_throughput.py --postgres    # one database only (or --sqlite)
    .venv/bin/python bench/broadcast_throughput.py -n 500        # a smoke run

Per database, on a fresh database migrated to head:

- ``raw``: FluxMail alone (``deliver_messages.run_raw``): N messages rendered and sent with
  ``FluxMail.pool(...).send_many`` as the server's SMTP provider configures its pool.
- ``broadcast``: N profiles (traits ``email``, ``name``, ``n``) in a segment (written to
  ``segment_members`` before the clock starts, as the segment evaluator keeps it), a
  marketing template in Liquid naming the profile, and an SMTP provider on the sink. The
  API runs as ``getfluxly api`` (a subprocess); ``--processes`` worker processes are forked
  from this one and run exactly what ``getfluxly worker`` runs (``app.create_worker``: the
  broadcast runner and the delivery loop, ``--threads`` delivery threads each). The clock
  runs from ``POST /v1/broadcasts/{id}/start`` until ``GET /v1/broadcasts/{id}`` says
  ``sent``: the audience snapshotted, every message recorded at the runner's pace, claimed,
  rendered, suppression-checked, sent through the provider's warm FluxMail pool, recorded.
  Before the clock, as in a worker that has been running: the audience was written an
  hour earlier, and each worker process has made its segment runner's first pass (a full
  recompute of every segment, which a worker makes once when it starts).

Next to the wall-clock time, the CPU the worker processes spent during the broadcast (their
own counters, in /proc), per message, and the load average: on a shared machine the CPU per
message is the figure that does not depend on what else runs.

smtp-sink answers AUTH with ``250`` where RFC 4954 says ``235``, so no client can log in to
it: as in ``deliver_messages.py``, the workers' client for the provider is the server's own
SMTP provider with a FluxMail mailer that does not log in, placed in the worker's client
cache before it starts. Everything else is the server's own code.

A phase counts only when all N messages were accepted, seen from both ends: the broadcast's
``counts.sent`` (or every ``SendResult`` a 250 for ``raw``) and the sink's own counter at N.
Target (issue 14, on this 2-core machine): 100,000 within 120 s. stdout is a table and one
JSON line; progress on stderr; exit status 0 when every count was exact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "testkit"))

import httpx  # noqa: E402
from deliver_messages import (  # noqa: E402
    HOST,
    PhaseResult,
    fmt,
    fresh_database,
    note,
    positive,
    run_raw,
    versions,
)
from smtp_throughput import find_program, running_sink  # noqa: E402
from sqlalchemy import event, text, update  # noqa: E402
from workload import BODY_TEMPLATE, SENDER, SUBJECT_TEMPLATE, name, recipient  # noqa: E402

from flux_testkit import audience, ledger  # noqa: E402
from flux_testkit.gfserver import free_port, getfluxly_command  # noqa: E402
from fluxmail import EmailInstance, FluxMail  # noqa: E402
from getfluxly_server.app import create_worker  # noqa: E402
from getfluxly_server.crypto import Keyring  # noqa: E402
from getfluxly_server.delivery.base import BuildContext  # noqa: E402
from getfluxly_server.delivery.smtp import SMTPProvider  # noqa: E402
from getfluxly_server.domain import tenancy  # noqa: E402
from getfluxly_server.domain.segments.membership import SegmentRunner  # noqa: E402
from getfluxly_server.settings import Settings  # noqa: E402
from getfluxly_server.storage.db import Database  # noqa: E402
from getfluxly_server.storage.models import EmailProvider, Profile, Template, new_id, now  # noqa: E402

Backend = Literal["sqlite", "postgres"]

DEFAULT_PROFILES = 100_000
DEFAULT_THREADS, DEFAULT_PROCESSES = 2, 2
TARGET_SECONDS = 120.0
#: How often the broadcast's status is read while it sends (the time is exact to this).
POLL_SECONDS = 1.0
#: The workload's subject and body in Liquid, naming the profile from its traits.
LIQUID_SUBJECT = SUBJECT_TEMPLATE.replace("{{ name }}", "{{ profile.name }}")
LIQUID_TEXT = BODY_TEMPLATE.replace("{{ name }}", "{{ profile.name }}").replace(
    "{{ n }}", "{{ profile.n }}"
)


def cpu_seconds(pid: int) -> float | None:
    """A live process's CPU time so far (user + system, from ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_backends(db: Database) -> dict[int, float]:
    """CPU seconds so far of each server process serving the database (PostgreSQL; none
    on SQLite): the database's own share of the two cores."""
    if db.is_sqlite:
        return {}
    with db.engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        found = {int(pid): cpu_seconds(int(pid)) for pid in pids}
    return {pid: cpu for pid, cpu in found.items() if cpu is not None}


def backends_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    """The CPU the database's server processes spent between two readings (a process
    started in between counts from zero)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


#: psycopg's generators that end a pipeline's batch (one round trip each).
_SYNCS = ("_sync_gen", "_exit_gen", "_commit_gen")


def _round_trip(conn: Any, gen: Any, kwargs: dict[str, Any]) -> bool:
    """Whether psycopg's wait for ``gen`` on ``conn`` waits for the server's answer to what
    it sent. Not: a wait for notifications (it has a timeout), a COMMIT or ROLLBACK outside
    a transaction (the pool's reset after a commit), setting autocommit (the pool's ping
    does, around its statement), and in pipeline mode a statement (it is queued: the batch's
    sync is the round trip)."""
    name = getattr(gen, "__name__", "")
    if "timeout" in kwargs or name == "_set_autocommit_gen":
        return False
    if conn._pipeline is not None:
        return name in _SYNCS
    if name in ("_commit_gen", "_rollback_gen"):
        return bool(conn.info.transaction_status != psycopg_idle())
    return True


def psycopg_idle() -> Any:
    from psycopg.pq import TransactionStatus

    return TransactionStatus.IDLE


class DatabaseTraffic:
    """What a worker process asks of its database, by thread kind (``delivery``,
    ``broadcasts``, ...): round trips (PostgreSQL: every exchange psycopg waits for,
    statements, BEGIN, COMMIT, pool pings; waits for notifications left out), SQL
    statements, and write transactions (SQLite: each BEGIN IMMEDIATE; PostgreSQL: each
    transaction that wrote). Installed in the worker process before it starts."""

    def __init__(self, db: Database) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()
        event.listen(db.engine, "before_cursor_execute", self._statement)
        event.listen(db.engine, "begin", self._begin)
        if not db.is_sqlite:
            import psycopg

            original = psycopg.Connection.wait
            traffic = self

            def wait(conn: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
                if _round_trip(conn, gen, kwargs):
                    traffic.add("round_trips")
                return original(conn, gen, *args, **kwargs)

            psycopg.Connection.wait = wait  # type: ignore[method-assign]

    @staticmethod
    def kind() -> str:
        return re.sub(r"[-_]?\d+$", "", threading.current_thread().name)

    def add(self, what: str) -> None:
        with self._lock:
            self.counts[self.kind(), what] += 1

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.add("statements")
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            conn.info["gf_wrote"] = True

    def _begin(self, conn: Any) -> None:
        if conn.get_execution_options().get("read_only"):
            self.add("read_transactions")
        else:
            self.add("write_transactions")

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            found: dict[str, dict[str, int]] = {}
            for (kind, what), n in self.counts.items():
                found.setdefault(kind, {})[what] = n
            return found


@dataclass(frozen=True)
class Install:
    url: str
    keyring_text: str
    workspace_key: str
    project_id: str
    template_id: str
    segment_id: str


def install(db: Database, n: int) -> Install:
    """A workspace (and its key), a project, the template and a segment of N profiles."""
    with db.transaction() as session:
        workspace, key = tenancy.create_workspace(session, "Bench")
        workspace_key = key.plaintext
    project = ledger.make_project(db, workspace.id, "Bench")
    with db.transaction() as session:
        template = Template(
            id=new_id("tpl"), project_id=project, name="bench", kind="marketing",
            subject=LIQUID_SUBJECT, text=LIQUID_TEXT,
        )  # fmt: skip
        session.add(template)
    started = time.perf_counter()
    segment = audience.add_segment(
        db, project, n, traits_for=lambda i: {"email": recipient(i), "name": name(i), "n": i}
    ).segment_id
    note(f"  {n:,} profiles in the segment ({time.perf_counter() - started:.1f} s, not timed)")
    # The audience existed before the broadcast: written an hour ago, so the workers'
    # segment pass (which looks again at profiles changed in its last minute) does not
    # re-evaluate all N of them during the broadcast as if they had just been imported.
    earlier = now() - timedelta(hours=1)
    with db.transaction() as session:
        session.execute(
            update(Profile)
            .where(Profile.project_id == project)
            .values(created_at=earlier, updated_at=earlier)
        )
    if not db.is_sqlite:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return Install(db.url, Keyring.generate(), workspace_key, project, template.id, segment)


@contextlib.contextmanager
def api_server(setup: Install) -> Iterator[httpx.Client]:
    """``getfluxly api`` on the database (no worker threads), and a client with the key."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GETFLUXLY_")}
    env |= {
        "GETFLUXLY_DATABASE_URL": setup.url,
        "GETFLUXLY_ENCRYPTION_KEYS": setup.keyring_text,
        "GETFLUXLY_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*getfluxly_command(), "api", "--host", HOST, "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = httpx.Client(
            base_url=f"http://{HOST}:{port}",
            headers={"Authorization": f"Bearer {setup.workspace_key}"},
            timeout=60.0,
        )
        try:
            # (A loaded machine has taken more than a minute to start it.)
            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"getfluxly api did not start:\n{log.read().decode()}")
                time.sleep(0.1)
            yield client
        finally:
            client.close()
            process.terminate()
            process.wait(10)


def _await_ready(ready_read: int, pids: Sequence[int]) -> None:
    """One worker's ready byte; a RuntimeError as soon as any worker process has ended
    instead (the others hold the pipe open, so its end of file would never come)."""
    while not select.select([ready_read], [], [], 1.0)[0]:
        for pid in pids:
            if os.waitpid(pid, os.WNOHANG)[0]:
                raise RuntimeError(f"worker process {pid} ended before it started (see above)")
    if not os.read(ready_read, 1):
        raise RuntimeError("the worker processes ended before they started")


def worker_process(
    setup: Install,
    provider_id: str,
    port: int,
    args: argparse.Namespace,
    siblings: Sequence[int],
    ready: int,
    traffic_file: Path,
) -> tuple[int, int]:
    """Fork one worker process (``app.create_worker``, as ``getfluxly worker`` runs it) that
    starts when a byte arrives on its pipe, writes a byte to ``ready`` once it runs, and
    stops at the pipe's end, writing its :class:`DatabaseTraffic` since it started to
    ``traffic_file``; (pid, write end)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    status = 0
    try:
        for fd in (write_end, *siblings):
            os.close(fd)
        settings = Settings(
            database_url=setup.url, keyring=Keyring.parse(setup.keyring_text),
            delivery_threads=args.threads, worker_threads=1, log_level="WARNING",
        )  # fmt: skip
        db = Database(setup.url)
        traffic = DatabaseTraffic(db)
        worker = create_worker(settings, db, threads=1)
        with db.read() as session:
            row = session.get(EmailProvider, provider_id)
            assert row is not None
            config, version = dict(row.config), row.updated_at.isoformat()
        client = SMTPProvider(config, {"password": "-"}, BuildContext(keep_connections=True))
        client._mailer = FluxMail("smtp", EmailInstance(HOST), port=port, timeout=30.0)
        worker.clients.get(provider_id, version, lambda: client)  # type: ignore[attr-defined]
        os.read(read_end, 1)  # go
        # The segment runner's first pass (a full recompute of every segment) is what a
        # worker does once when it starts, not part of a broadcast: done before the clock.
        started = time.perf_counter()
        for runner in worker.runners:  # type: ignore[attr-defined]
            if isinstance(runner, SegmentRunner):
                runner.run_once()
        note(f"  worker {os.getpid()}: first segment pass {time.perf_counter() - started:.1f} s")
        traffic.reset()
        worker.start()
        os.write(ready, b"r")
        os.read(read_end, 1)  # b"" once the parent closes its end: stop
        traffic_file.write_text(json.dumps(traffic.snapshot()))
        worker.stop()
        db.dispose()
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


@dataclass
class Spent:
    """What the broadcast cost besides time: CPU seconds of the worker processes and of the
    database's server processes (PostgreSQL) while it ran, and the workers' database
    traffic by thread kind (:class:`DatabaseTraffic`, summed over the processes)."""

    worker_cpu: float | None = None
    database_cpu: float | None = None
    traffic: dict[str, dict[str, int]] | None = None


def run_broadcast(
    db: Database, setup: Install, sink_binary: Path, n: int, args: argparse.Namespace
) -> tuple[PhaseResult, Spent]:
    """The broadcast phase, and what it cost (:class:`Spent`)."""
    result = PhaseResult("workers", n)
    spent = Spent()
    traffic_dir = Path(tempfile.mkdtemp(prefix="gf-broadcast-traffic-"))
    with running_sink(sink_binary) as sink:
        body = ledger.smtp_body(HOST, sink.port, from_email=SENDER)
        provider = ledger.add_provider(
            db, Keyring.parse(setup.keyring_text), setup.project_id, body
        )
        db.dispose()  # no connection may be shared across the fork
        children: list[tuple[int, int]] = []
        ready_read, ready_write = os.pipe()
        for _ in range(args.processes):
            pipes = [pipe for _, pipe in children]
            traffic_file = traffic_dir / f"worker-{len(children)}.json"
            children.append(
                worker_process(setup, provider, sink.port, args, pipes, ready_write, traffic_file)
            )
        os.close(ready_write)
        failed = 0
        try:
            for _pid, pipe in children:
                os.write(pipe, b"g")
            with api_server(setup) as api:
                for _ in children:  # every worker past its first segment pass
                    _await_ready(ready_read, [pid for pid, _ in children])
                made = api.post(
                    f"/v1/projects/{setup.project_id}/broadcasts",
                    json={"name": "Bench", "template_id": setup.template_id,
                          "segment_id": setup.segment_id},
                )  # fmt: skip
                if made.status_code != 201:
                    raise RuntimeError(f"creating the broadcast: {made.text}")
                broadcast_id = made.json()["broadcast"]["id"]
                cpu_before = [cpu_seconds(pid) for pid, _ in children]
                backends_before = postgres_backends(db)
                started = time.perf_counter()
                begun = api.post(f"/v1/broadcasts/{broadcast_id}/start")
                if begun.status_code != 200:
                    raise RuntimeError(f"starting the broadcast: {begun.text}")
                deadline = started + args.timeout
                last = 0.0
                while True:
                    state = api.get(f"/v1/broadcasts/{broadcast_id}").json()["broadcast"]
                    if state["status"] != "sending" or time.perf_counter() > deadline:
                        break
                    if time.perf_counter() - last > 10:
                        last = time.perf_counter()
                        note(f"  {time.perf_counter() - started:5.1f} s: {state['counts']}")
                    # Each GET counts the broadcast's messages by status (a scan of its
                    # messages): once a second, so the poll costs the workers little.
                    time.sleep(POLL_SECONDS)
                result.seconds = time.perf_counter() - started
                cpu_after = [cpu_seconds(pid) for pid, _ in children]
                if not db.is_sqlite:
                    spent.database_cpu = backends_cpu(backends_before, postgres_backends(db))
                if None not in cpu_before + cpu_after:
                    spent.worker_cpu = sum(cpu_after) - sum(cpu_before)  # type: ignore[arg-type]
                result.accepted = int(state["counts"]["sent"])
                if state["status"] != "sent":
                    result.error = f"status {state['status']} after {result.seconds:.0f} s"
        finally:
            os.close(ready_read)
            for pid, pipe in children:
                os.close(pipe)
                try:
                    failed += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0
                except ChildProcessError:  # reaped by _await_ready: it ended early
                    failed += 1
        result.sink_messages = sink.settled_count(n)
    spent.traffic = {}
    for path in sorted(traffic_dir.iterdir()):
        for kind, figures in json.loads(path.read_text()).items():
            into = spent.traffic.setdefault(kind, {})
            for what, count in figures.items():
                into[what] = into.get(what, 0) + count
        path.unlink()
    traffic_dir.rmdir()
    if failed:
        result.error = f"{failed} worker processes failed (see stderr)"
    elif result.error is None and result.accepted != n:
        result.error = f"{result.accepted} of {n} sent"
    return result, spent


@dataclass
class Outcome:
    backend: Backend
    raw: PhaseResult
    broadcast: PhaseResult
    spent: Spent
    #: The 1-minute load average when the broadcast ended.
    load: float

    def summary(self) -> dict[str, Any]:
        raw, broadcast = self.raw.rate, self.broadcast.rate
        seconds = self.broadcast.seconds if self.broadcast.exact else None
        return {
            "raw": asdict(self.raw) | {"per_second": raw},
            "broadcast": asdict(self.broadcast) | {"per_second": broadcast},
            "broadcast_seconds": seconds,
            "broadcast_over_raw": broadcast / raw if raw and broadcast else None,
            "met": None if seconds is None else seconds <= TARGET_SECONDS,
            "worker_cpu_seconds": self.spent.worker_cpu,
            "worker_cpu_us_per_message": self.per_message(self.spent.worker_cpu, 1e6),
            "database_cpu_seconds": self.spent.database_cpu,
            "database_cpu_us_per_message": self.per_message(self.spent.database_cpu, 1e6),
            "per_message": self.traffic_per_message(),
            "traffic": self.spent.traffic,
            "load_average": self.load,
        }

    def per_message(self, value: float | None, scale: float = 1.0) -> float | None:
        if value is None:
            return None
        return value / self.broadcast.messages * scale

    def traffic_per_message(self) -> dict[str, dict[str, float]]:
        """Round trips, statements and write transactions per message: in all, and of the
        delivery threads and the broadcast runner."""
        traffic = self.spent.traffic or {}
        found: dict[str, dict[str, float]] = {}
        for label, kinds in (
            ("all", [k for k in traffic if not k.endswith("listen")]),
            ("delivery", ["delivery", "delivery-leases"]),
            ("runner", ["broadcasts"]),
        ):
            sums: collections.Counter[str] = collections.Counter()
            for kind in kinds:
                sums.update(traffic.get(kind, {}))
            found[label] = {
                what: round(n / self.broadcast.messages, 3) for what, n in sorted(sums.items())
            }
        return found


def run_backend(
    backend: Backend, args: argparse.Namespace, sink_binary: Path, workdir: Path
) -> Outcome:
    with fresh_database(backend, workdir) as db:
        note(f"{backend}: setting up ...")
        setup = install(db, args.profiles)
        note(f"{backend}: raw FluxMail pool, {args.profiles:,} messages ...")
        raw = run_raw(sink_binary, args.profiles)
        note(f"{backend}: broadcast to {args.profiles:,} profiles ...")
        broadcast, spent = run_broadcast(db, setup, sink_binary, args.profiles, args)
        load = os.getloadavg()[0]
    note(
        f"{backend}: broadcast {fmt(broadcast.seconds, 1)} s ({broadcast.error or 'exact'}), "
        f"raw {fmt(raw.seconds, 1)} s ({raw.error or 'exact'})"
    )
    return Outcome(backend, raw, broadcast, spent, load)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite only")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    parser.add_argument("-n", "--profiles", type=positive, default=DEFAULT_PROFILES,
                        help=f"profiles in the segment ({DEFAULT_PROFILES:,})")  # fmt: skip
    parser.add_argument("-t", "--threads", type=positive, default=DEFAULT_THREADS,
                        help=f"delivery threads per process ({DEFAULT_THREADS})")  # fmt: skip
    parser.add_argument("-p", "--processes", type=positive, default=DEFAULT_PROCESSES,
                        help=f"worker processes ({DEFAULT_PROCESSES})")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds (900)")
    args = parser.parse_args(argv)
    chosen = [b for b, on in (("sqlite", args.sqlite), ("postgres", args.postgres)) if on]
    args.backends = chosen or ["sqlite", "postgres"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sink_binary = find_program("smtp-sink")
    if sink_binary is None:
        note("Postfix's smtp-sink is not installed: run scripts/setup-bench")
        return 2
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="gf-broadcast-bench-") as workdir:
        for backend in args.backends:
            outcomes.append(run_backend(backend, args, sink_binary, Path(workdir)))
    summaries = {o.backend: o.summary() for o in outcomes}
    for o in outcomes:
        s = summaries[o.backend]
        ratio = s["broadcast_over_raw"]
        verdict = "n/a" if s["met"] is None else ("met" if s["met"] else "NOT met")
        print(
            f"{o.backend}: broadcast to {args.profiles:,} profiles sent in "
            f"{fmt(s['broadcast_seconds'], 1)} s ({fmt(o.broadcast.rate)} msg/s"
            f"{'' if o.broadcast.exact else f'; FAILED: {o.broadcast.error}'}); FluxMail raw "
            f"pool {fmt(o.raw.rate)} msg/s in {fmt(o.raw.seconds, 1)} s; broadcast / raw = "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'}; target <= {TARGET_SECONDS:.0f} s: "
            f"{verdict}; workers' CPU {fmt(s['worker_cpu_us_per_message'])} us/msg"
            + ("" if s["database_cpu_us_per_message"] is None
               else f", database's {fmt(s['database_cpu_us_per_message'])} us/msg")
            + f"; load {o.load:.1f}"
        )  # fmt: skip
        for label, figures in s["per_message"].items():
            shown = ", ".join(f"{what} {n:.2f}" for what, n in figures.items())
            print(f"  {label} per message: {shown}")
    exact = all(o.raw.exact and o.broadcast.exact for o in outcomes)
    report = {
        "benchmark": "broadcast_throughput",
        "profiles": args.profiles,
        "processes": args.processes,
        "threads": args.threads,
        "target_seconds": TARGET_SECONDS,
        "counts_exact": exact,
        "databases": summaries,
        "versions": versions(),
    }
    print(json.dumps(report, separators=(",", ":")))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
