"""GetFluxly ingest throughput: the batch endpoint next to a raw bulk insert of the same rows.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/ingest_throughput.py              # SQLite and PostgreSQL, N=50,000
    .venv/bin/python bench/ingest_throughput.py --sqlite     # one database only
    .venv/bin/python bench/ingest_throughput.py --quick      # N=2,000, M=300, SQLite: < 30 s
    .venv/bin/python bench/ingest_throughput.py --profile    # plus a profiled batch run

For each database, in one invocation, on a fresh database (SQLite file or PostgreSQL
database) migrated by ``getfluxly migrate`` and served by the real ``getfluxly api`` (or
``serve``) subprocess:

1. ``api-batch``: C client threads (http.client, one connection each) post N events in batches of
   100 to ``POST /v1/events/batch``, each batch with its own ``X-Idempotency-Key`` as the SDK
   sends it. Only events in a 202 answer that accepted the whole batch count; afterwards the
   ``events`` table must hold exactly N rows for the project.
2. ``raw-1`` and ``raw-C``: the same N rows (what the server's own ``validate`` makes of the
   same events, built before the clock starts) inserted straight into a fresh copy of the
   ``events`` table in the same database, through the server's own ``Database`` engine
   (same pragmas, same ``BEGIN IMMEDIATE`` on SQLite) and its own ``insert_rows`` (the
   statement ``storage/events.py`` runs, ``ON CONFLICT DO NOTHING``), in batches of 100, each
   batch in its own committed transaction. Once over one
   connection (``raw-1``), once over C (``raw-c``), and once over one connection in batches
   of 1,000 (``raw-group``): the server commits the events of concurrent requests together,
   up to 1,000 in a transaction (``domain/ingest.py`` MAX_EVENTS_PER_COMMIT), so the storage
   limit must be allowed the same. The best of the three is the storage limit.
3. ``api-single``: C clients post M single events to ``POST /v1/events``, one per request.
   ``http-floor`` (information only): the same clients send M ``GET /healthz``, what the
   HTTP stack manages with nothing behind it.
4. ``raw-single`` (information only): M rows inserted and committed one at a time over C
   connections, the storage limit of one-event requests.

The worker that processes events after the 202 is not running during the measurement by
default (``--worker none``: ``getfluxly api`` alone), so the API does the same work as the
raw insert; ``--worker thread`` runs ``getfluxly serve`` (worker threads in the API process)
and ``--worker process`` a separate ``getfluxly worker``; the output says which.

The per-key rate limit is raised for the benchmark (it is a policy, not a capacity: the
default of 1,000 requests a second would cap the single-event phase at its own target).

stdout is a table, the ratios against the targets, and one final JSON line with every
number; progress goes to stderr. Exit status 0 when every count was exact (targets not met
are not failures), 1 when a run lost, rejected or failed events, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

# flux_testkit.pgadmin: the test kit is not installed, the tests find it on their path too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testkit"))

import httpx
import psycopg
from psycopg import sql as pgsql
from sqlalchemy import Engine, MetaData, Table, create_engine, inspect, text
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import quoted_name

from flux_testkit import pgadmin
from getfluxly_server.domain.ingest import MAX_EVENTS_PER_COMMIT, validate
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.events import insert_rows
from getfluxly_server.storage.models import Base, Event

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

Backend = Literal["sqlite", "postgres"]
WorkerMode = Literal["none", "thread", "process"]

DEFAULT_EVENTS, DEFAULT_SINGLE, DEFAULT_CLIENTS, DEFAULT_REPEATS = 50_000, 5_000, 8, 1
QUICK_EVENTS, QUICK_SINGLE = 2_000, 300
BATCH_SIZE = 100  # the endpoint's maximum, and what the SDK sends
TARGET_BATCH_RATIO = 0.5  # api-batch events/s / best raw events/s, per database
TARGET_SINGLE_RPS = 1_000.0  # api-single requests/s
RAW_PHASES = ("raw-1", "raw-group", "raw-c")  # the storage limit is the best of these

# The tests' convention (scripts/setup-postgres, testkit/flux_testkit/gfserver.py).
POSTGRES_URL_ENV = "GETFLUXLY_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://getfluxly:getfluxly@127.0.0.1:5432/postgres"

#: What the benchmark sets in the server's environment on top of the database and key. The
#: rate limit is raised so the limiter never answers 429 (it would cap the single phase).
SERVER_ENV = {
    "GETFLUXLY_RATE_LIMIT_PER_SECOND": "1000000",
    "GETFLUXLY_RATE_LIMIT_BURST": "10000000",
}
WORKER_LABELS: dict[str, str] = {
    "none": "not running during the measurement (getfluxly api only)",
    "thread": "running during the measurement, as threads of the API process (getfluxly serve)",
    "process": "running during the measurement, as a separate getfluxly worker process",
}
STARTUP_TIMEOUT, STOP_TIMEOUT, CLI_TIMEOUT, REQUEST_TIMEOUT = 60.0, 30.0, 120.0, 120.0
PROFILE_INTERVAL = 0.001
PROFILED_SERVER = "_profiled-server"  # the hidden first argument of the profiling wrapper


def note(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the workload

EVENT_NAMES = (
    "page_viewed",
    "product_viewed",
    "added_to_cart",
    "checkout_started",
    "order_completed",
)
CATEGORIES = ("shoes", "jackets", "bags", "hats", "socks")
LOCALES = ("en-GB", "de-DE", "fr-FR", "nl-NL")


def make_events(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` realistic track events of about 300 bytes of JSON each, the same for every
    run with the same ``seed``: a snake_case name, an anonymous id (and for half of them an
    external id), five properties, a small context, a timestamp and a UUID message_id."""
    rng = random.Random(seed)
    start = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    events = []
    for i in range(count):
        person = rng.randrange(20_000)
        event: dict[str, Any] = {
            "event": EVENT_NAMES[rng.randrange(len(EVENT_NAMES))],
            "type": "track",
            "anonymous_id": f"anon_{person:05d}_{rng.getrandbits(48):012x}",
        }
        if person % 2:
            event["external_id"] = f"user_{person:06d}"
        event["properties"] = {
            "product_id": f"sku_{rng.randrange(100_000):05d}",
            "price": round(rng.uniform(5, 300), 2),
            "currency": "EUR",
            "category": CATEGORIES[rng.randrange(len(CATEGORIES))],
            "position": rng.randrange(1, 40),
        }
        event["context"] = {
            "ip": f"203.0.113.{rng.randrange(1, 255)}",
            "locale": LOCALES[rng.randrange(len(LOCALES))],
        }
        moment = start + timedelta(milliseconds=250 * i + rng.randrange(250))
        event["timestamp"] = moment.isoformat(timespec="milliseconds")
        event["message_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        events.append(event)
    return events


def encode(value: Any) -> bytes:
    """JSON as a client library sends it (compact separators, UTF-8)."""
    return json.dumps(value, separators=(",", ":")).encode()


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass(frozen=True)
class Workload:
    """Everything sent, encoded before any clock starts."""

    batch_events: list[dict[str, Any]]
    batch_bodies: list[bytes]
    batch_sizes: list[int]
    batch_keys: list[str]
    single_events: list[dict[str, Any]]
    single_bodies: list[bytes]
    warmup_batches: list[bytes]
    warmup_singles: list[bytes]

    @property
    def event_bytes(self) -> float:
        """Average size of one event's JSON as posted alone."""
        sample = self.batch_events[: min(1000, len(self.batch_events))]
        return statistics.fmean(len(encode(e)) for e in sample)


def build_workload(events: int, singles: int, clients: int) -> Workload:
    batch_events = make_events(events, seed=1)
    batches = chunks(batch_events, BATCH_SIZE)
    single_events = make_events(singles, seed=2)
    warmup = make_events(clients * 11, seed=3)
    return Workload(
        batch_events=batch_events,
        batch_bodies=[encode({"events": batch}) for batch in batches],
        batch_sizes=[len(batch) for batch in batches],
        batch_keys=[
            f"bench-{uuid.UUID(int=random.Random(i).getrandbits(128))}" for i in range(len(batches))
        ],
        single_events=single_events,
        single_bodies=[encode(event) for event in single_events],
        warmup_batches=[encode({"events": b}) for b in chunks(warmup[: clients * 10], 10)],
        warmup_singles=[encode(event) for event in warmup[clients * 10 :]],
    )


# --------------------------------------------------------------------------- measurements

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in path.read_text().split()]
    except OSError:
        return []


