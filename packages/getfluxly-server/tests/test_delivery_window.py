"""How much a worker killed mid-send can leave ``unknown``, on SQLite and PostgreSQL.

The delivery loop marks messages ``sending`` a window at a time, just before they go out
(``domain/delivery/dispatcher.py``): whatever moment a worker dies, only the window being
handed over is ``sending`` (so ``unknown`` once the lease lapses); every other claimed
message is either recorded or still queued, and is sent by the next worker. The tests watch
the ledger at each hand-over to a real SMTP relay, and kill a hand-over midway.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Connection, event, func, select

from flux_testkit import ledger
from flux_testkit.smtpd import SMTPTestServer
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import (
    MESSAGE_ID_HEADER,
    BuildContext,
    DeliveryResult,
    OutgoingEmail,
    ProviderClient,
)
from getfluxly_server.delivery.clients import ClientCache
from getfluxly_server.domain.delivery import Dispatcher
from getfluxly_server.domain.providers import draft_of
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import EmailProvider, Message

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase


class _Died(BaseException):
    """Stands for SIGKILL: nothing after it in the worker runs."""


class Watching:
    """The real SMTP provider client, reading the ledger's ``sending`` messages at each
    hand-over; ``die_at``: the hand-over (1-based) that never returns (the worker died)."""

    def __init__(self, inner: ProviderClient, db: Database, die_at: int | None = None) -> None:
        self.inner, self.db, self.die_at = inner, db, die_at
        self.windows: list[list[str]] = []
        self.sending_seen: list[set[str]] = []
        self.lock = threading.Lock()

    def deliver_many(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        ids = [str(e.message_id) for e in emails]
        with self.db.read() as session:
            sending = set(session.scalars(select(Message.id).where(Message.status == "sending")))
        with self.lock:
            self.windows.append(ids)
            self.sending_seen.append(sending)
            dying = len(self.windows) == self.die_at
        if dying:  # half of this window reaches the relay, then the process is gone
            self.inner.deliver_many(emails[: len(emails) // 2])
            raise _Died
        return self.inner.deliver_many(emails)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(Keyring.generate())


@pytest.fixture
def relay() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(pipelining=True, auth=True) as server:
        yield server


def _setup(
    db: Database, database: GFDatabase, keyring: Keyring, relay: SMTPTestServer, n: int
) -> tuple[str, list[str]]:
    project = ledger.make_project(db, database.workspace.id)
    provider = ledger.add_provider(db, keyring, project, ledger.smtp_body(relay.host, relay.port))
    ids = ledger.queue_messages(db, project, provider, [f"u{i}@example.com" for i in range(n)])
    return provider, ids


@contextlib.contextmanager
def _dispatcher(
    db: Database, keyring: Keyring, provider: str, die_at: int | None = None
) -> Iterator[tuple[Dispatcher, Watching]]:
    """A dispatcher (chunks of 50 sent in windows of 10) whose client for ``provider`` is
    the server's own SMTP client, watched."""
    clients = ClientCache()
    dispatcher = Dispatcher(
        db, keyring=keyring, build_context=BuildContext(timeout=5.0), clients=clients,
        chunk=50, window=10, batch=50, lease_seconds=30, rng=random.Random(3),
    )  # fmt: skip
    with db.read() as session:
        row = session.get(EmailProvider, provider)
        assert row is not None
        version = row.updated_at.isoformat()
    watching = Watching(draft_of(row, keyring).client(dispatcher.context), db, die_at)
    clients.get(provider, version, lambda: watching)  # type: ignore[arg-type,return-value]
    try:
        yield dispatcher, watching
    finally:
        dispatcher.stop()
        clients.close()


def _statuses(db: Database, ids: Sequence[str]) -> dict[str, str]:
    with db.read() as session:
        query = select(Message.id, Message.status).where(Message.id.in_(ids))
        return {str(row.id): str(row.status) for row in session.execute(query)}


