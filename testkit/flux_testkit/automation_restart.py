"""The automations' restart test: many profiles at various steps of a journey, the API
process and the worker killed with SIGKILL, restarted; every profile completes its journey
with exactly the messages it should get, counted at the relay.

The journey: ``signed_up`` → send A → wait 1 s → send B → wait 2 s → send C (the real
clock: the processes are the real ``getfluxly api`` and ``getfluxly worker``). Each profile
is identified and signs up through the ingest API; the worker is killed ``kills`` times while
journeys are under way (the first time, the API process too).

What is checked (:attr:`Report.ok`):

- every run completed; every profile has exactly one ledger message per send step (no step
  skipped, none recorded twice: the key is automation + step + profile + run);
- at the relay, no message arrived twice, and every expected message the relay does not
  have is ``unknown`` in the ledger (never ``sent``, never lost silently): a message the
  delivery worker was handing over when it was killed is recorded ``unknown`` (the delivery
  layer's contract: not resent automatically, it may or may not have arrived);
- the operator's step (the server README): the ``unknown`` messages whose Message-ID the
  relay never got (read here from the relay, as an operator reads the relay's log) are
  retried by hand, ``POST /v1/messages/{id}/retry``; then the relay holds exactly the
  expected messages, each once.

The suite runs it small (``tests/test_automation_restart.py``); ``bench/automation_restart.py``
runs 1,000 profiles.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_testkit.gfserver import GFServer
from flux_testkit.smtpd import SMTPTestServer

if TYPE_CHECKING:
    from flux_testkit.gfserver import Backend, Harness

from sqlalchemy import bindparam, text

from getfluxly_server.delivery.base import MESSAGE_ID_HEADER
from getfluxly_server.storage.db import Database

WORKER_ENV: dict[str, str | None] = {
    "GETFLUXLY_DELIVERY_LEASE_SECONDS": "2",
    "GETFLUXLY_JOB_LEASE_SECONDS": "2",
    "GETFLUXLY_DELIVERY_BATCH": "100",
    "GETFLUXLY_LOG_LEVEL": "WARNING",
}
STEPS = ("a", "b", "c")


@dataclass
class Report:
    backend: str
    profiles: int
    kills: int
    seconds: float = 0.0
    runs: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    received: int = 0
    #: Profiles whose ledger messages are not exactly one per send step.
    wrong_ledger: list[str] = field(default_factory=list)
    #: Messages recorded ``sent`` that the relay does not have.
    missing: list[str] = field(default_factory=list)
    #: Messages the relay received more than once.
    doubled: list[str] = field(default_factory=list)
    #: Expected messages the relay does not have and the ledger does not call ``unknown``.
    lost: list[str] = field(default_factory=list)
    #: ``unknown`` messages the relay had (their data went out before the kill).
    unknown_received: int = 0
    #: ``unknown`` messages the relay never got, retried by hand (the operator's step).
    retried: list[str] = field(default_factory=list)
    #: After the retries: expected messages still not at the relay, and anything the relay
    #: holds other than exactly one of each expected message.
    missing_after_retry: list[str] = field(default_factory=list)
    wrong_after_retry: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.runs == {"completed": self.profiles}
            and set(self.statuses) <= {"sent", "unknown"}
            and not self.wrong_ledger
            and not self.missing
            and not self.doubled
            and not self.lost
            and not self.missing_after_retry
            and not self.wrong_after_retry
        )

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "profiles": self.profiles, "kills": self.kills,
            "seconds": round(self.seconds, 1), "runs": self.runs, "statuses": self.statuses,
            "received": self.received, "unknown": self.statuses.get("unknown", 0),
            "wrong_ledger": len(self.wrong_ledger), "missing": len(self.missing),
            "doubled": len(self.doubled), "lost": len(self.lost),
            "unknown_received": self.unknown_received, "retried": len(self.retried),
            "missing_after_retry": len(self.missing_after_retry),
            "wrong_after_retry": len(self.wrong_after_retry),
        }  # fmt: skip


_NOT_SENT = text("SELECT count(*) FROM messages WHERE id IN :ids AND status <> 'sent'").bindparams(
    bindparam("ids", expanding=True)
)


def _rows(db: Database, sql: str, **params: Any) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def _setup(server: GFServer, relay: SMTPTestServer, profiles: int) -> str:
    """Project, provider, templates and the active automation; every profile identified and
    signed up. Returns the automation id."""
    api = server.client()
    project = server.create_project("Restart")
    server.create_smtp_provider(project.id, relay.host, relay.port)
    templates = {}
    for step in STEPS:
        made = api.post(
            f"/v1/projects/{project.id}/templates",
            json={"name": step, "subject": f"Step {step.upper()}", "text": "hello"},
        )
        assert made.status_code == 201, made.text
        templates[step] = made.json()["template"]["id"]
    made = api.post(
        f"/v1/projects/{project.id}/automations",
        json={
            "name": "Journey",
            "trigger": {"event": "signed_up"},
            "steps": [
                {"id": "a", "type": "send_email", "template_id": templates["a"]},
                {"id": "wait1", "type": "delay", "duration": "PT1S"},
                {"id": "b", "type": "send_email", "template_id": templates["b"]},
                {"id": "wait2", "type": "delay", "duration": "PT2S"},
                {"id": "c", "type": "send_email", "template_id": templates["c"]},
            ],
        },
    )
    assert made.status_code == 201, made.text
    automation_id = str(made.json()["automation"]["id"])
    assert api.post(f"/v1/automations/{automation_id}/activate").status_code == 200
    ingest = server.client(project.secret_key)
    events: list[dict[str, Any]] = []
    for n in range(profiles):
        user = f"user{n}"
        events.append(
            {"type": "identify", "external_id": user, "traits": {"email": f"{user}@example.com"}}
        )
        events.append({"event": "signed_up", "external_id": user})
    for start in range(0, len(events), 100):
        sent = ingest.post("/v1/events/batch", json={"events": events[start : start + 100]})
        assert sent.status_code == 202, sent.text
    return automation_id


def run(
    harness: Harness,
    backend: Backend,
    workdir: Path,
    *,
    profiles: int = 100,
    kills: int = 3,
    seed: int | None = None,
    timeout: float = 180.0,
) -> Report:
    """The restart test on a fresh database of ``backend`` (see the module docstring)."""
    rng = random.Random(seed)
    report = Report(backend, profiles, kills)
    database = harness.database(backend, workdir / "db")
    server = GFServer(harness, database, workdir / "logs", mode="api", env=WORKER_ENV)
    db = Database(database.sqlalchemy_url)
    started = time.monotonic()
    try:
        with SMTPTestServer(auth=True, pipelining=True) as relay:
            server.start()
            automation_id = _setup(server, relay, profiles)
            expected = profiles * len(STEPS)
            for kill in range(kills):
                worker = server.start_worker()
                # Somewhere in the middle: some mail out, journeys at every step.
                target = len(relay.messages) + rng.randint(1, max(1, expected // (kills + 2)))
                deadline = time.monotonic() + 60
                while len(relay.messages) < target and worker.alive and time.monotonic() < deadline:
                    time.sleep(0.01)
                server.kill_worker(worker)
                if not worker.alive and worker.returncode not in (-9, None):
                    raise RuntimeError(f"the worker failed by itself:\n{server.logs()[-5000:]}")
                if kill == 0 and server.process is not None:
                    server.process.signal(9)  # the API too, once
                    server.process.stop()
                    server.start()
            worker = server.start_worker()
            deadline = time.monotonic() + timeout
            while True:
                running = _rows(db, "SELECT count(*) FROM automation_runs WHERE status = 'running'")
                pending = _rows(
                    db,
                    "SELECT count(*) FROM messages "
                    "WHERE status IN ('queued', 'deferred', 'sending')",
                )
                total = _rows(db, "SELECT count(*) FROM automation_runs")
                if running[0][0] == 0 and pending[0][0] == 0 and total[0][0] == profiles:
                    break
                if time.monotonic() > deadline or not worker.alive:
                    raise RuntimeError(
                        f"journeys still under way: {running[0][0]} runs, {pending[0][0]} "
                        f"messages pending\n" + server.logs()[-5000:]
                    )
                time.sleep(0.1)
            report.seconds = time.monotonic() - started
            messages = _rows(
                db,
                "SELECT id, status, profile_id, step_id FROM messages WHERE automation_id = :a",
                a=automation_id,
            )
            received = Counter(str(m.message[MESSAGE_ID_HEADER]) for m in relay.messages)
            _check(report, messages, received)
            # The operator's step: retry by hand what the relay never got.
            report.retried = sorted(
                str(m[0]) for m in messages if m[1] == "unknown" and str(m[0]) not in received
            )
            _retry_by_hand(server, db, report.retried, worker, deadline)
            after = Counter(str(m.message[MESSAGE_ID_HEADER]) for m in relay.messages)
            expected_ids = {str(m[0]) for m in messages}
            report.missing_after_retry = sorted(expected_ids - set(after))
            report.wrong_after_retry = sorted(
                i for i, n in after.items() if i not in expected_ids or n != 1
            )
            worker.stop()
    finally:
        server.close()
    try:
        report.runs = dict(
            Counter(
                str(r[0])
                for r in _rows(
                    db,
                    "SELECT status FROM automation_runs WHERE automation_id = :a",
                    a=automation_id,
                )
            )
        )
    finally:
        db.dispose()
        database.close()
    return report


def _check(report: Report, messages: list[Any], received: Counter[str]) -> None:
    """The ledger against the relay, before anyone intervenes."""
    report.statuses = dict(Counter(str(m[1]) for m in messages))
    report.received = sum(received.values())
    per_profile: dict[str, list[str]] = {}
    for message in messages:
        per_profile.setdefault(str(message[2]), []).append(str(message[3]))
    report.wrong_ledger = sorted(
        p for p, steps in per_profile.items() if sorted(steps) != list(STEPS)
    )
    if len(per_profile) != report.profiles:
        report.wrong_ledger.append(
            f"{report.profiles - len(per_profile)} profiles without messages"
        )
    report.missing = sorted(
        str(m[0]) for m in messages if m[1] == "sent" and str(m[0]) not in received
    )
    report.lost = sorted(
        str(m[0]) for m in messages if m[1] != "unknown" and str(m[0]) not in received
    )
    report.unknown_received = sum(
        1 for m in messages if m[1] == "unknown" and str(m[0]) in received
    )
    report.doubled = sorted(i for i, n in received.items() if n > 1)


def _retry_by_hand(
    server: GFServer, db: Database, ids: list[str], worker: Any, deadline: float
) -> None:
    """``POST /v1/messages/{id}/retry`` for each of ``ids`` (the workspace key), then wait
    until the worker has sent them all."""
    if not ids:
        return
    api = server.client()
    for message_id in ids:
        answer = api.post(f"/v1/messages/{message_id}/retry", json={"note": "not at the relay"})
        if answer.status_code != 200:
            raise RuntimeError(f"retrying {message_id}: {answer.status_code} {answer.text}")
    while True:
        with db.engine.connect() as conn:
            left = conn.execute(_NOT_SENT, {"ids": ids}).scalar_one()
        if left == 0:
            return
        if time.monotonic() > deadline or not worker.alive:
            raise RuntimeError(f"{left} retried messages not sent\n" + server.logs()[-5000:])
        time.sleep(0.1)
