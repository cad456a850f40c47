"""Pytest fixtures around :class:`flux_testkit.smtpd.SMTPTestServer`.

Enable them in a test suite's top-level ``conftest.py`` with either::

    pytest_plugins = ["flux_testkit.pytest_fixtures"]

or by importing the fixture functions (ruff: ``# noqa: F401``)::

    from flux_testkit.pytest_fixtures import client_ssl_context, plain_smtp, smtp_server

Test modules should then import ``SMTPServerFactory`` (for annotations) only under
``TYPE_CHECKING`` unless the plugin is already registered, or pytest warns that it cannot
rewrite the module's asserts.

The ``gf_*`` fixtures run the real GetFluxly server (:mod:`flux_testkit.gfserver`):
``gf_server`` (a started ``getfluxly serve``, parametrized over SQLite and PostgreSQL),
``gf_server_factory`` (servers with their own environment, or API-only), ``gf_module_server``
and ``gf_module_api`` (one server shared by a module's tests), ``gf_database``,
``gf_backend`` and the session's ``gf_harness``.

``chromium`` is the system's headless Chromium (:mod:`flux_testkit.browser`), one per module.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, Unpack

import pytest

from flux_testkit import certs
from flux_testkit.smtpd import ServerOptions, SMTPTestServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from flux_testkit.gfserver import Backend, GFDatabase, GFServer, Harness, ServerEnv
    from getfluxly_server.storage.db import Database

__all__ = [
    "GFServerFactory",
    "SMTPServerFactory",
    "chromium",
    "client_ssl_context",
    "gf_backend",
    "gf_database",
    "gf_harness",
    "gf_module_api",
    "gf_module_server",
    "gf_server",
    "gf_server_factory",
    "plain_smtp",
    "smtp_server",
]


class SMTPServerFactory(Protocol):
    """Type of the ``smtp_server`` fixture: takes :class:`SMTPTestServer`'s keyword arguments."""

    def __call__(self, **options: Unpack[ServerOptions]) -> SMTPTestServer: ...


