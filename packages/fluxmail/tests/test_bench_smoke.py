"""A short run of the throughput benchmark: every client delivers every message to smtp-sink.

Speed is not asserted here (the machine is shared); that each client's run counts (all
messages accepted, by the client and by the sink's own counter) is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"
BENCH = BENCH_DIR / "smtp_throughput.py"
CLIENTS = [
    "smtp-source-1",
    "smtplib",
    "aiosmtplib",
    "fluxmail-1",
    "fluxmail-pool",
    "fluxmail-pool-uvloop",
    "fluxmail-pool-2proc",
    "fluxmail-create",
    "fluxmail-bulksender",
]


def test_quick_benchmark_runs_every_client() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-setup", "-c", "4",
         "--clients", ",".join(CLIENTS)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for client in CLIENTS:
        result = report["clients"][client]
        assert result["status"] == "ok", (client, result)  # skipped (tool missing) fails too
        assert all(run["accepted"] == report["messages"] for run in result["runs"])
        assert all(run["sink_messages"] == report["messages"] for run in result["runs"])


def test_quick_build_benchmark_prints_both_builders() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "build_message.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert set(report["kinds"]) == {"plain", "html"}
    for kind, figures in report["kinds"].items():
        assert figures["create_us"] > 0, kind
        assert figures["email_us"] > 0, kind
        assert any(line.startswith(kind) for line in lines[:-1])  # the table row
