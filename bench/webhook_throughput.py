"""GetFluxly's inbound feedback webhooks: signed events per second accepted and processed,
next to the raw insert of the same rows in the same run.

Usage (from the repository root)::

    .venv/bin/python bench/webhook_throughput.py              # SQLite and PostgreSQL, N=10,000
    .venv/bin/python bench/webhook_throughput.py --postgres   # one database only (or --sqlite)
    .venv/bin/python bench/webhook_throughput.py --quick      # N=1,000: a smoke run

For each database, on a fresh database migrated to head, with N messages ``sent`` (each with
a relay message id, all of one profile; not timed), two phases:

- ``raw``: the rows the webhooks phase ends up writing, with the same values, written with
  plain SQLAlchemy Core ``executemany`` in one transaction per post of B events: the post's
  inbox row, a ``message_events`` row per event, the status of each message an event moves
  and its history row, an ``email_*`` profile event each, and a suppression per hard
  bounce. The storage's own speed for these rows, with their indexes: what no
  implementation of the pipeline could beat.
- ``webhooks``: the same N events as SendGrid sends them (its Event Webhook: JSON arrays of
  B events, signed with ECDSA P-256 over timestamp + body with a key made here), posted to
  ``POST /webhooks/sendgrid/{project_id}`` of the real app (``create_app``, served by uvicorn
  on loopback in this process) one post after another; every post verified, stored in the
  inbox and answered; then the inbox job's own function (``domain.feedback.inbox.process``)
  parses every post and records its events (joins by relay id, ``message_events``, status
  moves with history, suppressions, ``email_*`` profile events). The clock runs from the
  first post to the last event recorded.

The mix per 100 events: 60 delivered, 20 opened, 10 clicked, 5 deferred, 3 soft bounces,
2 hard bounces. A phase counts only when N rows were written (and for ``webhooks``, every
post answered 200). stdout: a line per database with both rates and the ratio (target
webhooks >= 0.5 x raw), then one JSON line; exit 0 when every count was exact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "testkit"))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402
from sqlalchemy import bindparam, delete, func, insert, select, update  # noqa: E402

from flux_testkit import ledger, pgadmin  # noqa: E402
from flux_testkit.webhook_signers import AppServer, SendGridKey  # noqa: E402
from getfluxly_server.app import create_app  # noqa: E402
from getfluxly_server.crypto import Keyring  # noqa: E402
from getfluxly_server.domain import tenancy  # noqa: E402
from getfluxly_server.domain.feedback import inbox  # noqa: E402
from getfluxly_server.domain.feedback.config import config_of  # noqa: E402
from getfluxly_server.settings import Settings  # noqa: E402
from getfluxly_server.storage.db import Database  # noqa: E402
from getfluxly_server.storage.models import (  # noqa: E402
    Event,
    Message,
    MessageEvent,
    MessageHistory,
    Suppression,
    WebhookInbox,
)
from getfluxly_server.storage.schema import upgrade  # noqa: E402

Backend = Literal["sqlite", "postgres"]
POSTGRES_URL_ENV = "GETFLUXLY_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://getfluxly:getfluxly@127.0.0.1:5432/postgres"
TARGET = 0.5
#: (SendGrid event, bounce type) per 100 events.
MIX = (
    [("delivered", None)] * 60 + [("open", None)] * 20 + [("click", None)] * 10
    + [("deferred", None)] * 5 + [("bounce", "blocked")] * 3 + [("bounce", "bounce")] * 2
)  # fmt: skip
_KIND = {"delivered": "delivered", "open": "opened", "click": "clicked", "deferred": "deferred",
         "bounce": "bounced"}  # fmt: skip


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def postgres_admin(admin_url: str, statement: pgsql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def fresh_database(backend: Backend, workdir: Path) -> Iterator[tuple[Database, str]]:
    """A new database migrated to head (and its URL); removed afterwards."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'hooks-{secrets.token_hex(3)}.db'}"
        db = Database(url)
        try:
            upgrade(db)
            yield db, url
        finally:
            db.dispose()
        return
    admin_url = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
    name = f"gf_bench_{secrets.token_hex(6)}"
    postgres_admin(admin_url, pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = (
        "postgresql+psycopg://"
        + urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}")).split("://", 1)[1]
    )
    db = Database(url)
    try:
        upgrade(db)
        yield db, url
    finally:
        db.dispose()
        pgadmin.drop_database(admin_url, name)


