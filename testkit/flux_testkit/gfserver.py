"""The real GetFluxly server as subprocesses, on a fresh SQLite or PostgreSQL database.

Nothing here imports the server: tests talk to it the way an operator does, through the
``getfluxly`` command (``migrate``, ``workspace create``, ``serve``, ``api``, ``worker``,
``keys rotate``...) and HTTP. The pieces, from the longest-lived to the shortest:

- :class:`Harness` (one per test session): builds, once per backend, a *template* database
  (``getfluxly migrate`` then ``getfluxly workspace create``), and hands each test a copy of it.
  Copying is what keeps a server start under 2 s: the CLI spends about a second importing its
  dependencies, so migrating and bootstrapping a workspace per test would triple the cost.
- :class:`GFDatabase` (one per test): a fresh SQLite file in the test's directory, or a fresh
  PostgreSQL database ``gf_test_<random>`` cloned from the template and dropped afterwards.
  It knows the workspace the template bootstrapped and can query the tables directly.
- :class:`GFServer`: ``getfluxly serve`` (API and worker threads) or ``getfluxly api`` alone on
  a free port, plus any number of extra ``getfluxly worker`` processes (:class:`GFProcess`).
  Every process's stdout and stderr go to a log file; :meth:`GFServer.logs` reads them all.

PostgreSQL comes from ``GETFLUXLY_TEST_POSTGRES_URL`` (a role allowed to CREATE DATABASE),
default :data:`DEFAULT_POSTGRES_URL`, which ``scripts/setup-postgres`` provides. When it cannot
be reached the test fails (:class:`PostgresUnavailable`); it is never skipped.

Environment of every process: the test process's own, minus every ``GETFLUXLY_*`` variable
(so a developer's settings never leak in), plus the database URL, a fresh encryption key,
``SSL_CERT_FILE`` pointing at the testkit CA (so STARTTLS/SSL relays from
:mod:`flux_testkit.smtpd` are trusted), short timeouts (:data:`DEFAULT_SERVER_ENV`) and the
caller's overrides (a value of ``None`` removes a variable).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql as pgsql
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from flux_testkit import certs, pgadmin
from flux_testkit.smtpd import DEFAULT_USERS

__all__ = [
    "BACKENDS",
    "DEFAULT_POSTGRES_URL",
    "DEFAULT_SERVER_ENV",
    "POSTGRES_URL_ENV",
    "Backend",
    "GFDatabase",
    "GFProcess",
    "GFProject",
    "GFServer",
    "GFWorkspace",
    "Harness",
    "PostgresUnavailable",
    "ServerEnv",
    "expect_error",
    "free_port",
    "getfluxly_command",
    "new_encryption_key",
]

Backend = Literal["sqlite", "postgres"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")
#: Overrides of a process environment: a value of None removes the variable.
ServerEnv = Mapping[str, str | None]

POSTGRES_URL_ENV = "GETFLUXLY_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://getfluxly:getfluxly@127.0.0.1:5432/postgres"

#: What every server process gets unless a test overrides it: timeouts short enough that a
#: hung relay fails a test in seconds, and two worker threads (the machines have two cores).
DEFAULT_SERVER_ENV: dict[str, str] = {
    "GETFLUXLY_LOG_LEVEL": "INFO",
    "GETFLUXLY_WORKER_THREADS": "2",
    "GETFLUXLY_SMTP_TIMEOUT": "10",
    "GETFLUXLY_TEST_SEND_TIMEOUT": "15",
    "GETFLUXLY_JOB_LEASE_SECONDS": "30",
}

# Limits on waiting, not expectations of speed: under xdist on a busy 2-core machine a fresh
# Python process can take most of a minute to import and migrate. Only a hung start reaches
# them, so they are generous.
_STARTUP_TIMEOUT = 90.0
_STOP_TIMEOUT = 5.0
_CLI_TIMEOUT = 120.0


class PostgresUnavailable(RuntimeError):  # noqa: N818 - reads as what happened
    """PostgreSQL could not be reached or used; the message says how to set it up."""


def getfluxly_command() -> list[str]:
    """The ``getfluxly`` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("getfluxly")
    if script.exists():
        return [str(script)]
    found = shutil.which("getfluxly")
    if found is None:
        raise RuntimeError("the getfluxly command is not installed (run scripts/setup)")
    return [found]


