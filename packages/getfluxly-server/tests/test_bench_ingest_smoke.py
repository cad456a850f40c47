"""A short run of the ingest benchmark (``bench/ingest_throughput.py --quick``) per database.

Speed is not asserted (the machine is shared and noisy); that every phase's count is exact
is: the batch and single-event requests were all accepted (202, nothing rejected) and the
``events`` table holds exactly what was sent, and both raw inserts stored every row.
PostgreSQL follows the tests' convention (``GETFLUXLY_TEST_POSTGRES_URL`` or the default
``scripts/setup-postgres`` provides) and is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "ingest_throughput.py"
PHASES = ("raw-1", "raw-group", "api-batch", "raw-c", "api-single", "http-floor", "raw-single")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_benchmark_counts_are_exact(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", f"--{backend}", "-c", "4"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["counts_exact"] is True
    assert report["worker_running"] is False
    assert list(report["databases"]) == [backend]
    [round_] = report["databases"][backend]["rounds"]
    assert round_["error"] is None
    phases = round_["phases"]
    assert set(phases) == set(PHASES)
    for name, expected in (
        ("api-batch", report["events"]),
        ("raw-1", report["events"]),
        ("raw-group", report["events"]),
        ("raw-c", report["events"]),
        ("api-single", report["single_requests"]),
        ("http-floor", report["single_requests"]),
        ("raw-single", report["single_requests"]),
    ):
        phase = phases[name]
        assert phase["events"] == expected, (name, phase)
        assert phase["accepted"] == expected, (name, phase)
        assert phase["stored"] == expected, (name, phase)
        assert phase["failures"] == [], (name, phase)
        assert phase["failed_requests"] == 0, (name, phase)
    assert phases["api-batch"]["requests"] == -(-report["events"] // report["batch_size"])
    assert phases["api-single"]["requests"] == report["single_requests"]
    # Every rate and ratio is present (their values are not judged here).
    summary = report["databases"][backend]
    assert summary["api_batch_over_raw"] is not None
    assert summary["api_single_requests_per_second"] is not None
    assert summary["api_single_over_http_floor"] is not None
    assert {t["database"] for t in report["targets"]} == {backend}
