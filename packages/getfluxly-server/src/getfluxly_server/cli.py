"""The ``getfluxly`` command: run the server, migrate, manage tenants and keys, dev mode.

    getfluxly dev [--port 8000] [--data-dir .getfluxly]   everything on this machine, now
    getfluxly migrate                                     bring the database up to date
    getfluxly serve [--worker-process] | api | worker     API and workers together or apart
    getfluxly workspace create NAME                       prints the workspace key, once
    getfluxly project create --workspace WS NAME          prints the project keys, once
    getfluxly key create|list|revoke ...                  more keys, or revoke one
    getfluxly keys generate-encryption-key | rotate       the secrets keyring
    getfluxly bounces --listen HOST:PORT                  the bounce mailbox (DSN, ARF)
    getfluxly users create EMAIL --workspace WS --role R  a dashboard user (password on stdin)

Configuration comes from ``GETFLUXLY_*`` variables (see settings.py). Exit codes: 0 success,
1 bad configuration (the message lists every problem), 2 usage error or refused operation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from getfluxly_server import __version__
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import providers as provider_domain
from getfluxly_server.domain import tenancy
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.feedback import secrets as webhook_secrets
from getfluxly_server.settings import Settings, SettingsError
from getfluxly_server.storage import schema
from getfluxly_server.storage.db import Database

if TYPE_CHECKING:
    from getfluxly_server.api.ratelimit import SharedBuckets

log = logging.getLogger("getfluxly")


class UsageError(Exception):
    """The command cannot run as asked (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "keys" and args.action == "generate-encryption-key":
        print(Keyring.generate())  # the one command that must work before any set-up
        return 0
    try:
        settings = Settings.from_env(
            dev=args.command == "dev", data_dir=getattr(args, "data_dir", None)
        )
        logging.basicConfig(
            level=settings.log_level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("alembic").setLevel(logging.WARNING)  # no chatter on every command
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (UsageError, DomainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="getfluxly", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"getfluxly {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run everything locally with a mail catcher")
    dev.add_argument(
        "--port", type=int, default=None, help="HTTP port (default GETFLUXLY_PORT or 8000)"
    )
    dev.add_argument("--data-dir", type=Path, default=None, help="default .getfluxly")
    dev.add_argument(
        "--smtp-port", type=int, default=2525, help="catcher port (default 2525, else any free)"
    )
    dev.set_defaults(handler=_dev)

    for name, handler, text in (
        ("migrate", _migrate, "apply database migrations"),
        ("serve", _serve, "API and workers (in one process, or two: --worker-process)"),
        ("api", _api, "the HTTP API only"),
        ("worker", _worker, "workers only"),
    ):
        command = commands.add_parser(name, help=text)
        if name in ("serve", "api"):
            command.add_argument("--host", default=None)
            command.add_argument("--port", type=int, default=None)
            command.add_argument(
                "--processes",
                type=_positive,
                default=1,
                help="serve from this many processes sharing the port (PostgreSQL only; "
                "one Python process uses one core)",
            )
        if name == "serve":
            command.add_argument(
                "--worker-process",
                action="store_true",
                help="run the workers in a process of their own beside the API process(es), "
                "so they use another core (SQLite too: wake-ups cross processes)",
            )
        command.set_defaults(handler=handler)

    workspace = commands.add_parser("workspace", help="workspaces").add_subparsers(
        dest="action", required=True
    )
    create_ws = workspace.add_parser("create", help="create a workspace and its first key")
    create_ws.add_argument("name")
    create_ws.set_defaults(handler=_workspace_create)

    project = commands.add_parser("project", help="projects").add_subparsers(
        dest="action", required=True
    )
    create_project = project.add_parser("create", help="create a project and its keys")
    create_project.add_argument("--workspace", required=True)
    create_project.add_argument("name")
    create_project.set_defaults(handler=_project_create)

    key = commands.add_parser("key", help="API keys").add_subparsers(dest="action", required=True)
    key_create = key.add_parser("create", help="issue a key (shown once)")
    key_create.add_argument("--workspace", required=True)
    key_create.add_argument("--project", default=None)
    key_create.add_argument("--kind", choices=("workspace", "secret", "publishable"), required=True)
    key_create.add_argument("--name", default="")
    key_create.set_defaults(handler=_key_create)
    key_list = key.add_parser("list", help="list keys (never their values)")
    key_list.add_argument("--workspace", required=True)
    key_list.set_defaults(handler=_key_list)
    key_revoke = key.add_parser("revoke", help="revoke a key")
    key_revoke.add_argument("--workspace", required=True)
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(handler=_key_revoke)

    users = commands.add_parser("users", help="dashboard users").add_subparsers(
        dest="action", required=True
    )
    user_create = users.add_parser(
        "create", help="create a dashboard user; the password is read from stdin"
    )
    user_create.add_argument("email")
    user_create.add_argument("--workspace", required=True)
    user_create.add_argument("--role", choices=("admin", "editor", "viewer"), required=True)
    user_create.set_defaults(handler=_user_create)

    keys = commands.add_parser("keys", help="the encryption keyring").add_subparsers(
        dest="action", required=True
    )
    keys.add_parser(
        "generate-encryption-key", help="print a new key for GETFLUXLY_ENCRYPTION_KEYS"
    ).set_defaults(handler=_generate_key)
    keys.add_parser("rotate", help="re-encrypt stored secrets with the primary key").set_defaults(
        handler=_rotate
    )

    bounces = commands.add_parser(
        "bounces", help="the bounce mailbox: receive DSNs and complaint reports over SMTP"
    )
    bounces.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="where to listen (default GETFLUXLY_BOUNCE_LISTEN), such as 0.0.0.0:25",
    )
    bounces.set_defaults(handler=_bounces)
    return parser


def _positive(value: str) -> int:
    number = int(value) if value.isdigit() else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return number


def _database(settings: Settings, *, migrated: bool = True) -> Database:
    """The database, checked: reachable, a known kind, and (unless migrating) up to date."""
    try:
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        db = Database(settings.database_url)
        current = schema.is_current(db)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise SettingsError(
            [
                "GETFLUXLY_DATABASE_URL is not a database URL GetFluxly can use "
                f"(sqlite:///path or postgresql://user:password@host/db): {exc}"
            ]
        ) from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        raise SettingsError(
            [f"GETFLUXLY_DATABASE_URL: cannot connect to {shown}: {reason}"]
        ) from None
    if migrated and not current:
        raise UsageError("the database schema is not up to date: run `getfluxly migrate` first")
    return db


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    schema.upgrade(_database(settings, migrated=False))
    print("database is up to date", file=sys.stderr)
    return 0


def _run_api(
    settings: Settings,
    db: Database,
    host: str,
    port: int,
    shared: _Shared | None = None,
) -> None:
    import uvicorn

    from getfluxly_server.app import create_app

    app = create_app(settings, db, rate_buckets=shared.buckets if shared else None)
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1,
    # giving any local proxy's clients a fresh rate-limit address per header they invent.
    # GETFLUXLY_TRUSTED_PROXIES says whom to believe (api/client_address.py).
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False)
    # uvicorn stops on SIGTERM, then re-raises it to the handler that was there before it
    # started. With Python's default handler that kills the process at once, before our
    # finally blocks drain the workers; this one turns it into an orderly exit instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.debug(
        "API on %s:%d (pid %d), database %s, event loop %s, HTTP parser %s",
        host, port, os.getpid(), "SQLite" if db.is_sqlite else "PostgreSQL", config.loop,
        config.http,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[shared.listener] if shared else None)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, with_worker=True)