def postgres_cpu() -> float:
    """CPU seconds used so far by every PostgreSQL process on this machine (backends,
    WAL writer, checkpointer...; other users' included, and a backend that exited between
    two readings takes its CPU with it: an approximation)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = stat.rpartition(")")
        if head.endswith("(postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@dataclass
class Meter:
    """Wall clock and CPU of the bench process, the server processes and PostgreSQL."""

    server_pids: list[int]
    postgres: bool
    wall: float = 0.0
    bench_cpu: float = 0.0
    server_cpu: float | None = 0.0
    postgres_cpu: float | None = None

    def _server(self) -> float | None:
        readings = [process_cpu(pid) for pid in self.server_pids]
        return None if any(r is None for r in readings) else sum(r or 0.0 for r in readings)

    def start(self) -> None:
        self._server0 = self._server()
        self._pg0 = postgres_cpu() if self.postgres else 0.0
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.bench_cpu = time.process_time() - self._cpu0
        server1 = self._server()
        self.server_cpu = (
            None if server1 is None or self._server0 is None else server1 - self._server0
        )
        self.postgres_cpu = postgres_cpu() - self._pg0 if self.postgres else None


@dataclass
class PhaseResult:
    """One timed phase of one round. ``accepted``: what the clients were told (202 answers,
    or rows RETURNING said were new); ``stored``: what the database holds afterwards."""

    phase: str
    what: str
    conns: int
    events: int
    requests: int
    seconds: float = 0.0
    accepted: int = 0
    stored: int | None = None
    failures: list[str] = field(default_factory=list)
    failed_requests: int = 0
    bench_cpu: float = 0.0
    server_cpu: float | None = None
    postgres_cpu: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    drain_seconds: float | None = None
    info_only: bool = False

    @property
    def exact(self) -> bool:
        return not self.failures and self.accepted == self.events and self.stored == self.events

    @property
    def events_per_second(self) -> float | None:
        return self.events / self.seconds if self.exact and self.seconds > 0 else None

    @property
    def requests_per_second(self) -> float | None:
        return self.requests / self.seconds if self.exact and self.seconds > 0 else None

    def take(self, meter: Meter) -> None:
        self.seconds, self.bench_cpu = meter.wall, meter.bench_cpu
        self.server_cpu, self.postgres_cpu = meter.server_cpu, meter.postgres_cpu

    def take_run(self, run: ClientRun) -> None:
        """What the clients saw: acceptances, failures, latency percentiles."""
        self.accepted, self.failures = run.accepted, run.failures
        self.failed_requests = run.failed_requests
        p50, p99 = percentile(run.latencies, 0.5), percentile(run.latencies, 0.99)
        self.latency_ms_p50 = p50 * 1000 if p50 is not None else None
        self.latency_ms_p99 = p99 * 1000 if p99 is not None else None

    def to_json(self) -> dict[str, Any]:
        result = asdict(self)
        result.update(
            exact=self.exact,
            events_per_second=self.events_per_second,
            requests_per_second=self.requests_per_second,
        )
        return result


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------- databases


@dataclass
class BenchDatabase:
    """A fresh database for one round: a SQLite file, or a PostgreSQL database that is
    dropped at the end."""

    backend: Backend
    url: str  # what the server gets (GETFLUXLY_DATABASE_URL)
    admin_url: str | None = None
    name: str | None = None

    @property
    def sqlalchemy_url(self) -> str:
        if self.url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.url[len("postgresql://") :]
        return self.url

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        engine = create_engine(self.sqlalchemy_url, poolclass=NullPool)
        try:
            yield engine
        finally:
            engine.dispose()

    def scalar(self, statement: str, **params: Any) -> int:
        with self.engine() as engine, engine.connect() as conn:
            return int(conn.execute(text(statement), params).scalar_one())

    def drop(self) -> None:
        """Drop the PostgreSQL database, or delete the SQLite file and its WAL."""
        if self.backend == "sqlite":
            path = Path(self.url.split("///", 1)[1])
            for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                part.unlink(missing_ok=True)
        elif self.admin_url and self.name:
            pgadmin.drop_database(self.admin_url, self.name)


def postgres_admin(admin_url: str, statement: pgsql.Composed) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE) on the admin URL."""
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)
    except psycopg.OperationalError as exc:
        shown = urlsplit(admin_url)
        if shown.password:
            shown = shown._replace(netloc=shown.netloc.replace(f":{shown.password}@", ":***@"))
        raise RuntimeError(
            f"PostgreSQL at {urlunsplit(shown)} is not usable: {exc}\nRun scripts/setup-postgres "
            f"(as root) or set {POSTGRES_URL_ENV} to a role that may CREATE DATABASE."
        ) from exc