def install(db: Database, n: int) -> tuple[str, str, list[str]]:
    """A workspace, its key, a project with N sent messages of one profile; (key, project,
    message ids)."""
    with db.transaction() as session:
        workspace, key = tenancy.create_workspace(session, "Bench")
        project = tenancy.create_project(session, workspace.id, "Webhooks").project.id
    profile = ledger.add_profile(db, project, {"email": "bench@example.com"})
    provider = ledger.add_provider(
        db, Keyring.parse(Keyring.generate()), project, ledger.smtp_body("127.0.0.1", 25)
    )
    ids = ledger.queue_messages(
        db, project, provider, [f"user{i}@example.com" for i in range(n)], profile_id=profile
    )
    with db.transaction() as session:
        session.execute(
            update(Message)
            .where(Message.project_id == project)
            .values(status="sent", provider_message_id=Message.id, due_at=None)
        )
    return key.plaintext, project, ids


def sendgrid_events(ids: Sequence[str], start: int) -> list[dict[str, Any]]:
    events = []
    for i, message_id in enumerate(ids):
        kind, bounce = MIX[i % len(MIX)]
        event: dict[str, Any] = {
            "email": f"user{i}@example.com", "timestamp": start + i // 1000, "event": kind,
            "sg_event_id": f"ev{i:08d}", "sg_message_id": f"{message_id}.filter0001.1",
            "getfluxly_message_id": message_id, "category": ["bench"],
        }  # fmt: skip
        if kind == "bounce":
            event.update(type=bounce, reason="550 5.1.1 user unknown", status="5.1.1")
        if kind == "click":
            event["url"] = "https://example.com/offer"
        if kind == "deferred":
            event.update(response="421 try again later", attempt="1")
        events.append(event)
    return events


def rows_of(project: str, events: Sequence[dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """The message_events rows the webhooks phase writes for ``events``."""
    recorded = datetime.now(UTC)
    return [
        {
            "project_id": project, "message_id": e["getfluxly_message_id"], "profile_id": profile,
            "email": e["email"], "type": _KIND[e["event"]],
            "bounce_type": ("soft" if e.get("type") == "blocked" else "hard")
            if e["event"] == "bounce" else None,
            "machine": False, "url": e.get("url"),
            "reason": e.get("reason") or e.get("response"), "source": "sendgrid",
            "provider_event_id": e["sg_event_id"],
            "occurred_at": datetime.fromtimestamp(e["timestamp"], UTC), "recorded_at": recorded,
        }
        for e in events
    ]  # fmt: skip


def count_events(db: Database, project: str) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(MessageEvent)
                .where(MessageEvent.project_id == project)
            )
            or 0
        )


def run_raw(
    db: Database, project: str, events: list[dict[str, Any]], profile: str, batch: int
) -> float:
    """The same writes as the webhooks phase makes, as plain SQLAlchemy Core ``executemany``
    in one transaction per post: the post's inbox row, its ``message_events`` rows, the
    moved messages' status and history rows, the profile events, the suppressions."""
    rows = rows_of(project, events, profile)
    moment = datetime.now(UTC)
    started = time.perf_counter()
    for offset in range(0, len(rows), batch):
        chunk, posted = rows[offset : offset + batch], events[offset : offset + batch]
        moved = [r for r in chunk if r["type"] != "deferred"]
        with db.transaction() as session:
            session.execute(insert(WebhookInbox), [{
                "project_id": project, "relay": "sendgrid", "delivery_id": f"raw-{offset}",
                "content_type": "application/json", "payload": json.dumps(posted),
                "received_at": moment, "events": len(chunk), "processed_at": moment,
            }])  # fmt: skip
            session.execute(insert(MessageEvent), chunk)
            session.execute(
                update(Message.__table__)
                .where(Message.__table__.c.id == bindparam("b_id"))
                .values(status=bindparam("b_status"), updated_at=moment),
                [{"b_id": r["message_id"], "b_status": r["type"]} for r in moved],
            )
            session.execute(insert(MessageHistory), [
                {"message_id": r["message_id"], "status": r["type"], "at": r["occurred_at"],
                 "detail": f"sendgrid: {r['reason'] or ''}"} for r in moved
            ])  # fmt: skip
            session.execute(insert(Event), [
                {"project_id": project, "message_id": f"raw:{r['provider_event_id']}",
                 "type": "track", "name": f"email_{r['type']}", "user_id": profile,
                 "properties": {"message_id": r["message_id"], "source": "sendgrid"},
                 "traits": {}, "context": {}, "timestamp": r["occurred_at"],
                 "received_at": moment} for r in moved
            ])  # fmt: skip
            hard = [r for r in chunk if r["bounce_type"] == "hard"]
            if hard:
                session.execute(insert(Suppression), [
                    {"project_id": project, "email": r["email"], "reason": "hard_bounce",
                     "message_id": r["message_id"], "created_at": moment} for r in hard
                ])  # fmt: skip
    elapsed = time.perf_counter() - started
    written = count_events(db, project)
    with db.transaction() as session:  # undone, for the webhooks phase
        for model in (MessageEvent, WebhookInbox, Event, Suppression):
            session.execute(delete(model).where(model.project_id == project))
        session.execute(delete(MessageHistory).where(MessageHistory.status != "queued"))
        session.execute(update(Message).where(Message.project_id == project).values(status="sent"))
    if written != len(rows):
        raise RuntimeError(f"raw: {written} rows written, not {len(rows)}")
    return elapsed


