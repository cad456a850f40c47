"""The delivery crash test, long version: N transactional messages queued, the ``getfluxly
worker`` process killed with SIGKILL at random moments K times while it sends to a relay that
records everything (an aiosmtpd sink, so duplicates can be counted by the
``X-GetFluxly-Message-Id`` header), restarted each time; on SQLite and PostgreSQL.

Usage (from the repository root)::

    .venv/bin/python bench/delivery_crash.py                 # N=2,000, K=6, both databases
    .venv/bin/python bench/delivery_crash.py --postgres -k 10 --seed 7

The run lives in ``flux_testkit.delivery_crash`` (the suite runs it with N=300, K=3). It
passes when every message is ``sent`` or ``unknown``, no ``sent`` message is missing at the
relay, and no message reached the relay twice unless recorded ``unknown``; how many are
``unknown`` (the messages in flight at each kill) is printed. stdout: one line per database
and one JSON line; exit status 0 when both passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "testkit"))

from flux_testkit import delivery_crash  # noqa: E402
from flux_testkit.gfserver import Backend, Harness  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite only")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    parser.add_argument("-n", "--messages", type=int, default=2_000, help="messages (2,000)")
    parser.add_argument("-k", "--kills", type=int, default=6, help="SIGKILLs (6)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments")
    args = parser.parse_args(argv)
    chosen = [b for b, on in (("sqlite", args.sqlite), ("postgres", args.postgres)) if on]
    backends: list[Backend] = chosen or ["sqlite", "postgres"]  # type: ignore[assignment]
    reports = []
    with tempfile.TemporaryDirectory(prefix="gf-crash-") as workdir:
        harness = Harness(Path(workdir) / "harness")
        try:
            for backend in backends:
                print(f"{backend}: {args.messages:,} messages, {args.kills} kills ...",
                      file=sys.stderr, flush=True)  # fmt: skip
                report = delivery_crash.run(
                    harness, backend, Path(workdir) / backend, messages=args.messages,
                    kills=args.kills, seed=args.seed, timeout=600.0,
                )  # fmt: skip
                reports.append(report.summary())
                print(
                    f"{backend}: {report.statuses.get('sent', 0):,} sent, {report.unknown:,} "
                    f"unknown, {len(report.missing)} missing, {len(report.duplicates)} received "
                    f"twice ({len(report.doubled_not_unknown)} of them not unknown), "
                    f"{report.seconds:.1f} s: {'PASS' if report.ok else 'FAIL'}"
                )
        finally:
            harness.close()
    ok = all(r["ok"] for r in reports)
    print(json.dumps({"benchmark": "delivery_crash", "ok": ok, "runs": reports}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
