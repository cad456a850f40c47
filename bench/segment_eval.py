"""GetFluxly segments: keeping membership current incrementally, next to recomputing it.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/segment_eval.py              # SQLite and PostgreSQL, 20,000 profiles
    .venv/bin/python bench/segment_eval.py --postgres   # one database only (or --sqlite)
    .venv/bin/python bench/segment_eval.py --quick      # 2,000 profiles, 2 rounds: a smoke run

For each database, on a fresh database migrated to head: P profiles (traits ``plan`` and
``email``), each with a few ``login`` events over the last ten days and some a ``purchase``,
and S segments of the usual shapes (an event count in a window, a trait, an absence, a
combination, a segment the login events cannot change). Each profile was also mailed once
(a ``sent`` message); some opened it, fewer clicked, over the last ten days; three more
segments read that mail activity (clicked within 7 days, opened ever, subscribed and never
clicked). Then, per round, a chunk of C new ``login`` events of C profiles arrives, and the
segments are brought up to date twice:

- ``incremental``: the worker's event consumer (``domain.segments.membership.SegmentConsumer``)
  given the chunk, as ingest gives it: only the C profiles, only the segments logins can change;
- ``full``: every segment recomputed from scratch (``membership.recompute``: one set-based
  query per segment, writing the difference), what a rescan per chunk would cost.

And the same for mail activity (``email`` in the report): C clicks on C profiles' messages
recorded through ``domain.feedback.record.record`` (as the tracking redirect does), their
``email_clicked`` profile events stitched, then the consumer given that chunk (only the
segments reading clicks) against the full recompute.

The incremental update runs first and commits; the full recompute that follows must then
find nothing to change (``consistent``): both agree on every member. Times are per chunk;
the ratio (full / incremental) is what to read, since the machine is shared and noisy.

stdout is a table and one final JSON line with every number; progress goes to stderr. Exit
status 0 when every round was consistent, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from queue_claim import Backend, fresh_database, note  # the same fresh databases
from sqlalchemy import insert, select

from getfluxly_server.domain import identity
from getfluxly_server.domain.clock import ManualClock
from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.domain.identity import lock_project
from getfluxly_server.domain.segments import membership
from getfluxly_server.domain.tenancy import create_project
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Event,
    Message,
    MessageEvent,
    MessageEventType,
    Profile,
    Segment,
    Workspace,
    new_id,
)

SEGMENTS: list[dict[str, Any]] = [
    {"event": "login", "count": {"gte": 3}, "within": "P7D"},
    {"event": "login", "count": {"lte": 1}, "within": "P3D"},
    {"trait": "plan", "op": "eq", "value": "pro"},
    {"not": {"event": "purchase"}},
    {"all": [{"trait": "plan", "op": "in", "value": ["pro", "team"]},
             {"event": "login", "within": "P1D"}]},
    {"any": [{"event": "purchase", "count": {"gte": 2}},
             {"trait": "vip", "op": "eq", "value": True}]},
]  # fmt: skip
EMAIL_SEGMENTS: list[dict[str, Any]] = [
    {"email": "clicked", "within": "P7D"},
    {"email": "opened"},
    {"all": [{"subscribed": True}, {"not": {"email": "clicked"}}]},
]
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def populate(
    db: Database, profiles: int, rng: random.Random
) -> tuple[str, list[str], dict[str, str]]:
    with db.transaction() as session:
        workspace = Workspace(id=new_id("ws"), name="bench")
        session.add(workspace)
        session.flush()
        project_id = create_project(session, workspace.id, "bench").project.id
    ids = [new_id("prf") for _ in range(profiles)]
    plans = ("free", "pro", "team")
    rows = [
        {"id": pid, "project_id": project_id, "created_at": NOW, "updated_at": NOW,
         "traits": {"plan": rng.choice(plans), "email": f"u{i}@example.com", "vip": i % 50 == 0}}
        for i, pid in enumerate(ids)
    ]  # fmt: skip
    events = []
    for pid in ids:
        for _ in range(rng.randint(0, 5)):
            events.append(
                _event(project_id, pid, "login", NOW - timedelta(hours=rng.randint(1, 240)))
            )
        if rng.random() < 0.3:
            events.append(
                _event(project_id, pid, "purchase", NOW - timedelta(days=rng.randint(1, 30)))
            )
    mailed = {pid: new_id("msg") for pid in ids}
    messages = [
        {"id": mid, "project_id": project_id, "status": "sent", "to_email": f"u{i}@example.com",
         "profile_id": pid, "transactional": False, "origin": "broadcast", "due_at": None,
         "created_at": NOW - timedelta(days=10), "updated_at": NOW - timedelta(days=10),
         "sent_at": NOW - timedelta(days=10)}
        for i, (pid, mid) in enumerate(mailed.items())
    ]  # fmt: skip
    activity = []
    for i, (pid, mid) in enumerate(mailed.items()):
        for kind, share in (("opened", 0.4), ("clicked", 0.1)):
            if rng.random() < share:
                at = NOW - timedelta(hours=rng.randint(1, 240))
                activity.append(
                    {"project_id": project_id, "message_id": mid, "profile_id": pid,
                     "email": f"u{i}@example.com", "type": kind, "machine": False,
                     "source": "tracking", "occurred_at": at, "recorded_at": at}
                )  # fmt: skip
    with db.transaction() as session:
        for start in range(0, len(rows), 2_000):
            session.execute(insert(Profile), rows[start : start + 2_000])
        for start in range(0, len(events), 5_000):
            session.execute(insert(Event), events[start : start + 5_000])
        for start in range(0, len(messages), 2_000):
            session.execute(insert(Message), messages[start : start + 2_000])
        for start in range(0, len(activity), 5_000):
            session.execute(insert(MessageEvent), activity[start : start + 5_000])
    return project_id, ids, mailed


def _event(project_id: str, profile_id: str, name: str, at: datetime) -> dict[str, Any]:
    return {
        "project_id": project_id, "message_id": new_id("m"), "type": "track", "name": name,
        "properties": {}, "traits": {}, "context": {}, "timestamp": at, "received_at": at,
        "profile_id": profile_id, "processed_at": at,
    }  # fmt: skip


def settle(db: Database, project_id: str, cache: membership.RuleCache, clock: ManualClock) -> None:
    with db.transaction() as session:
        lock_project(session, project_id)
        for saved in cache.live(session, project_id):
            membership.recompute(session, saved, clock.now())


def full_recompute(
    db: Database, project_id: str, cache: membership.RuleCache, clock: ManualClock
) -> tuple[float, int]:
    """Every segment recomputed from scratch: (seconds, entries and exits written)."""
    started = time.perf_counter()
    changed = 0
    with db.transaction() as session:
        lock_project(session, project_id)
        for saved in cache.live(session, project_id):
            entered, left = membership.recompute(session, saved, clock.now())
            changed += entered + left
    return time.perf_counter() - started, changed


def email_round(
    db: Database,
    project_id: str,
    chunk: list[str],
    mailed: dict[str, str],
    consumer: membership.SegmentConsumer,
    clock: ManualClock,
) -> float:
    """C clicks recorded as feedback, their profile events stitched; the consumer's time
    for that chunk."""
    clicks = [
        FeedbackEvent(type=MessageEventType.CLICKED, email="", source="tracking",
                      occurred_at=clock.now(), message_id=mailed[pid], url="https://x.test/")
        for pid in chunk
    ]  # fmt: skip
    with db.transaction() as session:
        written = record(session, project_id, clicks)
        keys = [f"message_event:{row.id}" for row in written]
    identity.process_project(db, project_id)  # stitched (no consumer: timed below)
    with db.transaction() as session:
        lock_project(session, project_id)
        events = session.scalars(select(Event).where(Event.message_id.in_(keys))).all()
        started = time.perf_counter()
        consumer(session, project_id, events)
        return time.perf_counter() - started


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    incremental = statistics.median(r["incremental_s"] for r in rounds)
    full = statistics.median(r["full_s"] for r in rounds)
    return {
        "rounds": rounds,
        "incremental_ms": round(incremental * 1e3, 2),
        "full_ms": round(full * 1e3, 2),
        "ratio_full_over_incremental": round(full / incremental, 2) if incremental else None,
        "consistent": all(r["consistent"] for r in rounds),
    }


def run_backend(backend: Backend, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(7)  # a workload, not secrets
    clock = ManualClock(NOW)
    with fresh_database(backend, workdir) as db:
        note(f"[{backend}] {args.profiles} profiles ...")
        project_id, ids, mailed = populate(db, args.profiles, rng)
        cache = membership.RuleCache()
        with db.transaction() as session:
            made = [Segment(id=new_id("seg"), project_id=project_id, name=f"s{i}", rule=rule)
                    for i, rule in enumerate(SEGMENTS + EMAIL_SEGMENTS)]  # fmt: skip
            session.add_all(made)
        for segment in made:
            membership.compute(db, clock, segment.id, cache)
        consumer = membership.SegmentConsumer(clock, cache)
        rounds = []
        email_rounds = []
        for index in range(args.rounds):
            clock.advance(timedelta(minutes=1))
            settle(db, project_id, cache, clock)  # what time alone changed: the periodic pass's
            chunk = rng.sample(ids, args.chunk)
            with db.transaction() as session:
                lock_project(session, project_id)
                rows = [_event(project_id, pid, "login", clock.now()) for pid in chunk]
                session.execute(insert(Event), rows)
                names = {r["message_id"] for r in rows}
                events = session.scalars(select(Event).where(Event.message_id.in_(names))).all()
                started = time.perf_counter()
                consumer(session, project_id, events)
                incremental = time.perf_counter() - started
            full, changed = full_recompute(db, project_id, cache, clock)
            rounds.append(
                {"incremental_s": incremental, "full_s": full, "consistent": changed == 0}
            )
            note(f"[{backend}] round {index + 1}: incremental {incremental * 1e3:.1f} ms, "
                 f"full {full * 1e3:.1f} ms, consistent={changed == 0}")  # fmt: skip
            clicked = email_round(db, project_id, rng.sample(ids, args.chunk), mailed,
                                  consumer, clock)  # fmt: skip
            full, changed = full_recompute(db, project_id, cache, clock)
            email_rounds.append(
                {"incremental_s": clicked, "full_s": full, "consistent": changed == 0}
            )
            note(f"[{backend}] round {index + 1} (clicks): incremental {clicked * 1e3:.1f} ms, "
                 f"full {full * 1e3:.1f} ms, consistent={changed == 0}")  # fmt: skip
    return {**summary(rounds), "email": summary(email_rounds)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sqlite", action="store_const", dest="backends", const=["sqlite"])
    which.add_argument("--postgres", action="store_const", dest="backends", const=["postgres"])
    parser.add_argument("--quick", action="store_true", help="2,000 profiles, 2 rounds")
    parser.add_argument("-p", "--profiles", type=int, default=None)
    parser.add_argument("-c", "--chunk", type=int, default=None, help="events per chunk")
    parser.add_argument("-r", "--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    args.backends = args.backends or ["sqlite", "postgres"]
    args.profiles = args.profiles or (2_000 if args.quick else 20_000)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.chunk = min(args.chunk or (100 if args.quick else 500), args.profiles)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gf-segment-bench-") as workdir:
        for backend in args.backends:
            results[backend] = run_backend(backend, args, Path(workdir))
    print(f"{'database':10} {'chunk of':10} {'incremental ms':>15} {'full ms':>10} "
          f"{'full/incr':>10} consistent")  # fmt: skip
    for backend, found in results.items():
        for what, row in (("logins", found), ("clicks", found["email"])):
            print(f"{backend:10} {what:10} {row['incremental_ms']:>15} {row['full_ms']:>10} "
                  f"{row['ratio_full_over_incremental']!s:>10} {row['consistent']}")  # fmt: skip
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average (1, 5, 15 min) at the end: {load[0]}, {load[1]}, {load[2]}")
    consistent = all(r["consistent"] and r["email"]["consistent"] for r in results.values())
    report = {
        "benchmark": "segment_eval", "profiles": args.profiles,
        "segments": len(SEGMENTS) + len(EMAIL_SEGMENTS),
        "chunk": args.chunk, "rounds": args.rounds, "consistent": consistent, "load": load,
        "databases": results,
    }  # fmt: skip
    print(json.dumps(report, separators=(",", ":")))
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
