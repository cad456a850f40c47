"""The delivery crash test: workers killed with SIGKILL mid-send, nothing lost, nothing doubled.

:func:`run` queues N messages (as the ledger does, :mod:`flux_testkit.ledger`) for a relay
that records everything it receives (:class:`~flux_testkit.smtpd.SMTPTestServer`), then
starts ``getfluxly worker`` as a real subprocess and kills it with SIGKILL at a random moment
once it is sending, ``kills`` times, starting a fresh one each time; a last worker finishes
the queue and is stopped. Then it reads the ledger and the relay:

- every message is accounted for: ``sent`` or ``unknown``, none left queued, deferred or
  sending;
- none missing: every ``sent`` message reached the relay;
- duplicates (the same ``X-GetFluxly-Message-Id`` received twice) only among ``unknown``.

The suite runs a short version (``tests/test_dispatch_crash.py``); ``bench/delivery_crash.py``
runs the long one (2,000 messages, more kills).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux_testkit import ledger
from flux_testkit.gfserver import Backend, GFProcess, GFServer, Harness
from flux_testkit.smtpd import SMTPTestServer
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import MESSAGE_ID_HEADER
from getfluxly_server.storage.db import Database

#: Short leases, so a killed worker's messages come back (or become unknown) in seconds.
WORKER_ENV: dict[str, str | None] = {
    "GETFLUXLY_DELIVERY_LEASE_SECONDS": "2",
    "GETFLUXLY_DELIVERY_THREADS": "2",
    "GETFLUXLY_DELIVERY_BATCH": "100",
    "GETFLUXLY_WORKER_THREADS": "1",
    "GETFLUXLY_LOG_LEVEL": "WARNING",
}


@dataclass
class Report:
    backend: str
    messages: int
    kills: int
    statuses: dict[str, int] = field(default_factory=dict)
    #: Sent messages the relay never received.
    missing: list[str] = field(default_factory=list)
    #: Message ids the relay received more than once -> how many times.
    duplicates: dict[str, int] = field(default_factory=dict)
    #: Of those, the ones not recorded ``unknown`` (must be none).
    doubled_not_unknown: list[str] = field(default_factory=list)
    #: Received by the relay but not in the ledger at all (must be none).
    strangers: list[str] = field(default_factory=list)
    received: int = 0
    seconds: float = 0.0

    @property
    def unknown(self) -> int:
        return self.statuses.get("unknown", 0)

    @property
    def ok(self) -> bool:
        accounted = set(self.statuses) <= {"sent", "unknown"}
        return (
            accounted
            and sum(self.statuses.values()) == self.messages
            and not self.missing
            and not self.doubled_not_unknown
            and not self.strangers
        )

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "messages": self.messages, "kills": self.kills,
            "statuses": self.statuses, "received": self.received, "unknown": self.unknown,
            "missing": len(self.missing), "duplicates": len(self.duplicates),
            "doubled_not_unknown": len(self.doubled_not_unknown),
            "strangers": len(self.strangers), "seconds": round(self.seconds, 2),
            "ok": self.ok,
        }  # fmt: skip


def _statuses(db: Database) -> dict[str, str]:
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, status FROM messages").all()
    return {str(row[0]): str(row[1]) for row in rows}


def _wait_for_progress(
    relay: SMTPTestServer, since: int, worker: GFProcess, timeout: float
) -> bool:
    """Until the relay has more than ``since`` messages (the worker is sending)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.alive:
        if len(relay.messages) > since:
            return True
        time.sleep(0.01)
    return False


def run(
    harness: Harness,
    backend: Backend,
    workdir: Path,
    *,
    messages: int = 300,
    kills: int = 3,
    seed: int | None = None,
    timeout: float = 120.0,
) -> Report:
    """The crash test on a fresh database of ``backend`` (see the module docstring)."""
    rng = random.Random(seed)
    report = Report(backend, messages, kills)
    database = harness.database(backend, workdir / "db")
    server = GFServer(harness, database, workdir / "logs", mode="api", env=WORKER_ENV)
    db = Database(database.sqlalchemy_url)
    started = time.monotonic()
    try:
        with SMTPTestServer(auth=True, pipelining=True) as relay:
            keyring = Keyring.parse(server.encryption_keys)
            project = ledger.make_project(db, database.workspace.id)
            provider = ledger.add_provider(
                db, keyring, project, ledger.smtp_body(relay.host, relay.port)
            )
            addresses = [f"user{i}@example.com" for i in range(messages)]
            for start in range(0, messages, 1000):
                ledger.queue_messages(db, project, provider, addresses[start : start + 1000])
            for _ in range(kills):
                worker = server.start_worker()
                if _wait_for_progress(relay, len(relay.messages), worker, 30.0):
                    time.sleep(rng.uniform(0.0, 0.5))  # somewhere in the middle of it
                server.kill_worker(worker)
                if not worker.alive and worker.returncode not in (-9, None):
                    raise RuntimeError(f"the worker failed by itself:\n{server.logs()}")
            worker = server.start_worker()
            deadline = time.monotonic() + timeout
            pending = {"queued", "deferred", "sending"}
            while set(_statuses(db).values()) & pending:
                if time.monotonic() > deadline or not worker.alive:
                    raise RuntimeError(
                        f"messages still pending: {Counter(_statuses(db).values())}\n"
                        + server.logs()[-5000:]
                    )
                time.sleep(0.1)
            worker.stop()
            report.seconds = time.monotonic() - started
            # (The relay records a message before it answers, so all are in by now.)
            received = Counter(str(m.message[MESSAGE_ID_HEADER]) for m in relay.messages)
            statuses = _statuses(db)
    finally:
        server.close()
        db.dispose()
        database.close()
    report.statuses = dict(Counter(statuses.values()))
    report.received = sum(received.values())
    report.missing = sorted(i for i, s in statuses.items() if s == "sent" and i not in received)
    report.duplicates = {i: n for i, n in received.items() if n > 1}
    report.doubled_not_unknown = sorted(
        i for i in report.duplicates if statuses.get(i) != "unknown"
    )
    report.strangers = sorted(i for i in received if i not in statuses)
    return report
