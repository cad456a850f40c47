"""``getfluxly api|serve --processes N``: several API processes on one port (PostgreSQL).

Contract: N forked processes answer on one listening socket, each with its own database
engine and ingest writer; every acknowledged event is stored exactly once whichever process
took it; SIGTERM stops every process in order (exit 0); a child that dies takes the set
down with a failure status (so a service manager restarts it); a killed supervisor leaves
no orphan serving the port; SQLite refuses the flag with a clear message.
"""

from __future__ import annotations

import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from flux_testkit.gfserver import GFServer
from flux_testkit.waiting import eventually

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


#: Several API processes are for PostgreSQL (SQLite refuses them: the last test).
postgres_only = pytest.mark.parametrize("gf_backend", ["postgres"])


@postgres_only
def test_events_sent_to_several_processes_are_each_stored_once(
    gf_server_factory: GFServerFactory,
) -> None:
    server = gf_server_factory(mode="api", args=["--processes", "3"])
    assert server.process is not None
    supervisor = server.process.pid
    children = _children(supervisor)
    assert len(children) == 3
    project = server.create_project("Many processes")
    events = [
        {"event": "page_viewed", "anonymous_id": f"a{i}", "message_id": str(uuid.uuid4())}
        for i in range(600)
    ]

    def send(chunk: list[dict[str, object]]) -> int:
        # A connection per chunk, so the kernel spreads them over the processes.
        with httpx.Client(base_url=server.url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {project.secret_key}"}
            for event in chunk:
                response = client.post("/v1/events", json=event, headers=headers)
                assert response.status_code == 202, response.text
            # Half of them again: stored once.
            resent = client.post("/v1/events/batch", json={"events": chunk[::2]}, headers=headers)
            assert resent.status_code == 202, resent.text
        return len(chunk)

    before = {child: _cpu_seconds(child) for child in children}
    with ThreadPoolExecutor(12) as pool:
        sent = sum(pool.map(send, [events[i : i + 25] for i in range(0, 600, 25)]))
    assert sent == 600
    # The kernel gave the 24 connections to more than one process (each did real work).
    busy = [c for c in children if _cpu_seconds(c) - before[c] > 0.05]
    assert len(busy) >= 2, {c: _cpu_seconds(c) - before[c] for c in children}
    stored = server.database.query(
        "SELECT message_id FROM events WHERE project_id = :p", p=project.id
    )
    assert sorted(r["message_id"] for r in stored) == sorted(e["message_id"] for e in events)
    assert server.process.stop() == 0
    assert not any(_alive(child) for child in children)


@postgres_only
def test_a_dead_child_stops_the_set_with_a_failure(gf_server_factory: GFServerFactory) -> None:
    server = gf_server_factory(mode="serve", args=["--processes", "2"])
    assert server.process is not None
    children = _children(server.process.pid)
    assert len(children) == 2
    os.kill(children[0], signal.SIGKILL)
    eventually(lambda: not server.process.alive, "the supervisor to stop")  # type: ignore[union-attr]
    assert server.process.returncode == 1
    eventually(lambda: not _alive(children[1]), "the other child to stop")


@postgres_only
def test_a_killed_supervisor_leaves_no_orphan_serving(gf_server_factory: GFServerFactory) -> None:
    server = gf_server_factory(mode="api", args=["--processes", "2"])
    assert server.process is not None
    children = _children(server.process.pid)
    server.process.popen.kill()
    server.process.popen.wait(10)
    eventually(lambda: not any(_alive(c) for c in children), "the orphans to stop")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)


@pytest.mark.parametrize("gf_backend", ["sqlite"])
def test_sqlite_refuses_several_processes_and_says_why(gf_server: GFServer) -> None:
    done = gf_server.cli("api", "--port", "1", "--processes", "2", check=False)
    assert done.returncode == 2
    assert "--processes needs PostgreSQL" in done.stderr
    assert "Traceback" not in done.stderr


@postgres_only
def test_the_processes_share_each_keys_rate_limit(gf_server_factory: GFServerFactory) -> None:
    """A bucket of 3 refilled at 0.1 a second: 12 requests on 12 connections (the kernel
    spreads them over both processes) get 3 answers, not 3 per process."""
    limits = {"GETFLUXLY_RATE_LIMIT_PER_SECOND": "0.1", "GETFLUXLY_RATE_LIMIT_BURST": "3"}
    server = gf_server_factory(mode="api", args=["--processes", "2"], env=limits)
    # Made with the workspace key (its own bucket), so the project key's is still full.
    project = server.create_project("Shared limits")

    def send(n: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post(
                "/v1/events",
                json={"event": "page_viewed", "anonymous_id": f"a{n}"},
                headers={"Authorization": f"Bearer {project.secret_key}"},
            )

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(12)))
    assert sorted(r.status_code for r in answers) == [202] * 3 + [429] * 9
    assert sorted(r.headers["X-RateLimit-Remaining"] for r in answers if r.status_code == 202) == [
        "0",
        "1",
        "2",
    ]
