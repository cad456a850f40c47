"""GetFluxly job queue: claiming jobs in batches next to claiming them one at a time.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/queue_claim.py              # SQLite and PostgreSQL, N=20,000
    .venv/bin/python bench/queue_claim.py --postgres   # one database only (or --sqlite)
    .venv/bin/python bench/queue_claim.py --quick      # N=2,000, one round: a smoke run

For each database, on a fresh database migrated to head, each round runs two phases on the
same ``jobs`` table, emptied and filled with the same N due jobs before each:

- ``one``: C claimer threads each call ``storage.jobs.claim(..., n=1)`` in a transaction of
  its own until the queue is empty: what a worker did before batch claiming (one claim per
  job, per thread).
- ``batch``: the same threads call ``claim(..., n=B)``: what ``queue/worker.py`` does now (it
  claims as many jobs as it has idle threads, up to B).

Both go through the server's own ``Database`` (same SQLite pragmas and ``BEGIN IMMEDIATE``,
same PostgreSQL pool) and its own ``claim`` (ordered by priority then due time, ``FOR
UPDATE SKIP LOCKED`` on PostgreSQL). The phases alternate which goes first from round to
round. A phase counts only when every job was claimed exactly once (the claimed ids are N
distinct ids, and the table holds N running jobs); otherwise it is FAILED with the reason.
Only claiming is timed: running and finishing jobs cost the same either way.

stdout is a table, the ratio per database, and one final JSON line with every number;
progress goes to stderr. Exit status 0 when every count was exact, 1 otherwise, 2 on bad
usage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

# flux_testkit.pgadmin: the test kit is not installed, the tests find it on their path too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testkit"))

import psycopg
import sqlalchemy
from psycopg import sql as pgsql
from sqlalchemy import delete, func, select, text

from flux_testkit import pgadmin
from getfluxly_server.storage import jobs
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Job, JobStatus
from getfluxly_server.storage.schema import upgrade

Backend = Literal["sqlite", "postgres"]
Phase = Literal["one", "batch"]

DEFAULT_JOBS, QUICK_JOBS = 20_000, 2_000
DEFAULT_BATCH, DEFAULT_CLAIMERS, DEFAULT_ROUNDS = 100, 4, 3
KIND = "bench.job"
LEASE = timedelta(minutes=10)

# The tests' convention (scripts/setup-postgres, testkit/flux_testkit/gfserver.py).
POSTGRES_URL_ENV = "GETFLUXLY_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://getfluxly:getfluxly@127.0.0.1:5432/postgres"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class PhaseResult:
    phase: Phase
    claim_size: int
    jobs: int
    seconds: float | None = None
    claims: int = 0  # transactions that claimed something (plus each claimer's final empty one)
    claimed: int = 0
    distinct: int = 0
    running_in_table: int = 0
    error: str | None = None

    @property
    def exact(self) -> bool:
        return self.error is None and self.claimed == self.distinct == self.jobs

    @property
    def jobs_per_second(self) -> float | None:
        if not self.exact or not self.seconds:
            return None
        return self.jobs / self.seconds


@dataclass
class Round:
    backend: Backend
    index: int
    phases: dict[str, PhaseResult] = field(default_factory=dict)


# Databases.


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


@contextlib.contextmanager
def fresh_database(backend: Backend, workdir: Path) -> Iterator[Database]:
    """A new database migrated to head, opened as the server opens it; removed afterwards."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{workdir / f'queue-{secrets.token_hex(3)}.db'}")
        try:
            upgrade(db)
            yield db
        finally:
            db.dispose()
        return
    admin_url = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
    name = f"gf_bench_{secrets.token_hex(6)}"
    postgres_admin(admin_url, pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    db = Database("postgresql+psycopg://" + url.split("://", 1)[1])
    try:
        upgrade(db)
        yield db
    finally:
        db.dispose()
        pgadmin.drop_database(admin_url, name)


def fill(db: Database, count: int) -> None:
    """Empty the table and queue ``count`` due jobs (then refresh PostgreSQL's statistics, so
    both phases are planned on the same, current picture of the table)."""
    with db.transaction() as session:
        session.execute(delete(Job))
        jobs.enqueue_many(session, KIND, ({"n": n} for n in range(count)))
    if not db.is_sqlite:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))


# The phases.


def run_phase(db: Database, phase: Phase, count: int, batch: int, claimers: int) -> PhaseResult:
    size = 1 if phase == "one" else batch
    result = PhaseResult(phase, size, count)
    fill(db, count)
    taken: list[list[int]] = [[] for _ in range(claimers)]
    claims = [0] * claimers
    errors: list[str] = []
    ready = threading.Barrier(claimers + 1)

    def claimer(slot: int) -> None:
        name = f"bench/{slot}"
        ready.wait()
        try:
            while True:
                with db.transaction() as session:
                    got = jobs.claim(session, name, {KIND: size}, LEASE, size)
                claims[slot] += 1
                if not got:
                    return
                taken[slot].extend(job.id for job in got)
        except Exception as exc:  # reported as the phase's failure, never a traceback
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    every = [job_id for ids in taken for job_id in ids]
    result.claims, result.claimed, result.distinct = sum(claims), len(every), len(set(every))
    with db.read() as session:
        result.running_in_table = int(
            session.scalar(
                select(func.count()).select_from(Job).where(Job.status == JobStatus.RUNNING)
            )
            or 0
        )
    if errors:
        result.error = errors[0]
    elif result.distinct != result.claimed:
        result.error = f"{result.claimed - result.distinct} jobs were claimed twice"
    elif result.claimed != count or result.running_in_table != count:
        result.error = (
            f"claimed {result.claimed} of {count} jobs; the table holds "
            f"{result.running_in_table} running"
        )
    return result


