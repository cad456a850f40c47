"""A short run of the webhook benchmark (``bench/webhook_throughput.py --quick``) per database.

Speed is not asserted (the machine is shared and noisy); that both phases wrote every row
(N feedback rows, every post accepted), and that the report carries both rates and the
ratio, is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "webhook_throughput.py"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_benchmark_records_every_event_in_both_phases(backend: str) -> None:
    events = 400
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", f"--{backend}", "-n", str(events)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "webhook_throughput"
    assert (report["events"], report["batch"], report["counts_exact"]) == (events, 100, True)
    assert list(report["databases"]) == [backend]
    result = report["databases"][backend]
    assert result["events_recorded"] == events
    assert result["messages_moved"] == events - events // 20  # all but the deferrals
    for key in ("raw_per_second", "webhooks_per_second", "webhooks_over_raw"):
        assert result[key] > 0
    assert f"{backend}: webhooks " in done.stdout
    assert "ratio" in done.stdout
