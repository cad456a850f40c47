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
import contextlib
import json
import os
import subprocess
import sys
import tempfile
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
from sqlalchemy import update  # noqa: E402
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


def worker_process(
    setup: Install,
    provider_id: str,
    port: int,
    args: argparse.Namespace,
    siblings: Sequence[int],
    ready: int,
) -> tuple[int, int]:
    """Fork one worker process (``app.create_worker``, as ``getfluxly worker`` runs it) that
    starts when a byte arrives on its pipe, writes a byte to ``ready`` once it runs, and
    stops at the pipe's end; (pid, write end)."""
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
        worker.start()
        os.write(ready, b"r")
        os.read(read_end, 1)  # b"" once the parent closes its end: stop
        worker.stop()
        db.dispose()
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def run_broadcast(
    db: Database, setup: Install, sink_binary: Path, n: int, args: argparse.Namespace
) -> tuple[PhaseResult, float | None]:
    """The broadcast phase, and the CPU seconds its worker processes spent while it ran."""
    result = PhaseResult("workers", n)
    cpu: float | None = None
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
            children.append(worker_process(setup, provider, sink.port, args, pipes, ready_write))
        os.close(ready_write)
        failed = 0
        try:
            for _pid, pipe in children:
                os.write(pipe, b"g")
            with api_server(setup) as api:
                for _ in children:  # every worker past its first segment pass
                    if not os.read(ready_read, 1):
                        raise RuntimeError("a worker process ended before it started")
                made = api.post(
                    f"/v1/projects/{setup.project_id}/broadcasts",
                    json={"name": "Bench", "template_id": setup.template_id,
                          "segment_id": setup.segment_id},
                )  # fmt: skip
                if made.status_code != 201:
                    raise RuntimeError(f"creating the broadcast: {made.text}")
                broadcast_id = made.json()["broadcast"]["id"]
                cpu_before = [cpu_seconds(pid) for pid, _ in children]
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
                if None not in cpu_before + cpu_after:
                    cpu = sum(cpu_after) - sum(cpu_before)  # type: ignore[arg-type]
                result.accepted = int(state["counts"]["sent"])
                if state["status"] != "sent":
                    result.error = f"status {state['status']} after {result.seconds:.0f} s"
        finally:
            os.close(ready_read)
            for pid, pipe in children:
                os.close(pipe)
                failed += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0
        result.sink_messages = sink.settled_count(n)
    if failed:
        result.error = f"{failed} worker processes failed (see stderr)"
    elif result.error is None and result.accepted != n:
        result.error = f"{result.accepted} of {n} sent"
    return result, cpu


@dataclass
class Outcome:
    backend: Backend
    raw: PhaseResult
    broadcast: PhaseResult
    #: CPU seconds of the worker processes during the broadcast (None: not on this system).
    worker_cpu: float | None
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
            "worker_cpu_seconds": self.worker_cpu,
            "worker_cpu_us_per_message": self.cpu_per_message,
            "load_average": self.load,
        }

    @property
    def cpu_per_message(self) -> float | None:
        if self.worker_cpu is None:
            return None
        return self.worker_cpu / self.broadcast.messages * 1e6


def run_backend(
    backend: Backend, args: argparse.Namespace, sink_binary: Path, workdir: Path
) -> Outcome:
    with fresh_database(backend, workdir) as db:
        note(f"{backend}: setting up ...")
        setup = install(db, args.profiles)
        note(f"{backend}: raw FluxMail pool, {args.profiles:,} messages ...")
        raw = run_raw(sink_binary, args.profiles)
        note(f"{backend}: broadcast to {args.profiles:,} profiles ...")
        broadcast, cpu = run_broadcast(db, setup, sink_binary, args.profiles, args)
        load = os.getloadavg()[0]
    note(
        f"{backend}: broadcast {fmt(broadcast.seconds, 1)} s ({broadcast.error or 'exact'}), "
        f"raw {fmt(raw.seconds, 1)} s ({raw.error or 'exact'})"
    )
    return Outcome(backend, raw, broadcast, cpu, load)


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
            f"{verdict}; workers' CPU {fmt(o.cpu_per_message)} us/msg; load {o.load:.1f}"
        )
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
