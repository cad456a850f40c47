"""A short run of the segment benchmark (``bench/segment_eval.py --quick``) per database.

Speed is not asserted (the machine is shared and noisy); that the incremental update and the
full recompute agreed on every member in every round (after logins and after clicks
recorded as feedback), and that the report carries the times and the ratio, is. PostgreSQL
is never skipped (see test_bench_queue_smoke.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "segment_eval.py"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_benchmark_agrees_with_a_full_recompute(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", f"--{backend}", "-p", "600", "-c", "50"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "segment_eval"
    assert report["consistent"] is True
    assert (report["profiles"], report["chunk"], report["rounds"]) == (600, 50, 2)
    assert list(report["databases"]) == [backend]
    found = report["databases"][backend]
    assert len(found["rounds"]) == 2
    assert all(r["consistent"] for r in found["rounds"])
    assert found["incremental_ms"] > 0
    assert found["full_ms"] > 0
    assert found["ratio_full_over_incremental"] > 0
    # The mail activity case: clicks recorded as feedback, the same agreement.
    clicks = found["email"]
    assert clicks["consistent"] is True
    assert len(clicks["rounds"]) == 2
    assert clicks["incremental_ms"] > 0
    assert clicks["full_ms"] > 0