@pytest.fixture
def smtp_server() -> Iterator[SMTPServerFactory]:
    """Factory of started servers: ``smtp_server(tls="starttls", auth=True)``.

    Every server it made is stopped when the test ends (call it several times for several
    servers).
    """
    started: list[SMTPTestServer] = []

    def factory(**options: Unpack[ServerOptions]) -> SMTPTestServer:
        server = SMTPTestServer(**options).start()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def plain_smtp() -> Iterator[SMTPTestServer]:
    """A started plaintext server (``tls="none"``, no AUTH), stopped at the end of the test."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def client_ssl_context() -> ssl.SSLContext:
    """A client context trusting the testkit CA (new per test, so tests may modify it)."""
    return certs.client_ssl_context()


# GetFluxly server fixtures: the real server as subprocesses (see flux_testkit.gfserver).
# gfserver is imported inside the fixtures, so suites that never use them (FluxMail's) do not
# pay for importing SQLAlchemy, psycopg and httpx at start-up.

_GF_BACKENDS = ("sqlite", "postgres")


class GFServerFactory(Protocol):
    """Type of the ``gf_server_factory`` fixture (see its docstring)."""

    def __call__(
        self,
        *,
        env: ServerEnv | None = None,
        mode: Literal["serve", "api"] = "serve",
        args: Sequence[str] = (),
        start: bool = True,
    ) -> GFServer: ...


@pytest.fixture(scope="session")
def gf_harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """The session's :class:`~flux_testkit.gfserver.Harness`: template databases (made on
    first use per backend, the PostgreSQL one dropped at the end) and the CLI runner.

    Subprocess bytecode is cached in pytest's cache directory (``.pytest_cache``), so only
    the first ``getfluxly`` start on a machine compiles the server's dependencies.
    """
    from flux_testkit.gfserver import Harness

    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    pycache = (
        cache.mkdir("getfluxly-pycache")
        if cache is not None
        else tmp_path_factory.mktemp("getfluxly-pycache")
    )
    harness = Harness(tmp_path_factory.mktemp("getfluxly"), pycache=pycache)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(params=_GF_BACKENDS, ids=_GF_BACKENDS)
def gf_backend(request: pytest.FixtureRequest) -> Backend:
    """``"sqlite"`` or ``"postgres"``: every test using it (or a fixture below) runs twice.

    PostgreSQL is never skipped: without it the ``postgres`` variant fails and says to run
    ``scripts/setup-postgres`` (or to set GETFLUXLY_TEST_POSTGRES_URL).
    """
    backend: Backend = request.param
    return backend


@pytest.fixture
def gf_database(gf_harness: Harness, gf_backend: Backend, tmp_path: Path) -> Iterator[GFDatabase]:
    """A fresh, migrated database with one workspace (``.workspace``), for this test only:
    a SQLite file under ``tmp_path``, or a PostgreSQL ``gf_test_<random>`` dropped afterwards.
    """
    database = gf_harness.database(gf_backend, tmp_path / "db")
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def gf_db(gf_database: GFDatabase) -> Iterator[Database]:
    """The test's database (``gf_database``) opened in this process the way the server opens
    it (``getfluxly_server.storage.db.Database``), disposed at the end of the test."""
    from getfluxly_server.storage.db import Database

    opened = Database(gf_database.sqlalchemy_url)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def gf_server_factory(
    gf_harness: Harness, gf_database: GFDatabase, tmp_path: Path
) -> Iterator[GFServerFactory]:
    """Factory of servers on this test's database: ``gf_server_factory(env={...},
    mode="serve"|"api", args=[...], start=True)``.

    ``env`` overrides the server environment (None removes a variable); ``mode="api"`` runs
    ``getfluxly api`` with no worker threads, so only workers the test starts with
    ``.start_worker()`` run jobs; ``args`` go after the command's own (``--processes 2``);
    ``start=False`` returns it unstarted (call ``.start()``).
    Every server it made is closed (clients, API process, workers) when the test ends.
    """
    from flux_testkit.gfserver import GFServer

    made: list[GFServer] = []

    def factory(
        *,
        env: ServerEnv | None = None,
        mode: Literal["serve", "api"] = "serve",
        args: Sequence[str] = (),
        start: bool = True,
    ) -> GFServer:
        server = GFServer(
            gf_harness, gf_database, tmp_path / f"logs-{len(made)}", env=env, mode=mode,
            args=args,
        )  # fmt: skip
        made.append(server)
        return server.start() if start else server

    try:
        yield factory
    finally:
        for server in reversed(made):
            server.close()


@pytest.fixture
def gf_server(gf_server_factory: GFServerFactory) -> GFServer:
    """``getfluxly serve`` (API and worker threads) on a fresh database, once on SQLite and
    once on PostgreSQL (ids ``sqlite`` and ``postgres``), stopped at the end of the test."""
    return gf_server_factory()


@pytest.fixture(scope="module", params=_GF_BACKENDS, ids=_GF_BACKENDS)
def gf_module_server(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GFServer]:
    """One ``getfluxly serve`` per backend shared by the tests of a module (each start costs
    about a second of CPU), on its own database, closed after the module's last test.

    Tests sharing it must make their own objects (projects, keys, workspaces) and check only
    those. Do not combine it with ``gf_server`` in one test: the two parametrizations cross.
    """
    yield from _module_server(request.param, gf_harness, tmp_path_factory, "serve")


@pytest.fixture(scope="module", params=_GF_BACKENDS, ids=_GF_BACKENDS)
def gf_module_api(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GFServer]:
    """As ``gf_module_server``, but ``getfluxly api``: no worker threads, so queued jobs and
    messages stay as recorded until the test runs them (``flux_testkit.drain``) or starts a
    worker (``.start_worker()``)."""
    yield from _module_server(request.param, gf_harness, tmp_path_factory, "api")


def _module_server(
    backend: Backend,
    harness: Harness,
    tmp_path_factory: pytest.TempPathFactory,
    mode: Literal["serve", "api"],
) -> Iterator[GFServer]:
    from flux_testkit.gfserver import GFServer

    directory = tmp_path_factory.mktemp(f"gf-module-{mode}-{backend}")
    database = harness.database(backend, directory / "db")
    server = GFServer(harness, database, directory / "logs", mode=mode)
    try:
        yield server.start()
    finally:
        server.close()
        database.close()


def _hypothesis_profiles() -> None:
    """On CI, property tests draw the same examples every run (derandomized), so a result can
    be reproduced from its log; developers keep random exploration."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profiles()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """The system's headless Chromium, shared by a module's tests (Playwright is imported only
    by the modules that use it)."""
    from flux_testkit import browser

    with browser.chromium() as opened:
        yield opened