def _api(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, with_worker=False)


def _run(args: argparse.Namespace, settings: Settings, *, with_worker: bool) -> int:
    if args.port:
        settings = settings.listening_on(args.port)
    host, port = args.host or settings.host, settings.port
    db = _database(settings)
    apart = with_worker and getattr(args, "worker_process", False)
    if apart and args.processes == 1:
        if not hasattr(os, "fork"):
            raise UsageError("--worker-process needs a system with fork(); run `getfluxly api` "
                             "and `getfluxly worker` as two commands")  # fmt: skip
        db.dispose()  # no connection may be shared across the fork
        return _run_many(settings, host, port, 1, with_worker=False, worker_process=True)
    if args.processes == 1:
        # `serve` with GETFLUXLY_BOUNCE_LISTEN runs the bounce mailbox too.
        with _bounce_mailbox(settings, db) if with_worker else contextlib.nullcontext():
            _run_one(settings, db, host, port, with_worker=with_worker)
        return 0
    if with_worker and not apart and settings.bounce_listen is not None:
        raise UsageError(
            "GETFLUXLY_BOUNCE_LISTEN works with one `serve` process: with --processes, run "
            "the bounce mailbox as its own process (`getfluxly bounces --listen HOST:PORT`)"
        )
    if db.is_sqlite:
        raise UsageError(
            "--processes needs PostgreSQL: SQLite lets one process write at a time, so more "
            "API processes would only wait on each other"
        )
    if not hasattr(os, "fork"):
        raise UsageError("--processes needs a system with fork(); run one process per port")
    db.dispose()  # no connection may be shared across the fork
    return _run_many(
        settings, host, port, args.processes, with_worker=with_worker and not apart,
        worker_process=apart,
    )  # fmt: skip


