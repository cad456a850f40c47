"""GetFluxly automations: latency from an event's ``202`` to its email's acceptance by
Postfix's smtp-sink, at a steady event rate, next to FluxMail's raw rate for the same number
of messages in the same run.

Usage (from the repository root)::

    .venv/bin/python bench/automation_latency.py               # PostgreSQL, issue sizes
    .venv/bin/python bench/automation_latency.py --sqlite      # or SQLite
    .venv/bin/python bench/automation_latency.py --quick       # a smoke run (small numbers)

The server runs as it is deployed, in processes of its own (forked: none shares the GIL with
the event sender): on PostgreSQL ``--api-processes`` API processes (default 1, as
``getfluxly serve --worker-process``; 2 as ``getfluxly api --processes 2``) serving one
socket, and the worker (``app.create_worker``: ingest,
the automation runner, the delivery loop) in a process of its own, as ``getfluxly worker``
(``--one-process``: the worker in the first API process, as ``getfluxly serve``); on SQLite
one API process and the worker process, as ``getfluxly serve --worker-process`` (its
wake-ups cross processes through the channel beside the database file; ``--one-process``
for both in one). Before the clock starts:
``--profiles`` profiles (default 100,000, written set-based as rows: each with an ``email``
trait and an external id), a template, an SMTP provider on a fresh smtp-sink, and an active
automation triggered by ``signed_up`` whose first step sends. Then ``--rate`` events a
second (default 200) for ``--seconds`` seconds (default 30), each a ``signed_up`` of a
different profile, POSTed to ``/v1/events`` on a fixed schedule (asyncio: event *i* leaves
at start + i / rate whatever became of the earlier ones, over up to ``--connections``
keep-alive connections); the moment each 202 arrives is noted. Once every message is
``sent`` (or ``--timeout``), the latency of each is its ledger ``sent_at`` (recorded when
the relay's 250 was) minus its event's 202. Printed:
p50, p95, p99 and max, the rate achieved, and FluxMail's raw rate for the same number of
messages to a fresh smtp-sink (``deliver_messages.run_raw``). Target (issue 14, this 2-core
machine): p99 <= 1 s at 200 events/s with 100,000 profiles.

smtp-sink answers AUTH with 250 (not 235), so, as in ``deliver_messages.py``, the provider's
client is the server's SMTP provider with a FluxMail mailer that does not log in.

stdout: a table and one JSON line; exit status 0 when every event's message was sent, 1
otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "testkit"))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from deliver_messages import HOST, fresh_database, kept_clients, note, run_raw  # noqa: E402
from ingest_throughput import postgres_cpu  # noqa: E402
from smtp_throughput import find_program, running_sink  # noqa: E402
from sqlalchemy import Engine, event, insert, select, text  # noqa: E402
from workload import SENDER  # noqa: E402

from flux_testkit import ledger  # noqa: E402
from getfluxly_server.app import DeliveryWorker, create_app, create_worker  # noqa: E402
from getfluxly_server.crypto import Keyring  # noqa: E402
from getfluxly_server.domain import tenancy  # noqa: E402
from getfluxly_server.settings import Settings  # noqa: E402
from getfluxly_server.storage.db import Database  # noqa: E402
from getfluxly_server.storage.models import (  # noqa: E402
    AutomationRun,
    EmailProvider,
    Identity,
    Message,
    Profile,
    new_id,
    now,
)

SENT_COUNT = "SELECT count(*) FROM messages WHERE automation_id = :a AND status = 'sent'"


def build_worker(settings: Settings, db: Database, provider: str, port: int) -> DeliveryWorker:
    """The server's worker (``app.create_worker``) whose client for ``provider`` does not log
    in (see the module docstring)."""
    worker = create_worker(settings, db)
    assert isinstance(worker, DeliveryWorker)
    patched = kept_clients(db, provider, port)
    with db.read() as session:
        row = session.get(EmailProvider, provider)
        assert row is not None
        version = row.updated_at.isoformat()
    client = patched.get(provider, version, lambda: None)  # type: ignore[arg-type,return-value]
    worker.clients.get(provider, version, lambda: client)
    return worker


def _child(body: Callable[[], None]) -> int:
    """Fork a process running ``body`` then exiting; its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 0
    try:
        body()
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user + system) the processes ``pids`` have used so far, from their own
    counters (``/proc/<pid>/stat``): a measure the machine's other load does not change."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