def run_backend(
    backend: Backend, args: argparse.Namespace, workdir: Path
) -> tuple[list[Round], dict[str, Any]]:
    rounds: list[Round] = []
    with fresh_database(backend, workdir) as db:
        for index in range(args.rounds):
            round_ = Round(backend, index)
            # Alternate the order, so a noisy stretch of the machine does not always fall on
            # the same phase.
            order: tuple[Phase, Phase] = ("one", "batch") if index % 2 == 0 else ("batch", "one")
            for phase in order:
                note(f"{backend} round {index + 1}/{args.rounds}: {phase} ...")
                round_.phases[phase] = run_phase(db, phase, args.jobs, args.batch, args.claimers)
            rounds.append(round_)
    return rounds, summarize(rounds)


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) and present else None


def summarize(rounds: list[Round]) -> dict[str, Any]:
    one = median_of([r.phases["one"].jobs_per_second for r in rounds])
    batch = median_of([r.phases["batch"].jobs_per_second for r in rounds])
    return {
        "one_jobs_per_second": one,
        "batch_jobs_per_second": batch,
        "batch_over_one": batch / one if one and batch else None,
        "rounds": [
            {"index": r.index, "phases": {k: phase_json(p) for k, p in r.phases.items()}}
            for r in rounds
        ],
    }


def phase_json(result: PhaseResult) -> dict[str, Any]:
    return {**asdict(result), "exact": result.exact, "jobs_per_second": result.jobs_per_second}


# Output.


def fmt(value: float | None, digits: int = 0) -> str:
    return "FAILED" if value is None else f"{value:,.{digits}f}"


def print_table(rounds: list[Round], summaries: dict[str, dict[str, Any]]) -> None:
    header = ("database", "round", "phase", "jobs/claim", "claims", "seconds", "jobs/s")
    rows = [header]
    for r in rounds:
        for p in r.phases.values():
            rows.append(
                (
                    r.backend, str(r.index + 1), p.phase, str(p.claim_size), f"{p.claims:,}",
                    fmt(p.seconds, 2), fmt(p.jobs_per_second) if p.exact else f"FAILED: {p.error}",
                )
            )  # fmt: skip
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print()
    for backend, summary in summaries.items():
        ratio = summary["batch_over_one"]
        print(
            f"{backend}: batch {fmt(summary['batch_jobs_per_second'])} jobs/s, one at a time "
            f"{fmt(summary['one_jobs_per_second'])} jobs/s (medians): "
            f"batch / one = {'n/a' if ratio is None else f'{ratio:.1f}x'}"
        )


def versions() -> dict[str, str | None]:
    import sqlite3

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "postgresql": None,
    }
    with contextlib.suppress(Exception):
        admin = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
        with psycopg.connect(admin, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found["postgresql"] = str(row[0]) if row else None
    return found


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Claiming jobs in batches next to one at a time (GetFluxly's job queue)."
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite only")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    parser.add_argument("-n", "--jobs", type=positive, help=f"jobs per phase ({DEFAULT_JOBS:,})")
    parser.add_argument(
        "-b", "--batch", type=positive, default=DEFAULT_BATCH,
        help=f"jobs per claim in the batch phase ({DEFAULT_BATCH})",
    )  # fmt: skip
    parser.add_argument(
        "-c", "--claimers", type=positive, default=DEFAULT_CLAIMERS,
        help=f"claiming threads in each phase ({DEFAULT_CLAIMERS})",
    )  # fmt: skip
    parser.add_argument("-r", "--rounds", type=positive, help=f"rounds ({DEFAULT_ROUNDS})")
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_JOBS:,}, one round")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (QUICK_JOBS if args.quick else DEFAULT_JOBS)
    args.rounds = args.rounds or (1 if args.quick else DEFAULT_ROUNDS)
    both = not args.sqlite and not args.postgres
    args.backends = [b for b, on in (("sqlite", args.sqlite), ("postgres", args.postgres)) if on]
    if both:
        args.backends = ["sqlite", "postgres"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    every_round: list[Round] = []
    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gf-queue-bench-") as workdir:
        for backend in args.backends:
            rounds, summaries[backend] = run_backend(backend, args, Path(workdir))
            every_round += rounds
    print_table(every_round, summaries)
    exact = all(p.exact for r in every_round for p in r.phases.values())
    report = {
        "benchmark": "queue_claim",
        "jobs": args.jobs,
        "batch": args.batch,
        "claimers": args.claimers,
        "rounds": args.rounds,
        "counts_exact": exact,
        "databases": summaries,
        "versions": versions(),
    }
    print(json_line(report))
    return 0 if exact else 1


def json_line(report: dict[str, Any]) -> str:
    import json

    return json.dumps(report, separators=(",", ":"))


if __name__ == "__main__":
    sys.exit(main())
