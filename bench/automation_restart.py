"""The automations' restart test at the issue's size: 1,000 profiles at various steps of a
journey, the worker (and once the API) killed with SIGKILL, restarted; every journey
completes with exactly one ledger message per send step, none doubled at the testkit's
relay (see ``flux_testkit.automation_restart``; the suite runs it with 60).

Usage (from the repository root)::

    .venv/bin/python bench/automation_restart.py                 # SQLite and PostgreSQL
    .venv/bin/python bench/automation_restart.py --postgres -n 1000 --kills 5

stdout: one JSON line per database; exit status 0 when every database's report is ok.
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

from flux_testkit import automation_restart  # noqa: E402
from flux_testkit.gfserver import Harness  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sqlite", action="store_const", dest="backends", const=["sqlite"])
    which.add_argument("--postgres", action="store_const", dest="backends", const=["postgres"])
    parser.add_argument("-n", "--profiles", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as workdir:
        harness = Harness(Path(workdir) / "harness")
        try:
            for backend in args.backends or ["sqlite", "postgres"]:
                report = automation_restart.run(
                    harness, backend, Path(workdir) / backend, profiles=args.profiles,
                    kills=args.kills, timeout=args.timeout,
                )  # fmt: skip
                print(json.dumps(report.summary()), flush=True)
                ok = ok and report.ok
        finally:
            harness.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