#: Per server process (by its index): statements sent, transactions ended (commit or
#: rollback), pool checkouts (each a liveness ping on PostgreSQL). Shared memory, written by
#: the forked processes through SQLAlchemy's events.
STATEMENTS, TRANSACTIONS, CHECKOUTS = range(3)
TRIP_NAMES = ("statements", "transactions", "checkouts")
COUNTERS = len(TRIP_NAMES)


class RoundTrips:
    """The database round trips of each server process, counted in the process itself
    (SQLAlchemy's engine and pool events): statements, BEGIN and COMMIT/ROLLBACK (one
    transaction, two round trips: psycopg sends BEGIN before the first statement), and the
    pool's liveness ping at each checkout."""

    def __init__(self, processes: int) -> None:
        self.slots = multiprocessing.RawArray(ctypes.c_longlong, COUNTERS * processes)

    def install(self, index: int) -> None:
        """Count this (forked) process's round trips in slot ``index``."""
        base, slots = COUNTERS * index, self.slots

        def statement(*_args: Any) -> None:
            slots[base + STATEMENTS] += 1

        def ended(*_args: Any) -> None:
            slots[base + TRANSACTIONS] += 1

        def checkout(*_args: Any) -> None:
            slots[base + CHECKOUTS] += 1

        event.listen(Engine, "before_cursor_execute", statement)
        event.listen(Engine, "commit", ended)
        event.listen(Engine, "rollback", ended)
        from sqlalchemy.pool import Pool

        event.listen(Pool, "checkout", checkout)

    def read(self, indexes: Sequence[int]) -> list[int]:
        """Statements, transactions and checkouts summed over the processes ``indexes``."""
        return [sum(self.slots[COUNTERS * i + c] for i in indexes) for c in range(COUNTERS)]