def new_database(backend: Backend, workdir: Path) -> BenchDatabase:
    if backend == "sqlite":
        path = workdir / f"getfluxly-{secrets.token_hex(3)}.db"
        return BenchDatabase("sqlite", f"sqlite:///{path}")
    admin_url = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
    name = f"gf_bench_{secrets.token_hex(6)}"
    postgres_admin(admin_url, pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    return BenchDatabase("postgres", url, admin_url=admin_url, name=name)


def raw_table(name: str) -> Table:
    """A copy of the server's ``events`` table (columns, types, defaults, unique constraint,
    indexes and foreign key) under another name, with its own index and constraint names."""
    metadata = MetaData()
    for parent in ("workspaces", "projects"):  # so the foreign key resolves
        Base.metadata.tables[parent].to_metadata(metadata)
    table = cast(Table, Event.__table__).to_metadata(metadata, name=name)
    for index in table.indexes:
        index.name = quoted_name(f"{name}_{index.name}", None)
    for constraint in table.constraints:
        if isinstance(constraint.name, str):
            constraint.name = f"{name}_{constraint.name}"
    return table


def schema_signature(engine: Engine, table: str) -> list[str]:
    """The table's shape as text (column types, indexes, unique and foreign keys), with the
    table's own name removed from object names, to compare two tables."""
    found = inspect(engine)
    columns = [f"{c['name']} {c['type']} null={c['nullable']}" for c in found.get_columns(table)]
    indexes = [
        f"index {i['column_names']} unique={bool(i['unique'])}" for i in found.get_indexes(table)
    ]
    uniques = [f"unique {u['column_names']}" for u in found.get_unique_constraints(table)]
    foreign = [
        f"fk {f['constrained_columns']}->{f['referred_table']}{f['referred_columns']}"
        for f in found.get_foreign_keys(table)
    ]
    return sorted(columns) + sorted(indexes) + sorted(uniques) + sorted(foreign)


# --------------------------------------------------------------------------- the server


def getfluxly_command() -> list[str]:
    script = Path(sys.executable).with_name("getfluxly")
    if script.exists():
        return [str(script)]
    found = shutil.which("getfluxly")
    if found is None:
        raise RuntimeError("the getfluxly command is not installed (run scripts/setup)")
    return [found]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_encryption_key() -> str:
    return f"kbench:{base64.b64encode(secrets.token_bytes(32)).decode()}"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One context for every httpx client (each would build its own otherwise)."""
    return ssl.create_default_context()


@dataclass
class Projects:
    batch: tuple[str, str]  # (project id, secret key)
    single: tuple[str, str]
    warmup: tuple[str, str]


class Server:
    """The real server on ``database``: ``getfluxly api`` or ``serve`` (optionally under the
    profiling wrapper) on a free port, plus an optional ``getfluxly worker`` process."""

    def __init__(
        self,
        database: BenchDatabase,
        workdir: Path,
        worker: WorkerMode,
        profile_dir: Path | None = None,
        processes: int = 1,
    ) -> None:
        self.database = database
        self.workdir = workdir
        self.processes_flag = ["--processes", str(processes)] if processes > 1 else []
        self.worker_mode = worker
        self.profile_dir = profile_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GETFLUXLY_")}
        env.update(SERVER_ENV)
        env.update(
            GETFLUXLY_DATABASE_URL=database.url,
            GETFLUXLY_ENCRYPTION_KEYS=new_encryption_key(),
            GETFLUXLY_PUBLIC_URL=self.url,
        )
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = workdir / f"server-{self.port}.log"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*getfluxly_command(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"getfluxly {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start(self) -> str:
        """Migrate, create the workspace, start the processes; returns the workspace key."""
        self.cli("migrate")
        workspace_key: str = json.loads(self.cli("workspace", "create", "Bench"))["workspace_key"]
        mode = "serve" if self.worker_mode == "thread" else "api"
        args = [mode, "--host", "127.0.0.1", "--port", str(self.port), *self.processes_flag]
        if self.profile_dir is not None:
            self.api = self._spawn(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    PROFILED_SERVER,
                    str(self.profile_dir),
                    *args,
                ]
            )
        else:
            self.api = self._spawn([*getfluxly_command(), *args])
        self._wait_healthy()
        if self.worker_mode == "process":
            self._spawn([*getfluxly_command(), "worker"])
        return workspace_key

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=1.0, verify=tls_context()) as probe:
            while time.monotonic() < deadline:
                if self.api.poll() is not None:
                    raise RuntimeError(f"the server exited at start-up:\n{self.logs()}")
                with contextlib.suppress(httpx.TransportError):
                    if probe.get("/healthz").status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"the server was not healthy in {STARTUP_TIMEOUT:.0f} s:\n{self.logs()}")

    def create_projects(self, workspace_key: str) -> Projects:
        made = []
        headers = {"Authorization": f"Bearer {workspace_key}"}
        with httpx.Client(
            base_url=self.url, headers=headers, timeout=30, verify=tls_context()
        ) as c:
            for name in ("Bench batch", "Bench single", "Bench warm-up"):
                response = c.post("/v1/projects", json={"name": name})
                if response.status_code != 201:
                    raise RuntimeError(f"POST /v1/projects: {response.status_code} {response.text}")
                body = response.json()
                made.append((body["project"]["id"], body["keys"]["secret"]["key"]))
        return Projects(*made)

    @property
    def pids(self) -> list[int]:
        """The server's live processes, with the API's children (``--processes``)."""
        live = [p.pid for p in self.processes if p.poll() is None]
        return live + [child for pid in live for child in child_pids(pid)]

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


# --------------------------------------------------------------------------- the phases


@dataclass
class ClientRun:
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    failed_requests: int = 0
    latencies: list[float] = field(default_factory=list)


def post_all(
    base_url: str,
    key: str,
    path: str,
    bodies: Sequence[bytes | None],
    expected: Sequence[int],
    clients: int,
    meter: Meter,
    idempotency_keys: Sequence[str] | None = None,
) -> ClientRun:
    """Send every body from ``clients`` threads (one keep-alive connection each), taking
    bodies in order from a shared cursor: a POST of the body, or a GET where it is None. A
    POST counts only when it answered 202 with ``accepted`` equal to the events it carried
    and nothing rejected; a GET when it answered 200. ``meter`` is started once every
    client is connected and stopped when the last answer is in.

    The clients use the standard library's ``http.client``, about a tenth of httpx's CPU
    per request: the load generator shares the machine with the server, and what is
    measured is the server (``bench us/ev`` in the table is the clients' own cost).
    """
    run = ClientRun()
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))
    barrier = threading.Barrier(clients + 1)
    address = urlsplit(base_url)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def fail(message: str) -> None:
        with lock:
            run.failed_requests += 1
            if len(run.failures) < 5:
                run.failures.append(message)

    def exchange(
        connection: http.client.HTTPConnection, body: bytes | None, extra: dict[str, str]
    ) -> tuple[int, bytes]:
        method = "GET" if body is None else "POST"
        connection.request(method, path, body=body, headers={**headers, **extra})
        response = connection.getresponse()
        return response.status, response.read()

    def work() -> None:
        accepted, latencies = 0, []
        connection = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=REQUEST_TIMEOUT
        )
        try:
            try:
                connection.request("GET", "/healthz")  # connected before the clock starts
                connection.getresponse().read()
            finally:
                barrier.wait()
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    break
                extra = {"X-Idempotency-Key": idempotency_keys[index]} if idempotency_keys else {}
                began = time.perf_counter()
                try:
                    status, text = exchange(connection, bodies[index], extra)
                except (OSError, http.client.HTTPException) as exc:
                    fail(f"request {index}: {type(exc).__name__}: {exc}")
                    connection.close()  # http.client reconnects on the next request
                    continue
                latencies.append(time.perf_counter() - began)
                if bodies[index] is None:
                    if status != 200:
                        fail(f"request {index}: {status} {text[:200]!r}")
                    continue
                if status != 202:
                    fail(f"request {index}: {status} {text[:200]!r}")
                    continue
                answer = json.loads(text)
                if answer.get("accepted") != expected[index] or answer.get("rejected") != 0:
                    fail(f"request {index}: 202 but {text[:200]!r}")
                    continue
                accepted += expected[index]
        finally:
            connection.close()
        with lock:
            run.accepted += accepted
            run.latencies += latencies

    threads = [threading.Thread(target=work, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()  # every client is connected
    meter.start()
    for thread in threads:
        thread.join()
    meter.stop()
    return run


def run_floor_phase(server: Server, *, requests: int, clients: int) -> PhaseResult:
    """``GET /healthz`` from the same clients: what the HTTP stack (uvicorn, FastAPI, the
    clients) manages with no work behind it, the ceiling of ``api-single`` (information)."""
    result = PhaseResult(
        "http-floor", "GET /healthz, no work behind it (information)", clients, requests,
        requests, info_only=True,
    )  # fmt: skip
    meter = Meter(server.pids, postgres=False)
    run = post_all(server.url, "", "/healthz", [None] * requests, [0] * requests, clients, meter)
    result.take(meter)
    result.take_run(run)
    result.accepted = result.stored = requests - run.failed_requests
    return result


def run_api_phase(
    server: Server,
    database: BenchDatabase,
    project: tuple[str, str],
    *,
    batch: bool,
    workload: Workload,
    clients: int,
) -> PhaseResult:
    project_id, key = project
    if batch:
        bodies, sizes, keys = workload.batch_bodies, workload.batch_sizes, workload.batch_keys
        result = PhaseResult(
            "api-batch",
            f"POST /v1/events/batch, {BATCH_SIZE} events each, X-Idempotency-Key",
            clients,
            sum(sizes),
            len(bodies),
        )
        path: str = "/v1/events/batch"
    else:
        bodies, keys = workload.single_bodies, []
        sizes = [1] * len(bodies)
        result = PhaseResult(
            "api-single", "POST /v1/events, one event each", clients, len(bodies), len(bodies)
        )
        path = "/v1/events"
    meter = Meter(server.pids, postgres=database.backend == "postgres")
    run = post_all(server.url, key, path, bodies, sizes, clients, meter, keys or None)
    result.take(meter)
    result.take_run(run)
    result.stored = database.scalar(
        "SELECT count(*) FROM events WHERE project_id = :p", p=project_id
    )
    if result.stored != result.events:
        result.failures.append(f"the events table holds {result.stored} rows, not {result.events}")
    return result


def drain(database: BenchDatabase, timeout: float) -> float | None:
    """Wait until the worker has processed every stored event; seconds waited, or None if
    ``timeout`` passed first."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if database.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL") == 0:
            return time.perf_counter() - began
        time.sleep(0.2)
    return None


def run_raw_phase(
    database: BenchDatabase,
    rows: list[dict[str, Any]],
    *,
    conns: int,
    batch_size: int,
    phase: str,
    what: str,
    info_only: bool = False,
) -> PhaseResult:
    """Insert ``rows`` into a fresh copy of the events table, ``batch_size`` rows per
    statement and transaction, over ``conns`` connections held for the whole phase."""
    batches = chunks(rows, batch_size)
    result = PhaseResult(phase, what, conns, len(rows), len(batches), info_only=info_only)
    table = raw_table(f"bench_{phase.replace('-', '_')}")
    db = Database(database.sqlalchemy_url)  # the server's engine: same pragmas and BEGIN
    try:
        table.create(db.engine)
        if schema_signature(db.engine, "events") != schema_signature(db.engine, table.name):
            note(f"   note: {table.name} differs from events in shape (see schema_signature)")
        lock = threading.Lock()
        cursor = iter(range(len(batches)))
        barrier = threading.Barrier(conns + 1)
        inserted = [0] * conns

        def fail(message: str) -> None:
            with lock:
                result.failed_requests += 1
                if len(result.failures) < 5:
                    result.failures.append(message)

        def work(slot: int) -> None:
            with db.engine.connect() as conn:
                try:
                    conn.execute(text("SELECT 1"))  # connected (and pragmas set) beforehand
                    conn.commit()
                finally:
                    barrier.wait()
                while True:
                    with lock:
                        index = next(cursor, None)
                    if index is None:
                        break
                    try:
                        with conn.begin():
                            inserted[slot] += insert_rows(conn, table, batches[index])
                    except Exception as exc:
                        fail(f"batch {index}: {type(exc).__name__}: {exc}"[:300])

        meter = Meter([], postgres=database.backend == "postgres")
        threads = [threading.Thread(target=work, args=(i,)) for i in range(conns)]
        for thread in threads:
            thread.start()
        barrier.wait()
        meter.start()
        for thread in threads:
            thread.join()
        meter.stop()
        result.take(meter)
        result.server_cpu = None  # the raw insert runs in the bench process (bench_cpu)
        result.accepted = sum(inserted)
        result.stored = database.scalar(f"SELECT count(*) FROM {table.name}")  # noqa: S608
        if result.stored != result.events:
            result.failures.append(f"{table.name} holds {result.stored} rows, not {result.events}")
    finally:
        db.dispose()
    return result


def warm_up(server: Server, project: tuple[str, str], workload: Workload, clients: int) -> None:
    """A few small requests from every client before any clock starts (lazy imports,
    statement caches, pool connections); they go to a project of their own."""
    _, key = project
    meter = Meter([], postgres=False)
    for path, bodies in (
        ("/v1/events/batch", workload.warmup_batches),
        ("/v1/events", workload.warmup_singles),
    ):
        expected = [10 if path.endswith("batch") else 1] * len(bodies)
        run = post_all(server.url, key, path, bodies, expected, clients, meter)
        if run.failures:
            raise RuntimeError(f"warm-up failed: {run.failures}")


@dataclass
class Round:
    """One round on one database: its phases by name, or why it stopped."""

    backend: Backend
    number: int
    phases: dict[str, PhaseResult]
    error: str | None = None

    def rate(self, phase: str) -> float | None:
        result = self.phases.get(phase)
        return result.events_per_second if result is not None else None


def run_round(
    backend: Backend,
    workload: Workload,
    args: argparse.Namespace,
    workdir: Path,
    number: int = 1,
    profile_dir: Path | None = None,
    only: str | None = None,
) -> Round:
    """One fresh database and server; the phases interleaved raw, API, raw, API, raw so a
    noisy stretch of the machine does not fall on one side only (``only``: that phase
    alone, for a profile)."""
    database = new_database(backend, workdir)
    # Several API processes are a PostgreSQL deployment (SQLite refuses them).
    processes = args.api_processes if backend == "postgres" else 1
    server = Server(database, workdir, args.worker, profile_dir, processes)
    phases: dict[str, PhaseResult] = {}
    try:
        workspace_key = server.start()
        projects = server.create_projects(workspace_key)
        received = datetime.now(UTC)
        rows = [validate(e, projects.batch[0], received) for e in workload.batch_events]
        single_rows = [validate(e, projects.single[0], received) for e in workload.single_events]
        warm_up(server, projects.warmup, workload, args.clients)
        if args.worker != "none":
            drain(database, args.drain_timeout)
        c = args.clients
        steps: list[tuple[str, Callable[[], PhaseResult]]] = [
            (
                "raw-1",
                lambda: run_raw_phase(
                    database,
                    rows,
                    conns=1,
                    batch_size=BATCH_SIZE,
                    phase="raw-1",
                    what=f"INSERT {BATCH_SIZE} rows ... ON CONFLICT DO NOTHING RETURNING, commit",
                ),
            ),
            (
                "raw-group",
                lambda: run_raw_phase(
                    database,
                    rows,
                    conns=1,
                    batch_size=MAX_EVENTS_PER_COMMIT,
                    phase="raw-group",
                    what=f"the same, {MAX_EVENTS_PER_COMMIT} rows a statement (the server's "
                    "largest group commit)",
                ),
            ),
            (
                "api-batch",
                lambda: run_api_phase(
                    server, database, projects.batch, batch=True, workload=workload, clients=c
                ),
            ),
            (
                "raw-c",
                lambda: run_raw_phase(
                    database,
                    rows,
                    conns=c,
                    batch_size=BATCH_SIZE,
                    phase="raw-c",
                    what=f"the same, over {c} connections",
                ),
            ),
            (
                "api-single",
                lambda: run_api_phase(
                    server, database, projects.single, batch=False, workload=workload, clients=c
                ),
            ),
            (
                "http-floor",
                lambda: run_floor_phase(server, requests=len(workload.single_bodies), clients=c),
            ),
            (
                "raw-single",
                lambda: run_raw_phase(
                    database,
                    single_rows,
                    conns=c,
                    batch_size=1,
                    phase="raw-single",
                    what="INSERT 1 row ... RETURNING, commit (information)",
                    info_only=True,
                ),
            ),
        ]
        if only is not None:
            steps = [s for s in steps if s[0] == only]
        for name, step in steps:
            note(f"   {backend} {name} ...")
            result = step()
            if name.startswith("api") and args.worker != "none":
                result.drain_seconds = drain(database, args.drain_timeout)
            phases[name] = result
            note(
                f"   {backend} {name}: {fmt_rate(result.events_per_second)} events/s "
                f"in {result.seconds:.2f} s{'' if result.exact else ' FAILED'}"
            )
        return Round(backend, number, phases)
    except Exception as exc:
        note(f"   {backend}: the round failed: {exc}")
        return Round(backend, number, phases, error=f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        server.stop()
        try:
            database.drop()
        except Exception as exc:  # a leftover database is a note, not a lost result
            note(f"   could not drop {database.name}: {exc}")


# --------------------------------------------------------------------------- the profile


LIBRARY_CATEGORIES = (
    ("/json/", "JSON encode/decode (bodies, JSON columns)"),
    ("sqlalchemy/", "SQLAlchemy in Python (ORM session, compile, bind, results)"),
    ("uvicorn/", "HTTP server (uvicorn, h11/httptools)"),
    ("h11/", "HTTP server (uvicorn, h11/httptools)"),
    ("httptools", "HTTP server (uvicorn, h11/httptools)"),
    ("fastapi/", "framework (FastAPI, Starlette, pydantic, anyio)"),
    ("starlette/", "framework (FastAPI, Starlette, pydantic, anyio)"),
    ("pydantic", "framework (FastAPI, Starlette, pydantic, anyio)"),
    ("anyio/", "framework (FastAPI, Starlette, pydantic, anyio)"),
    ("getfluxly_server/", "getfluxly_server (other)"),
    ("asyncio/", "asyncio event loop machinery"),
)
THREAD_GROUPS = (
    ("MainThread", "event loop (main thread)"),
    ("AnyIO worker thread", "threadpool (anyio workers)"),
    ("ingest-writer", "ingest writer threads (group commit)"),
    ("worker-", "job worker threads"),
)


def _frames(stack: Sequence[str]) -> list[tuple[str, str]]:
    """(function, file) of each frame identifier in a pyinstrument call stack."""
    out = []
    for info in stack:
        identifier = info.split("\x01", 1)[0]
        parts = identifier.split("\x00")
        out.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return out


def categorize(stack: Sequence[str]) -> str:
    """Where one sample's time went, by the frames on its stack (first rule that matches)."""
    frames = _frames(stack)
    files = [f.replace("\\", "/") for _, f in frames]

    def has(function: str | tuple[str, ...], path: str) -> bool:
        names = (function,) if isinstance(function, str) else function
        return any(fn in names and path in fl for (fn, _), fl in zip(frames, files, strict=True))

    if has("_sqlite_begin", "getfluxly_server/storage/db.py"):
        return "db: SQLite BEGIN (IMMEDIATE for writes: waiting for the write lock)"
    if has(("do_execute", "do_executemany", "do_execute_no_params"), "sqlalchemy/engine/"):
        return "db: statement execution (driver, round trip, database work)"
    if has("do_commit", "sqlalchemy/engine/"):
        return "db: COMMIT (driver, WAL write / fsync)"
    if any("sqlalchemy/pool/" in fl for fl in files):
        return "db: pool (checkout, pre-ping, reset on return)"
    if (
        has("select", "selectors.py")
        or has("get", "/queue.py")
        or has(("wait", "join"), "/threading.py")
    ):
        return "idle (waiting for work)"
    if has("validate", "getfluxly_server/domain/ingest.py"):
        return "validation (domain/ingest.py validate)"
    # Otherwise the innermost frame of a known library names it (the event loop thread has
    # uvicorn and asyncio at the root of every stack, so containment would say nothing).
    for (function, _), path in zip(reversed(frames), reversed(files), strict=True):
        if path == "<built-in>" and function.startswith("socket."):
            return "socket I/O (send, recv)"
        for marker, category in LIBRARY_CATEGORIES:
            if marker in path:
                return category
    return "other"


def step_of(stack: Sequence[str]) -> str:
    """Which part of the request a threadpool sample belongs to."""
    frames = _frames(stack)
    if any(fn in ("_identify", "_look_up") and "api/auth.py" in fl for fn, fl in frames):
        return "auth (key lookup)"
    if any(fn == "store_all" and "domain/ingest.py" in fl for fn, fl in frames):
        return "ingest.store_all (INSERT, idempotency, enqueue)"
    if any(fn == "_commit" and "storage/group_commit.py" in fl for fn, fl in frames):
        return "group commit (BEGIN, COMMIT, session)"
    return "other"


def thread_group(name: str) -> str:
    for prefix, label in THREAD_GROUPS:
        if name.startswith(prefix):
            return label
    return "other threads"


def profiled_server_main(argv: list[str]) -> int:
    """Run ``getfluxly ARGV[1:]`` with a pyinstrument profiler in every thread (pyinstrument
    samples only the thread it was started in; the database work runs in the threadpool),
    and write the combined session, a summary and two renderings to the directory ARGV[0]
    when the server exits (SIGTERM)."""
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    from getfluxly_server import cli

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    sessions: list[tuple[str, Session]] = []
    lock = threading.Lock()
    original_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def profiled_run(self: threading.Thread) -> None:
        profiler = Profiler(interval=PROFILE_INTERVAL, async_mode="disabled")
        profiler.start()
        try:
            original_bootstrap(self)
        finally:
            session = profiler.stop()
            with lock:
                sessions.append((self.name, session))

    # Thread subclasses (anyio's worker threads among them) override run(); every thread
    # goes through _bootstrap_inner.
    threading.Thread._bootstrap_inner = profiled_run  # type: ignore[attr-defined]
    main_profiler = Profiler(interval=PROFILE_INTERVAL, async_mode="disabled")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    main_profiler.start()
    code = 1
    try:
        code = cli.main(argv[1:])
    except SystemExit as exc:  # SIGTERM: the CLI's handler turns it into SystemExit
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        main_session = main_profiler.stop()
        deadline = time.monotonic() + 10
        for thread in threading.enumerate():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with lock:
            collected = [("MainThread", main_session), *sessions]
        summary: dict[str, Any] = {
            "process_cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - wall0,
            "groups": {},
        }
        busy_records = []
        for name, session in collected:
            group = summary["groups"].setdefault(
                thread_group(name),
                {
                    "threads": 0,
                    "sampled_seconds": 0.0,
                    "idle_seconds": 0.0,
                    "categories": {},
                    "steps": {},
                },
            )
            group["threads"] += 1
            for stack, seconds in session.frame_records:
                group["sampled_seconds"] += seconds
                category = categorize(stack)
                if category.startswith("idle"):
                    group["idle_seconds"] += seconds
                    continue
                busy_records.append((stack, seconds))
                group["categories"][category] = group["categories"].get(category, 0.0) + seconds
                step = step_of(stack)
                group["steps"][step] = group["steps"].get(step, 0.0) + seconds
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        combined = functools.reduce(Session.combine, [s for _, s in collected])
        combined.save(out / "combined.pyisession")
        busy = Session(
            frame_records=busy_records,
            start_time=combined.start_time,
            duration=combined.duration,
            min_interval=combined.min_interval,
            max_interval=combined.max_interval,
            sample_count=len(busy_records),
            start_call_stack=combined.start_call_stack,
            target_description="getfluxly API, all threads, idle samples removed",
            cpu_time=combined.cpu_time,
            sys_path=combined.sys_path,
            sys_prefixes=combined.sys_prefixes,
        )
        (out / "flat.txt").write_text(ConsoleRenderer(flat=True, unicode=True).render(busy))
        (out / "tree.txt").write_text(
            ConsoleRenderer(unicode=True, processor_options={"filter_threshold": 0.005}).render(
                busy
            )
        )
    return code


def run_profile(
    backend: Backend, phase: str, workload: Workload, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """A separate run of one API phase on a fresh database, with the API process under the
    profiling wrapper; its rate includes the profiler's overhead and is in no ratio."""
    profile_dir = workdir / f"profile-{backend}-{phase}"
    note(
        f"== profiling the API process during {phase} on {backend} (pyinstrument, every "
        f"thread, {PROFILE_INTERVAL * 1000:.0f} ms interval)"
    )
    profiled = run_round(backend, workload, args, workdir, profile_dir=profile_dir, only=phase)
    result = profiled.phases.get(phase)
    report: dict[str, Any] = {
        "database": backend,
        "phase": phase,
        "error": profiled.error,
        "events_per_second_with_profiler": result.events_per_second if result else None,
        "requests_per_second_with_profiler": result.requests_per_second if result else None,
        "seconds": result.seconds if result else None,
        "server_cpu_seconds": result.server_cpu if result else None,
        "files": str(profile_dir),
    }
    summary_path = profile_dir / "summary.json"
    if summary_path.exists():
        report["summary"] = json.loads(summary_path.read_text())
        report["flat"] = (profile_dir / "flat.txt").read_text()
    else:
        report["error"] = report["error"] or "the profiled server wrote no summary"
    return report


def print_profile(report: dict[str, Any], lines: int) -> None:
    """The profile to stderr: seconds per thread group and category, then the flat list."""
    note(f"\n== where the API process's time went during {report['phase']} on {report['database']}")
    if report.get("error") or "summary" not in report:
        note(f"   no profile: {report.get('error')}")
        return
    note(
        f"   {fmt_rate(report['events_per_second_with_profiler'])} events/s, "
        f"{fmt_rate(report['requests_per_second_with_profiler'])} requests/s under the "
        "profiler (its overhead included); the API "
        f"process used {report['server_cpu_seconds'] or 0:.1f} CPU s in "
        f"{report['seconds'] or 0:.1f} s of wall clock"
    )
    for group, data in report["summary"]["groups"].items():
        busy = data["sampled_seconds"] - data["idle_seconds"]
        if busy <= 0:
            continue
        note(
            f"   {group}: {data['threads']} thread(s), {busy:.2f} s busy, "
            f"{data['idle_seconds']:.2f} s idle (wall-clock seconds summed over its threads)"
        )
        for category, seconds in sorted(data["categories"].items(), key=lambda kv: -kv[1]):
            note(f"     {seconds:8.2f} s  {100 * seconds / busy:5.1f} %  {category}")
        if len(data["steps"]) > 1:
            note("     by step of the request:")
            for step, seconds in sorted(data["steps"].items(), key=lambda kv: -kv[1]):
                note(f"     {seconds:8.2f} s  {100 * seconds / busy:5.1f} %  {step}")
    note(
        f"   functions by self time, all threads, idle removed (first {lines} lines; the "
        f"full tree is {report['files']}/tree.txt):"
    )
    for line in report["flat"].splitlines()[:lines]:
        note(f"     {line}")


# --------------------------------------------------------------------------- the report


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present and len(present) == len(values) else None


def summarize(rounds: list[Round]) -> dict[str, Any]:
    """Medians over the rounds of one database, and its ratios."""
    names = ("raw-1", "raw-group", "api-batch", "raw-c", "api-single", "http-floor", "raw-single")
    rates = {name: median_of([r.rate(name) for r in rounds]) for name in names}
    single_rps = median_of(
        [
            r.phases["api-single"].requests_per_second if "api-single" in r.phases else None
            for r in rounds
        ]
    )
    raw_best = max((rates[n] for n in RAW_PHASES if rates[n] is not None), default=None)
    per_round: list[float | None] = []
    for r in rounds:
        best = max((v for n in RAW_PHASES if (v := r.rate(n)) is not None), default=None)
        api = r.rate("api-batch")
        per_round.append(api / best if api and best else None)
    # The headline is the median of each round's own ratio: API and raw measured minutes
    # apart on a shared machine mean less than API and raw of the same round.
    ratio = median_of(per_round)
    return {
        "events_per_second": rates,
        "raw_best_events_per_second": raw_best,
        "api_batch_over_raw": ratio,
        "api_batch_over_raw_per_round": per_round,
        "api_batch_over_raw_of_medians": (
            rates["api-batch"] / raw_best if rates["api-batch"] and raw_best else None
        ),
        "api_single_requests_per_second": single_rps,
        # How close one-event ingest comes to the HTTP stack with nothing behind it.
        "api_single_over_http_floor": (
            rates["api-single"] / rates["http-floor"]
            if rates["api-single"] and rates["http-floor"]
            else None
        ),
    }


TABLE_HEADER = (
    "db",
    "round",
    "phase",
    "conns",
    "events",
    "seconds",
    "events/s",
    "req/s",
    "p50 ms",
    "p99 ms",
    "bench us/ev",
    "server us/ev",
    "pg us/ev",
    "stored",
    "status",
)
LEFT_ALIGNED = {0, 2, 14}


def phase_row(r: Round, p: PhaseResult) -> list[str]:
    """One line of the table: CPU columns are microseconds per event of the bench process
    (clients, or the raw inserter), the server processes, and every PostgreSQL process."""

    def per_event(seconds: float | None) -> str:
        return fmt(seconds * 1e6 / p.events if seconds is not None else None, 0)

    status = "ok" if p.exact else "FAILED: " + "; ".join(p.failures)[:80]
    if p.info_only and p.exact:
        status = "ok (information)"
    return [
        r.backend,
        str(r.number),
        p.phase,
        str(p.conns),
        str(p.events),
        fmt(p.seconds, 2),
        fmt_rate(p.events_per_second),
        fmt_rate(p.requests_per_second),
        fmt(p.latency_ms_p50),
        fmt(p.latency_ms_p99),
        per_event(p.bench_cpu),
        per_event(p.server_cpu),
        per_event(p.postgres_cpu),
        str(p.stored),
        status,
    ]


def print_table(rounds: list[Round]) -> None:
    rows = [list(TABLE_HEADER)]
    for r in rounds:
        rows += [phase_row(r, p) for p in r.phases.values()]
        if r.error:
            rows.append([r.backend, str(r.number), "-", *[""] * 11, f"FAILED: {r.error[:80]}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    for row in rows:
        cells = [
            cell.ljust(w) if i in LEFT_ALIGNED else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def targets(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for backend, summary in summaries.items():
        ratio = summary["api_batch_over_raw"]
        out.append(
            {
                "database": backend,
                "what": "api-batch / best raw events/s (median of rounds)",
                "value": ratio,
                "target": TARGET_BATCH_RATIO,
                "met": ratio is not None and ratio >= TARGET_BATCH_RATIO,
            }
        )
        rps = summary["api_single_requests_per_second"]
        out.append(
            {
                "database": backend,
                "what": "api-single requests/s",
                "value": rps,
                "target": TARGET_SINGLE_RPS,
                "met": rps is not None and rps >= TARGET_SINGLE_RPS,
            }
        )
    return out


def print_targets(rows: list[dict[str, Any]]) -> None:
    print()
    print(f"{'target':<58} {'value':>9} {'target':>9}  met")
    for row in rows:
        label = f"{row['database']}: {row['what']}"
        digits = 3 if row["target"] < 10 else 0
        print(
            f"{label:<58} {fmt(row['value'], digits):>9} {'>= ' + fmt(row['target'], digits):>9}"
            f"  {'yes' if row['met'] else 'NO'}"
        )


def print_floors(summaries: dict[str, dict[str, Any]]) -> None:
    for backend, summary in summaries.items():
        ratio = summary["api_single_over_http_floor"]
        print(
            f"{backend}: api-single / http-floor requests/s = {fmt(ratio, 3)} (information: "
            "how near one-event ingest comes to GET /healthz on the same stack)"
        )


def versions() -> dict[str, str | None]:
    import fastapi
    import sqlalchemy
    import uvicorn

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "sqlite": sqlite3_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "postgresql": None,
    }
    with contextlib.suppress(Exception):
        admin = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
        with psycopg.connect(admin, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found["postgresql"] = str(row[0]) if row else None
    return found


def sqlite3_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


# --------------------------------------------------------------------------- main


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="GetFluxly ingest throughput: the batch endpoint next to a raw bulk "
        "insert of the same rows, and single-event requests per second."
    )
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite")
    parser.add_argument("--postgres", action="store_true", help="run on PostgreSQL")
    parser.add_argument(
        "-n",
        "--events",
        type=positive,
        default=None,
        help=f"events through the batch endpoint (default {DEFAULT_EVENTS:,}; "
        f"{QUICK_EVENTS:,} with --quick)",
    )
    parser.add_argument(
        "-m",
        "--single",
        type=positive,
        default=None,
        help=f"single-event requests (default {DEFAULT_SINGLE:,}; {QUICK_SINGLE:,} with --quick)",
    )
    parser.add_argument(
        "-c",
        "--clients",
        type=positive,
        default=DEFAULT_CLIENTS,
        help=f"concurrent clients and raw connections (default {DEFAULT_CLIENTS})",
    )
    parser.add_argument(
        "-r",
        "--repeats",
        type=positive,
        default=DEFAULT_REPEATS,
        help="rounds per database, each on a fresh database; rates are medians (default 1)",
    )
    parser.add_argument(
        "--worker",
        choices=("none", "thread", "process"),
        default="none",
        help="the event worker during the measurement: none (getfluxly api, "
        "the default), thread (getfluxly serve), process (api + worker)",
    )
    parser.add_argument(
        "--api-processes",
        type=positive,
        default=1,
        help="PostgreSQL rounds: getfluxly api --processes N (default 1; SQLite rounds "
        "always run one process)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="with a worker: seconds to wait for it to process the backlog "
        "after each API phase (default 300)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"N={QUICK_EVENTS:,}, M={QUICK_SINGLE:,}, SQLite unless "
        "--postgres: a smoke run, < 30 s",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="batch",
        choices=("batch", "single", "both"),
        default=None,
        help="also run api-batch (default), api-single or both once more per database with "
        "the API process under pyinstrument (every thread) and print where its time went",
    )
    parser.add_argument(
        "--profile-lines",
        type=positive,
        default=30,
        help="lines of the flat profile to print (default 30)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, SQLite files, profiles)"
    )
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = QUICK_EVENTS if args.quick else DEFAULT_EVENTS
    if args.single is None:
        args.single = QUICK_SINGLE if args.quick else DEFAULT_SINGLE
    chosen = [b for b in ("sqlite", "postgres") if getattr(args, b)]
    args.backends = chosen or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [PROFILED_SERVER]:
        return profiled_server_main(argv[1:])
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gf-ingest-bench-"))
    loadavg_start = os.getloadavg()
    note(
        f"== building the workload: {args.events:,} batch events, {args.single:,} single "
        f"events (work directory {workdir})"
    )
    workload = build_workload(args.events, args.single, args.clients)
    note(
        f"   {workload.event_bytes:.0f} bytes of JSON per event on average, "
        f"{len(workload.batch_bodies)} batches of up to {BATCH_SIZE}"
    )
    rounds: list[Round] = []
    profiles: dict[str, Any] = {}
    try:
        for index in range(args.repeats):
            for backend in args.backends:
                note(f"== round {index + 1}/{args.repeats} on {backend}")
                rounds.append(run_round(backend, workload, args, workdir, index + 1))
        if args.profile:
            chosen = ("batch", "single") if args.profile == "both" else (args.profile,)
            for backend in args.backends:
                for phase in (f"api-{name}" for name in chosen):
                    profiles[f"{backend}/{phase}"] = run_profile(
                        backend, phase, workload, args, workdir
                    )
    finally:
        if args.keep or args.profile:
            note(f"== the work directory is kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summaries = {b: summarize([r for r in rounds if r.backend == b]) for b in args.backends}
    target_rows = targets(summaries)
    print(
        f"GetFluxly ingest: {args.events:,} events in batches of {BATCH_SIZE}, "
        f"{args.single:,} single-event requests, {args.clients} clients, "
        f"{args.repeats} round(s); {workload.event_bytes:.0f} B/event; event worker "
        f"{WORKER_LABELS[args.worker]}; API processes on PostgreSQL: {args.api_processes}"
    )
    print(
        f"load average {loadavg_start[0]:.2f} at the start on {os.cpu_count()} CPUs "
        "(a shared machine: compare rows of one run, not runs)"
    )
    print()
    print_table(rounds)
    print_targets(target_rows)
    print_floors(summaries)
    for profiled in profiles.values():
        print_profile(profiled, args.profile_lines)
    exact = all(r.error is None and all(p.exact for p in r.phases.values()) for r in rounds)
    report: dict[str, Any] = {
        "benchmark": "ingest_throughput",
        "events": args.events,
        "single_requests": args.single,
        "batch_size": BATCH_SIZE,
        "clients": args.clients,
        "repeats": args.repeats,
        "event_bytes_avg": round(workload.event_bytes, 1),
        "worker": args.worker,
        "api_processes_postgres": args.api_processes,
        "worker_running": args.worker != "none",
        "worker_description": WORKER_LABELS[args.worker],
        "server_env": SERVER_ENV,
        "databases": {
            backend: {
                **summaries[backend],
                "rounds": [
                    {"error": r.error, "phases": {k: p.to_json() for k, p in r.phases.items()}}
                    for r in rounds
                    if r.backend == backend
                ],
            }
            for backend in args.backends
        },
        "targets": target_rows,
        "counts_exact": exact,
        "profile": {b: {k: v for k, v in p.items() if k != "flat"} for b, p in profiles.items()}
        or None,
        "versions": versions(),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": os.getloadavg(),
        },
    }
    print(json.dumps(report))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
