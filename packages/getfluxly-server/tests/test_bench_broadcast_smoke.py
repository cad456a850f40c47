"""A short run of the broadcast benchmark (``bench/broadcast_throughput.py -n 300``) per
database.

Speed is not asserted (the machine is shared and noisy); that the broadcast reached ``sent``
with every message accepted (its counts and smtp-sink's own), that the raw phase delivered
every message, and that the report carries the time, both rates and the ratio, is. Needs
Postfix's smtp-sink (``scripts/setup-bench``, which the test command runs first).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "broadcast_throughput.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_small_broadcast_benchmark_sends_every_message(backend: str) -> None:
    profiles = 300
    done = subprocess.run(
        [sys.executable, str(BENCH), f"--{backend}", "-n", str(profiles)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "broadcast_throughput"
    assert report["counts_exact"] is True
    assert report["profiles"] == profiles
    summary = report["databases"][backend]
    for phase in ("raw", "broadcast"):
        result = summary[phase]
        assert result["error"] is None, result
        assert result["accepted"] == result["sink_messages"] == profiles
    assert summary["broadcast_seconds"] is not None
    assert summary["broadcast_over_raw"] is not None
    assert f"{backend}: broadcast to {profiles} profiles sent in " in done.stdout