def _run_one(
    settings: Settings,
    db: Database,
    host: str,
    port: int,
    *,
    with_worker: bool,
    shared: _Shared | None = None,
) -> None:
    """The API (and with ``with_worker`` the job workers, as threads) in this process;
    ``shared``: what it shares with the other processes of ``--processes``."""
    from getfluxly_server.app import create_worker

    log.info("email providers: %s", settings.network_policy.describe())
    worker = create_worker(settings, db) if with_worker else None
    if worker is not None:
        worker.start()
    try:
        _run_api(settings, db, host, port, shared)
    finally:
        if worker is not None:
            worker.stop()
        db.dispose()


@dataclass(frozen=True)
class _Shared:
    """What the processes of ``--processes`` share: the listening socket and the buckets
    of the per-key rate limits."""

    listener: socket.socket
    buckets: SharedBuckets


def _stop_when_orphaned(parent: int) -> None:
    """Stop this process (as SIGTERM would) once its supervisor is gone, even if it was
    killed outright, so no orphan keeps serving the port."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _run_many(
    settings: Settings,
    host: str,
    port: int,
    count: int,
    *,
    with_worker: bool,
    worker_process: bool = False,
) -> int:
    """``count`` forked processes serving one listening socket (the kernel hands each
    connection to one of them), and with ``worker_process`` one more running the workers
    (and the bounce mailbox, if GETFLUXLY_BOUNCE_LISTEN is set). This process only
    supervises: SIGTERM or SIGINT go on to every child; when one child ends, the others are
    stopped too, and the exit status is the first child's (so a service manager restarts the
    whole set)."""
    from getfluxly_server.api.ratelimit import SharedBuckets

    # Made before the fork, so every child has the same socket and the same rate limits.
    shared = _Shared(socket.create_server((host, port), backlog=2048), SharedBuckets())
    children: list[int] = []
    for index in range(count + worker_process):
        pid = os.fork()
        if pid == 0:  # a child: its own database engine, event loop and threads
            status = 0
            _stop_when_orphaned(os.getppid())
            try:
                db = Database(settings.database_url)
                if index == count:  # the worker process
                    shared.listener.close()
                    _run_worker(settings, db)
                else:
                    _run_one(settings, db, host, port, with_worker=with_worker, shared=shared)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("API process %d failed", os.getpid())
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        children.append(pid)
    shared.listener.close()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info(
        "serving on %s:%d from %d processes%s: %s", host, port, count,
        " and a worker process" if worker_process else "", children,
    )  # fmt: skip
    pid, status = os.wait()
    first = os.waitstatus_to_exitcode(status)
    children.remove(pid)
    forward(signal.SIGTERM, None)
    for child in children:
        os.waitpid(child, 0)
    # A child stopped by our SIGTERM exits 128 + 15: that is an orderly stop.
    return 0 if first in (0, 128 + signal.SIGTERM) else 1


def _worker(_args: argparse.Namespace, settings: Settings) -> int:
    from getfluxly_server.app import create_worker

    log.info("worker started; email providers: %s", settings.network_policy.describe())
    create_worker(settings, _database(settings)).run_forever()
    return 0


def _run_worker(settings: Settings, db: Database) -> None:
    """The workers (and the bounce mailbox, if set) in this process until SIGTERM, which lets
    the jobs in hand finish (``serve --worker-process``)."""
    from getfluxly_server.app import create_worker

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.info("worker process %d; email providers: %s", os.getpid(),
             settings.network_policy.describe())  # fmt: skip
    try:
        with _bounce_mailbox(settings, db):
            create_worker(settings, db).run_forever()
    finally:
        db.dispose()


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from getfluxly_server import devmode

    if args.port is not None:
        settings = settings.listening_on(args.port)
    db = Database(settings.database_url)
    schema.upgrade(db)
    catcher = devmode.Catcher(db, args.smtp_port)
    catcher.start()
    settings = devmode.with_catcher(settings, catcher)
    try:
        install = devmode.prepare(settings, db, catcher)
        sys.stdout.write(devmode.exports(settings, install, catcher))
        sys.stdout.flush()
        print(
            f"getfluxly dev: API and dashboard on http://{settings.host}:{settings.port}, "
            f"mail catcher on "
            f"{catcher.address}; data in {settings.data_dir} (Ctrl-C stops)",
            file=sys.stderr,
        )
        _run_one(settings, db, settings.host, settings.port, with_worker=True)
    finally:
        catcher.stop()
    return 0


@contextlib.contextmanager
def _bounce_mailbox(
    settings: Settings, db: Database, listen: tuple[str, int] | None = None
) -> Iterator[None]:
    """The bounce mailbox on ``listen`` (default GETFLUXLY_BOUNCE_LISTEN; none if unset)
    while the block runs."""
    where = listen or settings.bounce_listen
    if where is None:
        yield
        return
    from getfluxly_server.domain.bounce_mailbox.listener import BounceListener

    listener = BounceListener(db, *where, domain=settings.bounce_domain)
    try:
        listener.start()
    except OSError as exc:
        raise UsageError(
            f"the bounce mailbox cannot listen on {where[0]}:{where[1]}: {exc}"
        ) from None
    domain = settings.bounce_domain or "any domain (GETFLUXLY_BOUNCE_DOMAIN is not set)"
    log.info("bounce mailbox listening on %s for %s", listener.address, domain)
    try:
        yield
    finally:
        listener.stop()


def _bounces(args: argparse.Namespace, settings: Settings) -> int:
    """``getfluxly bounces``: the bounce mailbox alone, until SIGTERM or Ctrl-C."""
    from getfluxly_server.settings import parse_listen

    if args.listen is not None:
        try:
            listen: tuple[str, int] | None = parse_listen(args.listen)
        except ValueError as exc:
            raise UsageError(f"--listen {args.listen!r}: {exc}") from None
    else:
        listen = settings.bounce_listen
    if listen is None:
        raise UsageError("say where to listen: --listen HOST:PORT or GETFLUXLY_BOUNCE_LISTEN")
    db = _database(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with _bounce_mailbox(settings, db, listen):
            print(f"getfluxly bounces: listening on {listen[0]}:{listen[1]}", file=sys.stderr)
            while not stop.wait(1.0):
                pass
    finally:
        db.dispose()
    return 0


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _workspace_create(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).transaction() as session:
        workspace, key = tenancy.create_workspace(session, args.name)
        _print_json({"workspace_id": workspace.id, "workspace_key": key.plaintext})
    print("the key is shown this once: store it now", file=sys.stderr)
    return 0


def _project_create(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).transaction() as session:
        made = tenancy.create_project(session, args.workspace, args.name)
        _print_json(
            {
                "project_id": made.project.id,
                "secret_key": made.secret_key.plaintext,
                "publishable_key": made.publishable_key.plaintext,
            }
        )
    return 0


def _key_create(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).transaction() as session:
        issued = tenancy.issue_key_in(session, args.workspace, args.project, args.kind, args.name)
        _print_json({"key_id": issued.record.id, "key": issued.plaintext})
    return 0


def _key_list(args: argparse.Namespace, settings: Settings) -> int:
    from getfluxly_server.api import views

    with _database(settings).read() as session:
        keys = tenancy.keys(session, args.workspace)
        _print_json([views.key(k).model_dump(mode="json") for k in keys])
    return 0


def _key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).transaction() as session:
        tenancy.revoke_key_in(session, args.workspace, args.key_id)
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0


def _read_password() -> str:
    """The password from stdin: prompted for (not echoed) on a terminal, else the first
    line of what is piped in (its line ending dropped, nothing else)."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Password: ")
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def _user_create(args: argparse.Namespace, settings: Settings) -> int:
    from getfluxly_server.domain import users

    password = _read_password()
    if not password:
        raise UsageError("no password on stdin: pipe it in, e.g. `... < password-file`")
    with _database(settings).transaction() as session:
        user = users.create_user(session, args.workspace, args.email, args.role, password)
        _print_json(
            {
                "user_id": user.id,
                "email": user.email,
                "role": user.role,
                "workspace_id": user.workspace_id,
            }
        )
    return 0


def _generate_key(_args: argparse.Namespace, _settings: Settings) -> int:
    print(Keyring.generate())
    return 0


def _rotate(_args: argparse.Namespace, settings: Settings) -> int:
    """Re-encrypt every secret not under the primary key, so old keys can be dropped."""
    keyring = settings.keyring
    from getfluxly_server.domain.outbound import endpoints as outbound_endpoints

    with _database(settings).transaction() as session:
        count = provider_domain.rotate_secrets(session, keyring)
        count += outbound_endpoints.rotate_secrets(session, keyring)
        count += webhook_secrets.rotate_keys(session, keyring)
    print(f"re-encrypted {count} secret(s) with key {keyring.primary!r}", file=sys.stderr)
    return 0