def test_only_the_window_on_the_wire_is_sending(
    gf_db: Database, gf_database: GFDatabase, keyring: Keyring, relay: SMTPTestServer
) -> None:
    provider, ids = _setup(gf_db, gf_database, keyring, relay, 50)
    with _dispatcher(gf_db, keyring, provider) as (dispatcher, watching):
        assert dispatcher.run_once() == 50
    assert [len(w) for w in watching.windows] == [10] * 5
    for window, sending in zip(watching.windows, watching.sending_seen, strict=True):
        assert sending == set(window)  # marked before a byte of it went out, nothing else
    assert set(_statuses(gf_db, ids).values()) == {"sent"}
    assert sorted(str(m.message[MESSAGE_ID_HEADER]) for m in relay.messages) == sorted(ids)


def test_a_worker_dying_mid_chunk_leaves_only_the_window_on_the_wire_sending(
    gf_db: Database, gf_database: GFDatabase, keyring: Keyring, relay: SMTPTestServer
) -> None:
    provider, ids = _setup(gf_db, gf_database, keyring, relay, 50)
    with (
        _dispatcher(gf_db, keyring, provider, die_at=3) as (dispatcher, watching),
        pytest.raises(_Died),
    ):
        dispatcher.run_once()
    statuses = _statuses(gf_db, ids)
    sending = {i for i, s in statuses.items() if s == "sending"}
    assert sending == set(watching.windows[2])  # the window on the wire, nothing more
    assert {s for i, s in statuses.items() if i not in sending} == {"sent", "queued"}
    assert sum(1 for s in statuses.values() if s == "sent") == 20  # the windows before it
    with gf_db.read() as session:  # the rest were never attempted
        attempted = session.scalar(select(func.count()).where(Message.attempts > 0))
    assert attempted == 30


class Chaining:
    """The real SMTP client that, as each window goes out, queues one more message (until
    ``n`` were sent): a steady stream, so every claim of the delivery loop finds one."""

    def __init__(self, inner: ProviderClient, queue_next: Callable[[], None], n: int) -> None:
        self.inner, self.queue_next, self.left = inner, queue_next, n
        self.done = threading.Event()

    def deliver_many(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        results = self.inner.deliver_many(emails)
        self.left -= len(emails)
        if self.left > 0:
            self.queue_next()
        else:
            self.done.set()
        return results

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_stream_costs_the_loop_two_write_transactions_a_message(
    gf_db: Database, gf_database: GFDatabase, keyring: Keyring, relay: SMTPTestServer
) -> None:
    # Messages arriving one at a time (as an automation's sends do): each cycle claims one,
    # marks it sending, sends it; its outcome is recorded by the transaction of the next
    # claim, not one of its own (on SQLite each write transaction queues for the one lock).
    n = 12
    provider, first = _setup(gf_db, gf_database, keyring, relay, 1)
    with gf_db.read() as session:
        project = session.get(Message, first[0]).project_id  # type: ignore[union-attr]
    queued = list(first)

    def queue_next() -> None:  # (in a thread of its own: its transaction is not counted)
        def one() -> None:
            queued.extend(ledger.queue_messages(gf_db, project, provider, [f"v{n}@x.io"]))

        n = len(queued)
        thread = threading.Thread(target=one, name="test-queue")
        thread.start()
        thread.join()

    writes: Counter[str] = Counter()

    def begun(connection: Connection) -> None:
        if not connection.get_execution_options().get("read_only"):
            writes[threading.current_thread().name] += 1

    clients = ClientCache()
    dispatcher = Dispatcher(
        gf_db, keyring=keyring, build_context=BuildContext(timeout=5.0), clients=clients,
        threads=1, lease_seconds=30, poll_seconds=5.0,
    )  # fmt: skip
    with gf_db.read() as session:
        row = session.get(EmailProvider, provider)
        assert row is not None
    chaining = Chaining(draft_of(row, keyring).client(dispatcher.context), queue_next, n)
    clients.get(provider, row.updated_at.isoformat(), lambda: chaining)  # type: ignore[arg-type,return-value]
    event.listen(gf_db.engine, "begin", begun)
    try:
        dispatcher.start()
        assert chaining.done.wait(60)
    finally:
        dispatcher.stop()
        event.remove(gf_db.engine, "begin", begun)
        clients.close()
    assert set(_statuses(gf_db, queued).values()) == {"sent"}
    assert len(queued) == len(relay.messages) == n
    # Per message a claim (recording the one before) and a mark; then the claim that
    # records the last outcome and finds nothing (the loop then sleeps until stopped).
    assert writes["delivery-0"] <= 2 * n + 1
