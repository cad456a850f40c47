"""``getfluxly dev`` as a newcomer runs it, for the tests that drive it end to end (the
dashboard in a browser): a clean environment (HOME and PATH, plus what a test names), a data
directory of its own, any free port, and the exports it prints parsed.

stdout and stderr go to files, not pipes: the server logs every SMTP session, and an
undrained pipe would eventually block it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from flux_testkit.gfserver import free_port, getfluxly_command

#: Waiting for the exports and /healthz (a limit for a hung start, not a speed expectation:
#: several test processes may share two cores).
START_TIMEOUT = 120.0


@dataclass
class DevServer:
    """A running ``getfluxly dev``: its URL and the ``GETFLUXLY_*`` lines it printed."""

    url: str
    exports: dict[str, str]
    process: subprocess.Popen[bytes]

    @property
    def project_id(self) -> str:
        return self.exports["GETFLUXLY_PROJECT_ID"]

    def project_url(self, path: str = "") -> str:
        """A dashboard page of the dev project: ``project_url("/messages")``."""
        return f"{self.url}/projects/{self.project_id}{path}"

    def api(self, key_name: str = "GETFLUXLY_WORKSPACE_KEY") -> httpx.Client:
        """An API client with one of the printed keys."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.exports[key_name]}"},
            timeout=30,
        )


@contextmanager
def running_dev(directory: Path, env: Mapping[str, str] | None = None) -> Iterator[DevServer]:
    """``getfluxly dev`` run in ``directory`` (its data under ``directory/data``) with ``env``
    over HOME and PATH; stopped with SIGINT (then killed) on the way out."""
    clean = {name: os.environ[name] for name in ("HOME", "PATH") if name in os.environ}
    out, err = directory / "stdout.txt", directory / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
            [*getfluxly_command(), "dev", "--port", str(free_port()), "--smtp-port", "0",
             "--data-dir", str(directory / "data")],
            env={**clean, **(env or {})}, stdout=stdout, stderr=stderr,
            stdin=subprocess.DEVNULL, cwd=directory,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            lines = out.read_text().splitlines()
            exports = dict(line.split("=", 1) for line in lines if "=" in line)
            if "GETFLUXLY_ADMIN_PASSWORD" in exports:
                try:
                    if httpx.get(exports["GETFLUXLY_URL"] + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"getfluxly dev did not start:\n{err.read_text()[-3000:]}")
            time.sleep(0.2)
        yield DevServer(exports["GETFLUXLY_URL"], exports, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
