"""A short run of the delivery benchmark (``bench/deliver_messages.py --quick``) per database.

Speed is not asserted (the machine is shared and noisy); that both phases delivered every
message exactly (the ledger's count and smtp-sink's own), and that the report carries both
rates and the ratio, is. Needs Postfix's smtp-sink (``scripts/setup-bench``, which the test
command runs first).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "deliver_messages.py"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_benchmark_delivers_every_message_in_both_phases(backend: str) -> None:
    messages = 300
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", f"--{backend}", "-n", str(messages),
         "--processes", "2", "--no-profile"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "deliver_messages"
    assert report["counts_exact"] is True
    assert (report["messages"], report["rounds"], report["processes"]) == (messages, 1, 2)
    assert list(report["databases"]) == [backend]
    summary = report["databases"][backend]
    [round_] = summary["rounds"]
    for phase in ("raw", "workers"):
        result = round_["phases"][phase]
        assert result["error"] is None, result
        assert result["accepted"] == result["sink_messages"] == messages
    assert summary["raw_per_second"] is not None
    assert summary["workers_per_second"] is not None
    assert summary["workers_over_raw"] is not None
    # The messages were queued through the API, and how fast it took them is shown.
    assert summary["api_sends_per_second"] is not None
    assert round_["phases"]["workers"]["api_per_second"] is not None
    assert f"{backend}: POST /v1/messages queued " in done.stdout
    assert "; workers " in done.stdout