def run_webhooks(
    db: Database, url: str, key: str, project: str, events: list[dict[str, Any]], batch: int
) -> tuple[float, int]:
    settings = Settings(database_url=url, keyring=Keyring.parse(Keyring.generate()),
                        max_body_bytes=8 * 1024 * 1024)  # fmt: skip
    config = config_of(settings)
    signer = SendGridKey()
    app = create_app(settings, db)
    with AppServer(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        made = client.post(f"/v1/projects/{project}/webhook-secrets",
                           headers={"Authorization": f"Bearer {key}"},
                           json={"relay": "sendgrid", "public_key": signer.public_key})  # fmt: skip
        if made.status_code != 201:
            raise RuntimeError(f"webhook secret: {made.status_code} {made.text}")
        posts = [
            json.dumps(events[offset : offset + batch]).encode()
            for offset in range(0, len(events), batch)
        ]
        started = time.perf_counter()
        accepted = 0
        for body in posts:
            headers = {"Content-Type": "application/json",
                       **signer.headers(int(time.time()), body)}  # fmt: skip
            answer = client.post(f"/webhooks/sendgrid/{project}", content=body, headers=headers)
            accepted += answer.status_code == 200 and answer.json()["duplicate"] is False
        inbox.process(db, project, config.relays, rules=config.rules, sns=config.sns)
        elapsed = time.perf_counter() - started
    if accepted != len(posts):
        raise RuntimeError(f"webhooks: {accepted} of {len(posts)} posts accepted")
    return elapsed, count_events(db, project)


def run_backend(backend: Backend, n: int, batch: int, workdir: Path) -> dict[str, Any]:
    with fresh_database(backend, workdir) as (db, url):
        note(f"{backend}: installing {n} sent messages")
        key, project, ids = install(db, n)
        with db.read() as session:
            profile = session.scalar(select(Message.profile_id).where(Message.id == ids[0]))
        events = sendgrid_events(ids, int(time.time()) - 60)
        note(f"{backend}: raw insert of {n} rows")
        raw = run_raw(db, project, events, str(profile), batch)
        note(f"{backend}: {n} events in {len(range(0, n, batch))} signed posts")
        hooked, written = run_webhooks(db, url, key, project, events, batch)
        with db.read() as session:
            moved = session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.project_id == project, Message.status != "sent")
            )
    exact = written == n
    return {
        "raw_seconds": raw, "webhooks_seconds": hooked, "events_recorded": written,
        "messages_moved": moved, "counts_exact": exact,
        "raw_per_second": n / raw, "webhooks_per_second": n / hooked,
        "webhooks_over_raw": raw / hooked,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", "--events", type=int, default=None, help="events (10,000)")
    parser.add_argument("-b", "--batch", type=int, default=100, help="events a post (100)")
    parser.add_argument("--quick", action="store_true", help="N=1,000: a smoke run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sqlite", action="store_true", help="SQLite only")
    which.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 1_000 if args.quick else 10_000
    if args.events < 1 or args.batch < 1:
        parser.error("--events and --batch must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends: list[Backend] = (
        ["sqlite"] if args.sqlite else ["postgres"] if args.postgres else ["sqlite", "postgres"]
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gf-bench-hooks-") as workdir:
        for backend in backends:
            results[backend] = run_backend(backend, args.events, args.batch, Path(workdir))
    exact = all(r["counts_exact"] for r in results.values())
    for backend, r in results.items():
        met = "met" if r["webhooks_over_raw"] >= TARGET else "MISSED"
        print(
            f"{backend}: webhooks {r['webhooks_per_second']:,.0f} events/s, raw insert "
            f"{r['raw_per_second']:,.0f} rows/s, ratio {r['webhooks_over_raw']:.2f}x "
            f"(target >= {TARGET}x: {met})"
        )
    print(json.dumps({
        "benchmark": "webhook_throughput", "events": args.events, "batch": args.batch,
        "target": TARGET, "counts_exact": exact, "databases": results,
        "python": platform.python_version(), "at": (datetime.now(UTC) - timedelta()).isoformat(),
    }))  # fmt: skip
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