def new_encryption_key(kid: str | None = None) -> str:
    """A fresh ``kid:base64key`` for GETFLUXLY_ENCRYPTION_KEYS (32 random bytes)."""
    kid = kid or f"k{secrets.token_hex(3)}"
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def expect_error(response: httpx.Response, status: int, code: str) -> str:
    """Check that ``response`` is the contract's error ``{"error": code, "detail": text}``
    with ``status``; return the detail. Raises AssertionError showing the response otherwise.
    """
    shown = f"{response.request.method} {response.request.url.path}: {response.status_code} "
    shown += response.text[:500]
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"expected a JSON error body; {shown}") from None
    if response.status_code != status or not isinstance(body, dict) or body.get("error") != code:
        raise AssertionError(f"expected {status} {code!r}; {shown}")
    detail = body.get("detail")
    if not isinstance(detail, str) or not detail:
        raise AssertionError(f"the error has no detail text; {shown}")
    return detail


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: httpx builds (and loads a CA bundle into) a new one
    per client otherwise, tens of milliseconds each, though the server speaks plain HTTP."""
    return ssl.create_default_context()


def _merge(base: Mapping[str, str], *overrides: ServerEnv | None) -> dict[str, str]:
    env = dict(base)
    for override in overrides:
        for name, value in (override or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
    return env


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class GFWorkspace:
    """A workspace and the key ``getfluxly workspace create`` printed for it."""

    id: str
    key: str


@dataclass(frozen=True)
class GFProject:
    """A project made through ``POST /v1/projects``, with the keys shown that once."""

    id: str
    workspace_id: str
    secret_key: str
    secret_key_id: str
    publishable_key: str
    publishable_key_id: str


class Harness:
    """Session-wide: the base environment, the CLI runner, and the template databases.

    ``root`` is a private directory for templates; ``pycache`` (optional) is where the
    subprocesses keep their compiled bytecode (PYTHONPYCACHEPREFIX), so each ``getfluxly``
    start does not recompile the server's dependencies when the environment forbids writing
    bytecode next to the sources. :meth:`close` drops the PostgreSQL template.
    """

    def __init__(
        self, root: Path, *, pycache: Path | None = None, postgres_url: str | None = None
    ) -> None:
        self.root = root
        self.pycache = pycache
        self.postgres_url = postgres_url or os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
        self._lock = threading.Lock()
        self._templates: dict[Backend, tuple[str, GFWorkspace]] = {}
        #: A backend that failed once fails every later test at once, with the same error.
        self._broken: dict[Backend, Exception] = {}
        self._pg_template_name: str | None = None

    # Environment and CLI.

    def base_env(self, *overrides: ServerEnv | None) -> dict[str, str]:
        """The test process's environment without GETFLUXLY_* variables, plus the testkit CA
        as SSL_CERT_FILE, the bytecode cache, and ``overrides`` (None removes a name)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GETFLUXLY_")}
        env["SSL_CERT_FILE"] = str(certs.ca_pem_path())
        if self.pycache is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        return _merge(env, *overrides)

    def run_cli(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        check: bool = True,
        timeout: float = _CLI_TIMEOUT,
        log: Path | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``getfluxly ARGS`` with exactly ``env``; stdout and stderr are captured (and
        stderr appended to ``log``). ``check``: raise with both streams on a non-zero exit.
        ``stdin``: what the command reads on its standard input (default: nothing)."""
        result = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
            [*getfluxly_command(), *args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            check=False,
        )
        if log is not None:
            with log.open("a", encoding="utf-8") as handle:
                handle.write(f"$ getfluxly {' '.join(args)}  (exit {result.returncode})\n")
                handle.write(result.stderr)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"getfluxly {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    # Databases.

    def database(self, backend: Backend, directory: Path) -> GFDatabase:
        """A fresh copy of the backend's template (migrated, one workspace); the caller
        closes it (:meth:`GFDatabase.close` drops a PostgreSQL database)."""
        template, workspace = self._template(backend)
        if backend == "sqlite":
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / "getfluxly.db"
            # The backup API copies a consistent snapshot whatever state the template's WAL
            # is in (the CLI process that wrote it never checkpointed).
            with (
                contextlib.closing(sqlite3.connect(template)) as source,
                contextlib.closing(sqlite3.connect(path)) as target,
            ):
                source.backup(target)
            return GFDatabase("sqlite", f"sqlite:///{path}", workspace, path=path)
        name = f"gf_test_{secrets.token_hex(6)}"
        self._admin(
            pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                pgsql.Identifier(name), pgsql.Identifier(template)
            )
        )
        return GFDatabase("postgres", self._postgres_url_for(name), workspace, harness=self)

    def _template(self, backend: Backend) -> tuple[str, GFWorkspace]:
        with self._lock:
            if backend in self._broken:
                raise self._broken[backend]
            if backend not in self._templates:
                try:
                    self._templates[backend] = self._make_template(backend)
                except PostgresUnavailable as exc:
                    # Every later test of this backend would fail the same way: say it once.
                    self._broken[backend] = exc
                    raise
            return self._templates[backend]

    def _make_template(self, backend: Backend) -> tuple[str, GFWorkspace]:
        if backend == "sqlite":
            path = self.root / "template-sqlite" / "getfluxly.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            target, url = str(path), f"sqlite:///{path}"
        else:
            target = f"gf_tpl_{secrets.token_hex(6)}"
            self._admin(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(target)))
            self._pg_template_name = target
            url = self._postgres_url_for(target)
        env = self.base_env(
            {"GETFLUXLY_DATABASE_URL": url, "GETFLUXLY_ENCRYPTION_KEYS": new_encryption_key()}
        )
        self.run_cli(["migrate"], env)
        made = json.loads(self.run_cli(["workspace", "create", "Test workspace"], env).stdout)
        return target, GFWorkspace(made["workspace_id"], made["workspace_key"])

    def _postgres_url_for(self, database: str) -> str:
        return urlunsplit(urlsplit(self.postgres_url)._replace(path=f"/{database}"))

    def _admin(self, statement: pgsql.Composed) -> None:
        """One statement on the admin URL, outside a transaction (CREATE/DROP DATABASE)."""
        try:
            with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(statement)
        except psycopg.OperationalError as exc:
            raise PostgresUnavailable(
                f"PostgreSQL at {_redact(self.postgres_url)} is not usable: {exc}\n"
                f"Run scripts/setup-postgres (as root) or set {POSTGRES_URL_ENV} to the URL of "
                "a role that may CREATE DATABASE."
            ) from exc

    def drop_postgres_database(self, name: str) -> None:
        pgadmin.drop_database(self.postgres_url, name)

    def close(self) -> None:
        """Drop the PostgreSQL template, if one was made."""
        if self._pg_template_name is not None:
            self.drop_postgres_database(self._pg_template_name)
            self._pg_template_name = None


def _cell_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass
class GFDatabase:
    """A test's own database: its URL as the server takes it (``GETFLUXLY_DATABASE_URL``),
    and the workspace its template bootstrapped."""

    backend: Backend
    url: str
    workspace: GFWorkspace
    path: Path | None = None
    harness: Harness | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The PostgreSQL database name, or the SQLite file name."""
        return self.path.name if self.path is not None else urlsplit(self.url).path.lstrip("/")

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy (psycopg 3 for PostgreSQL, as the server uses)."""
        if self.url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.url[len("postgresql://") :]
        return self.url

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        """A pool-less engine (every connection closed after use), disposed at the end."""
        engine = create_engine(self.sqlalchemy_url, poolclass=NullPool)
        try:
            yield engine
        finally:
            engine.dispose()

    def query(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of one SQL statement, as dicts (read straight from the database)."""
        with self.engine() as engine, engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(statement), params)]

    def execute(self, statement: str, **params: Any) -> int:
        """Run one statement in its own committed transaction; returns the row count."""
        with self.engine() as engine, engine.begin() as conn:
            return int(conn.execute(text(statement), params).rowcount)

    def lock_waiters(self) -> int:
        """PostgreSQL: how many sessions on this database wait for a lock now (a test holding
        a transaction open sees the other side arrive and block)."""
        assert self.backend == "postgres", "lock waits are read from pg_stat_activity"
        rows = self.query(
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(rows[0]["n"])

    def cells_containing(self, needle: str, *, ignore_case: bool = False) -> list[str]:
        """Every ``table.column = value`` of every table whose stored value contains ``needle``
        (bytes read as Latin-1, JSON as its text): what an erasure test expects to be empty."""
        wanted = needle.lower() if ignore_case else needle
        hits = []
        with self.engine() as engine:
            tables = inspect(engine).get_table_names()
            assert {"profiles", "messages"} <= set(tables), tables  # the server's own database
            with engine.connect() as conn:
                for table in tables:
                    quoted = '"' + table.replace('"', '""') + '"'
                    for row in conn.execute(text(f"SELECT * FROM {quoted}")).mappings():  # noqa: S608 - names from the catalog, quoted
                        for column, value in row.items():
                            shown = _cell_text(value)
                            if wanted in (shown.lower() if ignore_case else shown):
                                hits.append(f"{table}.{column} = {shown[:120]!r}")
        return hits

    def stored_bytes(self) -> bytes:
        """Everything the database holds, as bytes to search for leaked secrets.

        SQLite: the database file and its WAL and shared-memory files, byte for byte.
        PostgreSQL: ``pg_dump`` of the database when the program is installed and works,
        otherwise every row of every table in the public schema as text.
        """
        if self.path is not None:
            parts = [self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
            return b"".join(p.read_bytes() for p in parts if p.exists())
        pg_dump = shutil.which("pg_dump")
        if pg_dump is not None:
            dump = subprocess.run(  # noqa: S603 - a fixed program with our own URL
                [pg_dump, "--no-owner", "--dbname", self.url],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if dump.returncode == 0:
                return dump.stdout
        return self._rows_as_text().encode()

    def _rows_as_text(self) -> str:
        tables = self.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        lines = []
        for row in tables:
            quoted = '"' + str(row["table_name"]).replace('"', '""') + '"'
            lines += [str(r["row"]) for r in self.query(f"SELECT t::text AS row FROM {quoted} t")]  # noqa: S608 - names from the catalog, quoted
        return "\n".join(lines)

    def close(self) -> None:
        """Drop a PostgreSQL database (the SQLite file goes with the test's directory)."""
        if self.harness is not None and self.backend == "postgres":
            self.harness.drop_postgres_database(self.name)


class GFProcess:
    """One ``getfluxly`` subprocess whose stdout and stderr go to ``log_path``."""

    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        with log_path.open("ab") as log:
            # The child keeps its own descriptor; ours is closed at once.
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(  # noqa: S603
                [*getfluxly_command(), *args],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches pytest, not the server
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` (e.g. ``signal.SIGKILL``) and, for SIGKILL, reap the process."""
        if self.alive:
            self.popen.send_signal(sig)
        if sig == signal.SIGKILL:
            self.popen.wait(_STOP_TIMEOUT)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        if self.alive:
            self.popen.terminate()
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


class GFServer:
    """The server under test: one API process (``serve`` or ``api``) on a free port, and any
    extra worker processes, all on ``database`` with the same environment.

    Attributes: ``url`` (``http://127.0.0.1:PORT``), ``workspace_id``/``workspace_key`` (the
    workspace the database came with), ``database_url``, ``database`` (:class:`GFDatabase`),
    ``env`` (the full environment processes get), ``encryption_keys``.
    """

    def __init__(
        self,
        harness: Harness,
        database: GFDatabase,
        log_dir: Path,
        *,
        env: ServerEnv | None = None,
        mode: Literal["serve", "api"] = "serve",
        args: Sequence[str] = (),
    ) -> None:
        self.harness = harness
        self.database = database
        self.mode = mode
        self.args = list(args)
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = harness.base_env(
            DEFAULT_SERVER_ENV,
            {
                "GETFLUXLY_DATABASE_URL": database.url,
                "GETFLUXLY_ENCRYPTION_KEYS": new_encryption_key(),
                "GETFLUXLY_PUBLIC_URL": self.url,
            },
            env,
        )
        self.process: GFProcess | None = None
        self.workers: list[GFProcess] = []
        self._clients: dict[tuple[str, str | None, float], httpx.Client] = {}
        self._count = 0

    @property
    def workspace_id(self) -> str:
        return self.database.workspace.id

    @property
    def workspace_key(self) -> str:
        return self.database.workspace.key

    @property
    def database_url(self) -> str:
        return self.database.url

    @property
    def encryption_keys(self) -> str:
        return self.env["GETFLUXLY_ENCRYPTION_KEYS"]

    # Processes.

    def _log(self, name: str) -> Path:
        self._count += 1
        return self.log_dir / f"{self._count:02d}-{name}.log"

    def start(self) -> GFServer:
        """Start the API process and wait until ``/healthz`` answers (at most 30 s).

        Should another program take the port between :func:`free_port` and the bind, the
        server starts again on a new port (``url`` changes; earlier clients keep the old one).
        """
        if self.process is not None and self.process.alive:
            raise RuntimeError("the server is already running")
        for _ in range(3):
            args = [self.mode, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
            process = self.process = GFProcess(self.mode, args, self.env, self._log(self.mode))
            if self._wait_healthy(process):
                return self
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.env["GETFLUXLY_PUBLIC_URL"] = self.url
        raise RuntimeError(f"getfluxly {self.mode} found no free port:\n{process.logs()}")

    def _wait_healthy(self, process: GFProcess) -> bool:
        """True once /healthz answers 200; False if the port was taken; raises otherwise."""
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=1.0, verify=_tls_context()) as probe:
            while time.monotonic() < deadline:
                if not process.alive:
                    logs = process.logs()
                    if "address already in use" in logs:
                        return False
                    raise RuntimeError(
                        f"getfluxly {process.name} exited {process.returncode} at start-up:\n"
                        + logs
                    )
                with contextlib.suppress(httpx.TransportError):
                    if probe.get("/healthz").status_code == 200:
                        return True
                time.sleep(0.05)
        process.stop()
        raise RuntimeError(f"getfluxly {process.name} not healthy in time:\n{process.logs()}")

    def stop(self) -> None:
        """Stop the API process and every extra worker (SIGTERM, then SIGKILL)."""
        for worker in self.workers:
            worker.stop()
        if self.process is not None:
            self.process.stop()

    def restart(self, env: ServerEnv | None = None) -> GFServer:
        """Stop everything, apply ``env`` overrides (None removes), start the API again on the
        same port. Extra workers are not restarted."""
        self.stop()
        self.workers.clear()
        self.env = _merge(self.env, env)
        return self.start()

    def start_worker(self, env: ServerEnv | None = None) -> GFProcess:
        """Start one more ``getfluxly worker`` process (with ``env`` overrides on top of the
        server's) and return it; it is stopped with the server."""
        worker = GFProcess(
            "worker", ["worker"], _merge(self.env, env), self._log(f"worker{len(self.workers)}")
        )
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: GFProcess, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to an extra worker (default SIGKILL: no clean-up at all)."""
        worker.signal(sig)

    def cli(
        self, *args: str, env: ServerEnv | None = None, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``getfluxly ARGS`` on this server's database and keys (stderr goes to the logs);
        ``stdin``: what the command reads on its standard input."""
        return self.harness.run_cli(
            args, _merge(self.env, env), check=check, log=self.log_dir / "00-cli.log",
            stdin=stdin,
        )  # fmt: skip

    def logs(self) -> str:
        """Everything every process (and CLI run) of this server wrote so far."""
        return "".join(
            f"==> {path.name}\n" + path.read_text(encoding="utf-8", errors="replace")
            for path in sorted(self.log_dir.glob("*.log"))
        )

    # HTTP.

    def client(self, key: str | None = None, *, timeout: float = 30.0) -> httpx.Client:
        """An httpx client on the server sending ``Authorization: Bearer <key>`` (default:
        the workspace key). The same key and timeout give the same client until it is closed
        (making one costs milliseconds); all are closed when the server is closed."""
        return self._client(f"Bearer {key or self.workspace_key}", timeout)

    def anonymous_client(self, *, timeout: float = 30.0) -> httpx.Client:
        """An httpx client on the server sending no credentials (shared like :meth:`client`)."""
        return self._client(None, timeout)

    def _client(self, authorization: str | None, timeout: float) -> httpx.Client:
        cache_key = (self.url, authorization, timeout)
        client = self._clients.get(cache_key)
        if client is None or client.is_closed:  # a caller may have used it in a with block
            headers = {"Authorization": authorization} if authorization is not None else {}
            client = httpx.Client(
                base_url=self.url, headers=headers, timeout=timeout, verify=_tls_context()
            )
            self._clients[cache_key] = client
        return client

    def create_project(self, name: str = "Test project", *, key: str | None = None) -> GFProject:
        """``POST /v1/projects`` with ``key`` (default the workspace key): the new project and
        the keys that response shows once."""
        response = self.client(key).post("/v1/projects", json={"name": name})
        if response.status_code != 201:
            raise AssertionError(f"POST /v1/projects: {response.status_code} {response.text}")
        body = response.json()
        keys = body["keys"]
        return GFProject(
            id=body["project"]["id"],
            workspace_id=body["project"]["workspace_id"],
            secret_key=keys["secret"]["key"],
            secret_key_id=keys["secret"]["id"],
            publishable_key=keys["publishable"]["key"],
            publishable_key_id=keys["publishable"]["id"],
        )

    def create_smtp_provider(
        self,
        project_id: str,
        host: str,
        port: int,
        *,
        secure: Literal["none", "starttls", "ssl"] = "none",
        username: str | None = None,
        password: str | None = None,
        display_name: str = "Test relay",
        key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/projects/{project_id}/email-providers`` for an SMTP relay (by default
        with the testkit relay's login, :data:`flux_testkit.smtpd.DEFAULT_USERS`); returns
        the ``email_provider`` view (status 201 checked).
        """
        [(default_user, default_password)] = DEFAULT_USERS.items()
        body = {
            "provider": "smtp",
            "display_name": display_name,
            "from_email": "hello@example.com",
            "from_name": "GetFluxly Tests",
            "smtp_host": host,
            "smtp_port": port,
            "smtp_secure": secure,
            "username": username or default_user,
            "password": password or default_password,
        }
        response = self.client(key).post(f"/v1/projects/{project_id}/email-providers", json=body)
        if response.status_code != 201:
            raise AssertionError(
                f"creating the provider: {response.status_code} {response.text[:500]}"
            )
        provider: dict[str, Any] = response.json()["email_provider"]
        return provider

    def create_workspace(self, name: str = "Other workspace") -> GFWorkspace:
        """Another workspace in this database, through ``getfluxly workspace create``."""
        made = json.loads(self.cli("workspace", "create", name).stdout)
        return GFWorkspace(made["workspace_id"], made["workspace_key"])

    def close(self) -> None:
        """Close clients and stop every process (the database is the fixture's to drop)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self.stop()
