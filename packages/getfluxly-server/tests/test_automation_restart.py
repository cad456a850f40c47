"""The automations' restart test, short version, on SQLite and PostgreSQL (the long version
is ``bench/automation_restart.py``; see ``flux_testkit.automation_restart``): profiles at
every step of a journey, the worker killed with SIGKILL twice (the API process once);
every journey completes with exactly one message per send step, none doubled at the relay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from flux_testkit import automation_restart

if TYPE_CHECKING:
    from flux_testkit.gfserver import Backend, Harness


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_journeys_survive_sigkill_with_exactly_their_messages(
    gf_harness: Harness, gf_backend: Backend, tmp_path: Path
) -> None:
    report = automation_restart.run(gf_harness, gf_backend, tmp_path, profiles=60, kills=2)
    print(json.dumps(report.summary()))
    assert report.ok, report.summary()
    assert report.received >= report.statuses.get("sent", 0) > 0
