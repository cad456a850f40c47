"""A short run of the automation latency benchmark (``bench/automation_latency.py
--quick``) per database.

Latency is not asserted (the machine is shared and noisy); that every event's message was
sent and reached smtp-sink, and that the report carries the percentiles and FluxMail's raw
rate, is. Needs Postfix's smtp-sink (``scripts/setup-bench``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "automation_latency.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_latency_benchmark_sends_every_events_email(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", f"--{backend}"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "automation_latency"
    assert report["backend"] == backend
    assert report["complete"] is True
    assert report["events"] == report["accepted"] == report["sent"] == report["sink_messages"]
    assert 0 <= report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert report["raw_per_second"] is not None
    assert report["server_cpu_ms_per_event"] > 0  # the server processes' own counters
    assert set(report["median_hops_ms"]) == {"entered", "recorded", "sent"}
    assert "latency 202 -> smtp-sink" in done.stdout
