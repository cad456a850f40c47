"""A short run of the queue benchmark (``bench/queue_claim.py --quick``) per database.

Speed is not asserted (the machine is shared and noisy); that both phases claimed every job
exactly once, and that the report carries every rate and the ratio, is. PostgreSQL follows
the tests' convention (``GETFLUXLY_TEST_POSTGRES_URL`` or the default ``scripts/setup-postgres``
provides) and is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "queue_claim.py"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_benchmark_claims_every_job_once_in_both_phases(backend: str) -> None:
    jobs, batch = 300, 50
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", f"--{backend}", "-n", str(jobs), "-b", str(batch)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "queue_claim"
    assert report["counts_exact"] is True
    assert (report["jobs"], report["batch"], report["rounds"]) == (jobs, batch, 1)
    assert list(report["databases"]) == [backend]
    summary = report["databases"][backend]
    [round_] = summary["rounds"]
    phases = round_["phases"]
    assert set(phases) == {"one", "batch"}
    for name, size in (("one", 1), ("batch", batch)):
        phase = phases[name]
        assert phase["error"] is None, phase
        assert (phase["claimed"], phase["distinct"], phase["running_in_table"]) == (jobs,) * 3
        assert phase["claim_size"] == size
        # Every claimer ends on one empty claim; the rest each took at least one job.
        assert phase["claims"] - report["claimers"] >= -(-jobs // size)
    assert phases["one"]["claims"] == jobs + report["claimers"]
    # Every rate and the ratio are present (their values are not judged here).
    assert summary["one_jobs_per_second"] is not None
    assert summary["batch_jobs_per_second"] is not None
    assert summary["batch_over_one"] is not None
    assert f"{backend}: batch " in done.stdout