@contextlib.contextmanager
def servers(
    settings: Settings,
    db: Database,
    provider: str,
    sink_port: int,
    *,
    api_processes: int,
    worker_apart: bool,
    trips: RoundTrips,
) -> Iterator[tuple[str, list[int]]]:
    """The server in processes of its own, as deployed (none shares the GIL with the event
    senders): ``api_processes`` forked API processes serving one listening socket (as
    ``getfluxly api --processes N``); the worker (:func:`build_worker`) in a process of its
    own when ``worker_apart`` (as ``getfluxly worker``), else in the first API process (as
    ``getfluxly serve``). Stopped with SIGTERM at the end. Yields the API's base URL and the
    processes' ids (the API processes first, then the worker's if apart); each process
    counts its round trips in ``trips`` at its index in that list."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    db.dispose()  # no connection may be shared across the fork

    def api(with_worker: bool, index: int) -> Callable[[], None]:
        def body() -> None:
            trips.install(index)
            own = Database(db.url)
            worker = build_worker(settings, own, provider, sink_port) if with_worker else None
            if worker is not None:
                worker.start()
            # Keep-alive longer than any pause of the sender: uvicorn's 5 s default closed
            # connections the client was about to reuse (a ReadError per event lost).
            config = uvicorn.Config(
                create_app(settings, own), log_level="warning", timeout_keep_alive=300
            )
            try:
                uvicorn.Server(config).run(sockets=[listener])
            finally:
                if worker is not None:
                    worker.stop()
                own.dispose()

        return body

    def worker_only() -> None:
        trips.install(api_processes)
        own = Database(db.url)
        worker = build_worker(settings, own, provider, sink_port)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        worker.start()
        stop.wait()
        worker.stop()
        own.dispose()

    pids = [_child(api(not worker_apart and n == 0, n)) for n in range(api_processes)]
    if worker_apart:
        pids.append(_child(worker_only))
    listener.close()
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.1)
        note(f"server processes: {' '.join(map(str, pids))}")
        yield url, pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            os.waitpid(pid, 0)


def make_profiles(db: Database, project_id: str, count: int) -> None:
    stamp = now()
    for start in range(0, count, 5_000):
        profiles, identities = [], []
        for n in range(start, min(count, start + 5_000)):
            profile_id = new_id("prf")
            profiles.append({
                "id": profile_id, "project_id": project_id,
                "traits": {"email": f"user{n}@example.com", "name": f"User {n}"},
                "created_at": stamp, "updated_at": stamp,
            })  # fmt: skip
            identities.append({
                "project_id": project_id, "kind": "external_id", "value": f"user{n}",
                "profile_id": profile_id, "created_at": stamp,
            })  # fmt: skip
        with db.transaction() as session:
            session.execute(insert(Profile), profiles)
            session.execute(insert(Identity), identities)
    if not db.is_sqlite:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE profiles"))
            conn.execute(text("VACUUM ANALYZE identities"))


def send_events(
    url: str, key: str, users: Sequence[int], rate: float, connections: int
) -> dict[str, float]:
    """POST one ``signed_up`` per user at ``rate`` a second; when each 202 came (epoch s).

    Paced by the schedule, not by the answers: event *i* is handed over at start + i / rate
    whatever became of the earlier ones, to the first of ``connections`` keep-alive
    connections that is free, so a slow answer delays no later event (unless every
    connection is waiting for one)."""
    return asyncio.run(_send_events(url, key, users, rate, connections))


async def _send_events(
    url: str, key: str, users: Sequence[int], rate: float, connections: int
) -> dict[str, float]:
    # A bare HTTP/1.1 client on asyncio streams, not httpx: the sender shares the machine's
    # two cores with the server, and httpx's pool spent a millisecond and more of CPU per
    # request (its connection search grows with the requests waiting), so the sender slowed
    # the server it measured. Here a request is one prepared bytes write and one read.
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    answered: dict[str, float] = {}
    errors: list[str] = []
    pending: asyncio.Queue[str | None] = asyncio.Queue()

    async def connection() -> None:
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (user := await pending.get()) is not None:
            body = b'{"event":"signed_up","external_id":"%s"}' % user.encode()
            try:
                if streams is None:
                    streams = await asyncio.open_connection(host, port)
                reader, writer = streams
                writer.write(head % len(body) + body)
                status, text, keep = await _response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                # Counted, not fatal (the report says how many); not retried, as the event
                # may have been stored.
                errors.append(type(exc).__name__)
                if streams is not None:
                    streams[1].close()
                streams = None
                continue
            if status == 202:
                answered[user] = time.time()
            else:
                errors.append(f"{status} {text[:200]}")
            if not keep:
                streams[1].close()
                streams = None
        if streams is not None:
            streams[1].close()

    loop = asyncio.get_running_loop()
    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = loop.time() + 0.5
    for index, number in enumerate(users):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.put_nowait(f"user{number}")
    for _ in workers:
        pending.put_nowait(None)
    await asyncio.gather(*workers)
    if errors:
        note(f"{len(errors)} events refused, e.g. {errors[0]}")
    return answered


async def _response(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
    """One HTTP/1.1 response: its status, its body (as text), whether the connection stays
    open. The server answers with a Content-Length (uvicorn does for JSON bodies)."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body.decode(errors="replace"), headers.get("connection") != "close"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(args: argparse.Namespace, backend: str, sink_binary: Path, workdir: Path) -> dict[str, Any]:
    events = int(args.rate * args.seconds)
    keyring_text = Keyring.generate()
    with fresh_database(backend, workdir) as db, running_sink(sink_binary) as sink:  # type: ignore[arg-type]
        settings = Settings(
            database_url=str(db.engine.url.render_as_string(hide_password=False)),
            keyring=Keyring.parse(keyring_text),
            rate_limit_per_second=100_000.0,
            rate_limit_burst=100_000,
            delivery_threads=args.delivery_threads,
        )
        with db.transaction() as session:
            workspace, workspace_key = tenancy.create_workspace(session, "Bench")
            made = tenancy.create_project(session, workspace.id, "Bench")
            project_id, secret = made.project.id, made.secret_key.plaintext
        note(f"{backend}: {args.profiles} profiles")
        make_profiles(db, project_id, args.profiles)
        template = ledger.add_template(
            db, project_id, "Welcome, {{ profile.name }}", text="Hi {{ profile.name }}"
        )
        provider = ledger.add_provider(
            db, settings.keyring, project_id, ledger.smtp_body(HOST, sink.port, from_email=SENDER)
        )
        separate = not args.one_process
        # One API process on PostgreSQL too: it carries 200 events/s with about 0.4 ms of CPU
        # an event less than two (which share its load and commit smaller groups), and the
        # two cores are shared with the worker and PostgreSQL (bench/README.md, session 8).
        api_processes = args.api_processes or 1
        if backend == "sqlite":
            api_processes = 1  # one writer at a time: more API processes would wait on it
        trips = RoundTrips(api_processes + 1)
        with servers(
            settings,
            db,
            provider,
            sink.port,
            api_processes=api_processes,
            worker_apart=separate,
            trips=trips,
        ) as (url, pids):
            api = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {workspace_key.plaintext}"}
            )
            made_automation = api.post(
                f"/v1/projects/{project_id}/automations",
                json={
                    "name": "Welcome", "trigger": {"event": "signed_up"},
                    "steps": [{"id": "welcome", "type": "send_email", "template_id": template}],
                },
            )  # fmt: skip
            assert made_automation.status_code == 201, made_automation.text
            automation_id = made_automation.json()["automation"]["id"]
            assert api.post(f"/v1/automations/{automation_id}/activate").status_code == 200
            users = secrets.SystemRandom().sample(range(args.profiles), events)
            note(f"{backend}: {events} events at {args.rate}/s")
            load_before = os.getloadavg()[0]
            api_pids, worker_pids = pids[:api_processes], pids[api_processes:]
            apis, workers = range(api_processes), range(api_processes, len(pids))
            cpu_before = cpu_seconds(pids)
            api_before, worker_before = cpu_seconds(api_pids), cpu_seconds(worker_pids)
            pg_before = postgres_cpu() if backend == "postgres" else 0.0
            trips_before = trips.read(apis), trips.read(workers)
            sender_before = time.process_time()
            began = time.monotonic()
            answered = send_events(url, secret, users, args.rate, args.connections)
            sending_seconds = time.monotonic() - began
            sender_cpu = time.process_time() - sender_before
            # The API's share is read when the last answer came: what it did for the events.
            api_cpu = cpu_seconds(api_pids) - api_before
            api_trips = [b - a for a, b in zip(trips_before[0], trips.read(apis), strict=True)]
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                with db.engine.connect() as conn:
                    done = conn.execute(text(SENT_COUNT), {"a": automation_id}).scalar()
                if done == len(answered):
                    break
                time.sleep(0.2)
            load_after = os.getloadavg()[0]
            cpu_used = cpu_seconds(pids) - cpu_before
            worker_cpu = cpu_seconds(worker_pids) - worker_before
            pg_cpu = postgres_cpu() - pg_before if backend == "postgres" else None
            worker_trips = [
                b - a for a, b in zip(trips_before[1], trips.read(workers), strict=True)
            ]
            query = (
                select(
                    Identity.value, Message.sent_at, AutomationRun.entered_at, Message.created_at
                )
                .join(Identity, Identity.profile_id == Message.profile_id)
                .join(AutomationRun, AutomationRun.profile_id == Message.profile_id)
                .where(Identity.kind == "external_id", Message.automation_id == automation_id)
                .where(AutomationRun.automation_id == automation_id, Message.status == "sent")
            )
        with db.read() as session:
            rows = session.execute(query).all()
        sink_count = sink.settled_count(len(rows))
    latencies: list[float] = []
    # Where the time goes: 202 -> run entered (ingest, stitching, the trigger), entered ->
    # message recorded (the runner), recorded -> sent (the delivery loop and the relay).
    hops: dict[str, list[float]] = {"entered": [], "recorded": [], "sent": []}
    for user, sent_at, entered_at, created_at in rows:
        if user in answered and sent_at is not None:
            latencies.append(sent_at.timestamp() - answered[user])
            hops["entered"].append(entered_at.timestamp() - answered[user])
            hops["recorded"].append((created_at - entered_at).total_seconds())
            hops["sent"].append((sent_at - created_at).total_seconds())
    raw = run_raw(sink_binary, max(1, len(answered)))
    result: dict[str, Any] = {
        "events": events, "accepted": len(answered), "sent": len(rows), "sink_messages": sink_count,
        "rate_achieved": round(len(answered) / sending_seconds, 1) if sending_seconds else None,
        "raw_per_second": round(raw.rate, 1) if raw.rate else None,
        "complete": len(rows) == len(answered) == events and sink_count == len(rows),
        "load_average": [round(load_before, 1), round(load_after, 1)],
        # The server's processes' own CPU time per accepted event, from the sender's first
        # event until every message was sent (load-independent, unlike the latencies).
        "server_cpu_ms_per_event": (
            round(1000 * cpu_used / len(answered), 2) if answered else None
        ),
    }  # fmt: skip
    if answered:

        def per_event(seconds: float | None) -> float | None:
            return None if seconds is None else round(1000 * seconds / len(answered), 2)

        # Where the CPU goes, per accepted event: the API processes (while the events were
        # sent), the worker process if apart (until every message was sent), every
        # PostgreSQL process on the machine (others' included: an approximation), and the
        # sender (this process, while sending).
        result["cpu_ms_per_event"] = {
            "api": per_event(api_cpu), "worker": per_event(worker_cpu) if separate else None,
            "postgres": per_event(pg_cpu), "sender": per_event(sender_cpu),
        }  # fmt: skip
        # Database round trips per accepted event (statements, transactions: BEGIN and
        # COMMIT each one more, pool checkouts: a ping each on PostgreSQL).
        result["round_trips_per_event"] = {
            role: {
                name: round(count / len(answered), 2)
                for name, count in zip(TRIP_NAMES, counts, strict=True)
            }
            for role, counts in (("api", api_trips), ("worker", worker_trips))
        }  # fmt: skip
    if latencies:
        result.update({
            "p50_ms": round(1000 * statistics.median(latencies)),
            "p95_ms": round(1000 * percentile(latencies, 0.95)),
            "p99_ms": round(1000 * percentile(latencies, 0.99)),
            "max_ms": round(1000 * max(latencies)),
            "median_hops_ms": {k: round(1000 * statistics.median(v)) for k, v in hops.items()},
        })  # fmt: skip
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sqlite", action="store_const", dest="backend", const="sqlite")
    which.add_argument("--postgres", action="store_const", dest="backend", const="postgres")
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0, help="events a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--connections", type=int, default=64, help="the event sender's HTTP connections"
    )
    parser.add_argument(
        "--api-processes", type=int, help="PostgreSQL: API processes (1; SQLite: always 1)"
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--delivery-threads", type=int, default=2, help="GETFLUXLY_DELIVERY_THREADS (2)"
    )
    parser.add_argument("--quick", action="store_true", help="500 profiles, 50/s for 4 s")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="the worker in the (first) API process (as getfluxly serve), not its own",
    )
    args = parser.parse_args(argv)
    args.backend = args.backend or "postgres"
    if args.quick:
        args.profiles, args.rate, args.seconds = 500, 50.0, 4.0
    if args.rate * args.seconds > args.profiles:
        parser.error("more events than profiles: each event is a different profile's")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sink_binary = find_program("smtp-sink")
    if sink_binary is None:
        note("smtp-sink is not installed: run scripts/setup-bench")
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        result = run(args, args.backend, sink_binary, Path(workdir))
    print(
        f"{args.backend}: {result['accepted']} events at {result['rate_achieved']}/s "
        f"(asked {args.rate}/s), {args.profiles} profiles: latency 202 -> smtp-sink "
        f"p50 {result.get('p50_ms')} ms, p95 {result.get('p95_ms')} ms, "
        f"p99 {result.get('p99_ms')} ms, max {result.get('max_ms')} ms; "
        f"FluxMail raw {result['raw_per_second']} msg/s for {result['accepted']} messages; "
        f"median hops {result.get('median_hops_ms')} ms; server CPU "
        f"{result['server_cpu_ms_per_event']} ms/event ({result.get('cpu_ms_per_event')}); "
        f"round trips/event {result.get('round_trips_per_event')}; load average "
        f"{result['load_average'][0]} -> {result['load_average'][1]}"
    )
    report = {
        "benchmark": "automation_latency", "backend": args.backend, "profiles": args.profiles,
        "rate": args.rate, "seconds": args.seconds, "cpus": os.cpu_count(),
        **result,
    }  # fmt: skip
    print(json.dumps(report))
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
