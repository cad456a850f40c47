"""Events queued by a script that then simply exits are delivered (the atexit hook)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flux_testkit.ingest_fake import IngestFake

SYNC_SCRIPT = """
import sys
from getfluxly import Client

client = Client(sys.argv[2], api_host=sys.argv[1], flush_interval=60)
for i in range(5):
    client.track("script_ran", user_id=str(i))
# No flush(), no shutdown(): the interpreter exits with the events still queued.
"""

ASYNC_SCRIPT = """
import asyncio
import sys
from getfluxly import AsyncClient

async def main() -> None:
    client = AsyncClient(sys.argv[2], api_host=sys.argv[1], flush_interval=60)
    for i in range(5):
        await client.track("script_ran", user_id=str(i))
    # No shutdown(): asyncio.run() cancels the flusher task and closes the loop.

asyncio.run(main())
"""


def _run(script: str, tmp_path: Path, fake: IngestFake) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run(
        [sys.executable, "-W", "error", str(path), fake.url, fake.secret_key],
        capture_output=True,
        text=True,
        timeout=60,  # hang guard
        check=False,
    )


def test_sync_client_flushes_at_exit(tmp_path: Path, ingest: IngestFake) -> None:
    done = _run(SYNC_SCRIPT, tmp_path, ingest)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert sorted(e["user_id"] for e in ingest.events) == ["0", "1", "2", "3", "4"]
    assert len(ingest.requests) == 1


def test_async_client_left_open_is_flushed_at_exit(tmp_path: Path, ingest: IngestFake) -> None:
    done = _run(ASYNC_SCRIPT, tmp_path, ingest)
    assert done.returncode == 0, done.stderr
    assert "AsyncClient was not shut down; sending 5 event(s) at exit" in done.stderr
    assert sorted(e["user_id"] for e in ingest.events) == ["0", "1", "2", "3", "4"]


def test_exit_with_the_server_down_is_bounded(tmp_path: Path, dead_url: str) -> None:
    # The hook gives up within shutdown()'s default timeout; the hang guard is generous.
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(SYNC_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(path), dead_url, "gflux_secret_x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "dropped 5 event(s)" in done.stderr
