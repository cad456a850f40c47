"""Per-provider limits (engine spec section 2): the fields on the provider API, and the limiter
that holds them across every worker process.

- The API, through the real server on SQLite and PostgreSQL (one server per backend): the
  three optional fields on create (every kind) and PATCH (null clears), shown in answers and
  the OpenAPI document, and refused with the field named when out of range or mistyped.
- The rules with a driven clock, on both databases: exact grants and waits for the token
  bucket, the hour window, both together, a clock that runs backwards, refunds, connection
  slots and their leases.
- Real processes on one database: four take from a provider limited to 50 a second and get
  no more between them than one bucket allows over the time the limiter's own clock saw;
  four contend for two connection slots and never hold more than two at once; a worker killed
  with SIGKILL holds its slots only until their leases run out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from flux_testkit.gfserver import GFDatabase, GFServer, expect_error
from flux_testkit.provider_fakes import ResendFake
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.domain import tenancy
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.provider_limits import (
    Grant,
    ProviderLimiter,
    ProviderLimits,
    SharedSendGate,
    Slot,
)
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    EmailProvider,
    ProviderConnection,
    ProviderLimitState,
    new_id,
)

if TYPE_CHECKING:
    from flux_testkit.smtpd import SMTPTestServer

LIMITS = ("max_connections", "rate_per_second", "rate_per_hour")


# The API -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay() -> Iterator[SMTPTestServer]:
    from flux_testkit.smtpd import SMTPTestServer

    with SMTPTestServer(tls="none", auth=True) as server:
        yield server


def smtp_body(relay: SMTPTestServer, **changes: Any) -> dict[str, Any]:
    return {
        "provider": "smtp", "display_name": "Relay", "from_email": "hello@example.com",
        "smtp_host": relay.host, "smtp_port": relay.port, "smtp_secure": "none",
        "username": "user@example.com", "password": "s3cret-pass", **changes,
    }  # fmt: skip


def limits_of(view: dict[str, Any]) -> dict[str, Any]:
    return {name: view[name] for name in LIMITS}


def test_limits_are_optional_stored_and_shown(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    owner = gf_module_server.client()
    project = gf_module_server.create_project("Limits shown")
    url = f"/v1/projects/{project.id}/email-providers"

    plain = owner.post(url, json=smtp_body(relay))
    assert plain.status_code == 201, plain.text
    assert limits_of(plain.json()["email_provider"]) == dict.fromkeys(LIMITS)

    limited = owner.post(
        url, json=smtp_body(relay, max_connections=4, rate_per_second=12.5, rate_per_hour=9000)
    )
    assert limited.status_code == 201, limited.text
    view = limited.json()["email_provider"]
    expected = {"max_connections": 4, "rate_per_second": 12.5, "rate_per_hour": 9000}
    assert limits_of(view) == expected
    assert limits_of(owner.get(f"/v1/email-providers/{view['id']}").json()["email_provider"]) == (
        expected
    )
    listed = {p["id"]: limits_of(p) for p in owner.get(url).json()["email_providers"]}
    assert listed == {plain.json()["email_provider"]["id"]: dict.fromkeys(LIMITS),
                      view["id"]: expected}  # fmt: skip
    # A whole number is a rate too.
    whole = owner.post(url, json=smtp_body(relay, rate_per_second=3))
    assert whole.json()["email_provider"]["rate_per_second"] == 3


def test_patch_sets_changes_and_clears_limits_without_reverifying(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    owner = gf_module_server.client()
    project = gf_module_server.create_project("Limits patched")
    created = owner.post(
        f"/v1/projects/{project.id}/email-providers", json=smtp_body(relay, rate_per_hour=100)
    ).json()["email_provider"]
    path = f"/v1/email-providers/{created['id']}"
    connections = relay.connections

    changed = owner.patch(path, json={"max_connections": 2, "rate_per_second": 0.5})
    assert changed.status_code == 200, changed.text
    view = changed.json()["email_provider"]
    assert limits_of(view) == {"max_connections": 2, "rate_per_second": 0.5, "rate_per_hour": 100}
    # Limits are not connection settings: no new verification.
    assert view["verified_at"] == created["verified_at"]
    assert relay.connections == connections

    cleared = owner.patch(path, json={"rate_per_hour": None, "max_connections": None})
    assert limits_of(cleared.json()["email_provider"]) == {
        "max_connections": None, "rate_per_second": 0.5, "rate_per_hour": None,
    }  # fmt: skip
    stored = owner.get(path).json()["email_provider"]
    assert limits_of(stored) == limits_of(cleared.json()["email_provider"])
    # Other settings are untouched by a limit change, and vice versa.
    renamed = owner.patch(path, json={"display_name": "Renamed"}).json()["email_provider"]
    assert renamed["rate_per_second"] == 0.5
    assert renamed["smtp_port"] == relay.port


BAD_LIMITS = [
    ("max_connections", 0, "greater than or equal to 1"),
    ("max_connections", 101, "less than or equal to 100"),
    ("max_connections", "5", "valid integer"),
    ("max_connections", True, "valid integer"),
    ("max_connections", 2.5, "valid integer"),
    ("rate_per_second", 0, "greater than 0"),
    ("rate_per_second", -1.5, "greater than 0"),
    ("rate_per_second", 1e9, "less than or equal to 100000"),
    ("rate_per_second", "fast", "valid number"),
    ("rate_per_second", False, "valid number"),
    ("rate_per_hour", 0, "greater than or equal to 1"),
    ("rate_per_hour", 1.5, "valid integer"),
    ("rate_per_hour", 10**9, "less than or equal to 100000000"),
    ("rate_per_hour", [100], "valid integer"),
]


def test_bad_limits_are_refused_naming_the_field(
    gf_module_server: GFServer, relay: SMTPTestServer
) -> None:
    owner = gf_module_server.client()
    project = gf_module_server.create_project("Limits refused")
    url = f"/v1/projects/{project.id}/email-providers"
    kept = owner.post(url, json=smtp_body(relay, rate_per_second=5)).json()["email_provider"]
    failures = []
    for field, value, words in BAD_LIMITS:
        for method, response in (
            ("POST", owner.post(url, json=smtp_body(relay, **{field: value}))),
            ("PATCH", owner.patch(f"/v1/email-providers/{kept['id']}", json={field: value})),
        ):
            try:
                detail = expect_error(response, 400, "validation_error")
                assert response.json()["field"] == field, response.text
                assert detail.startswith(f"{field}:"), detail
                assert words in detail, detail
            except AssertionError as exc:
                failures.append(f"{method} {field}={value!r}: {exc}")
    assert not failures, "\n".join(failures)
    # Nothing was saved or changed by the refusals.
    providers = owner.get(url).json()["email_providers"]
    assert [limits_of(p) for p in providers] == [
        {"max_connections": None, "rate_per_second": 5, "rate_per_hour": None}
    ]


def test_every_kind_takes_the_limits(gf_module_server: GFServer, relay: SMTPTestServer) -> None:
    document = gf_module_server.anonymous_client().get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    classes = ["".join(part.capitalize() for part in kind.split("_")) for kind in PROVIDERS]
    assert len(classes) >= 7
    names = [f"{c}Provider" for c in classes] + [f"{c}ProviderView" for c in classes]
    for name in [*names, "ProviderChanges"]:
        properties = schemas[name]["properties"]
        assert set(LIMITS) <= set(properties), name
    connections = schemas["SmtpProvider"]["properties"]["max_connections"]
    assert "across every worker process" in connections["description"]

    # An HTTP API kind, through its local fake.
    owner = gf_module_server.client()
    project = gf_module_server.create_project("Limits on resend")
    with ResendFake() as fake:
        response = owner.post(
            f"/v1/projects/{project.id}/email-providers",
            json={"provider": "resend", "display_name": "Resend", "from_email": "a@example.com",
                  "api_key": fake.api_key, "api_url": fake.url, "max_connections": 8,
                  "rate_per_second": 2, "rate_per_hour": 1000},
        )  # fmt: skip
    assert response.status_code == 201, response.text
    assert limits_of(response.json()["email_provider"]) == {
        "max_connections": 8, "rate_per_second": 2, "rate_per_hour": 1000,
    }  # fmt: skip


# The limiter, with a driven clock ----------------------------------------------------------


class Clock:
    """A clock the test sets; counts its readings."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.t


def add_provider(db: Database, workspace_id: str, **limits: Any) -> EmailProvider:
    """A provider row in a new project (the limiter needs only the row)."""
    with db.transaction() as session:
        project = tenancy.create_project(session, workspace_id, "Limiter").project
        row = EmailProvider(
            id=new_id("prv"), project_id=project.id, provider="smtp", display_name="Relay",
            from_email="hello@example.com", from_name=None, reply_to=None, config={},
            secret="not-a-real-secret", **limits,
        )  # fmt: skip
        session.add(row)
    return row


@pytest.fixture
def limited(gf_db: Database, gf_database: GFDatabase) -> Any:
    def make(**limits: Any) -> ProviderLimits:
        return ProviderLimits.of(add_provider(gf_db, gf_database.workspace.id, **limits))

    return make


def approx(grant: Grant, granted: int, retry_after: float) -> None:
    assert grant.granted == granted, grant
    assert grant.retry_after == pytest.approx(retry_after, abs=1e-6), grant


def test_the_bucket_grants_a_burst_then_the_rate(gf_db: Database, limited: Any) -> None:
    limits = limited(rate_per_second=50.0)
    clock = Clock(1000.0)
    limiter = ProviderLimiter(gf_db, clock)
    approx(limiter.take(limits, 100), 50, 0.02)  # one second's worth at once
    approx(limiter.take(limits, 100), 0, 0.02)  # empty: one more in 1/50 s
    clock.t = 1000.1
    approx(limiter.take(limits, 100), 5, 0.02)  # 0.1 s at 50/s
    clock.t = 1010.0
    approx(limiter.take(limits, 20), 20, 0.0)  # refilled to the burst (50), not beyond
    approx(limiter.take(limits, 100), 30, 0.02)
    granted, retry_after = limiter.take(limits, 1)  # unpacks as the delivery loop's port
    assert granted == 0
    assert retry_after == pytest.approx(0.02)
    assert clock.readings == 6  # the clock is read once per take


def test_a_fractional_rate_sends_one_at_a_time(gf_db: Database, limited: Any) -> None:
    limits = limited(rate_per_second=0.5)
    clock = Clock(0.0)
    limiter = ProviderLimiter(gf_db, clock)
    approx(limiter.take(limits, 10), 1, 2.0)
    clock.t = 1.0
    approx(limiter.take(limits, 10), 0, 1.0)
    clock.t = 2.0
    approx(limiter.take(limits, 10), 1, 2.0)


def test_the_hour_is_a_sliding_window(gf_db: Database, limited: Any) -> None:
    limits = limited(rate_per_hour=120)
    clock = Clock(1000.0)  # minute 16 (slots are whole minutes of the epoch)
    limiter = ProviderLimiter(gf_db, clock)
    approx(limiter.take(limits, 100), 100, 0.0)
    clock.t = 2000.0
    # 20 left; then the window is full until minute 16's slot leaves it: at the start of
    # minute 77 (it counts as long as it overlaps the last hour).
    approx(limiter.take(limits, 100), 20, 77 * 60 - 2000.0)
    clock.t = 1000.0 + 3600.0
    approx(limiter.take(limits, 1), 0, 77 * 60 - 4600.0)
    clock.t = 77 * 60
    approx(limiter.take(limits, 200), 100, 2000.0 // 60 * 60 + 61 * 60 - 77 * 60)
    approx(limiter.take(limits, 1), 0, (2000 // 60 + 61) * 60 - 77 * 60)


def test_both_rates_apply_at_once(gf_db: Database, limited: Any) -> None:
    limits = limited(rate_per_second=10.0, rate_per_hour=25)
    clock = Clock(0.0)
    limiter = ProviderLimiter(gf_db, clock)
    approx(limiter.take(limits, 100), 10, 0.1)
    clock.t = 1.0
    approx(limiter.take(limits, 100), 10, 0.1)
    clock.t = 2.0
    approx(limiter.take(limits, 100), 5, 61 * 60 - 2.0)  # the hour runs out first


def test_a_clock_that_runs_backwards_refills_nothing(gf_db: Database, limited: Any) -> None:
    limits = limited(rate_per_second=10.0)
    clock = Clock(1000.0)
    limiter = ProviderLimiter(gf_db, clock)
    approx(limiter.take(limits, 100), 10, 0.1)
    clock.t = 900.0  # another process's clock, behind
    approx(limiter.take(limits, 100), 0, 0.1)
    clock.t = 1000.5
    approx(limiter.take(limits, 100), 5, 0.1)


def test_refunded_grants_can_be_taken_again(gf_db: Database, limited: Any) -> None:
    limits = limited(rate_per_second=10.0, rate_per_hour=12)
    clock = Clock(0.0)
    limiter = ProviderLimiter(gf_db, clock)
    approx(limiter.take(limits, 10), 10, 0.1)
    limiter.refund(limits, 4)  # only 6 were due
    approx(limiter.take(limits, 100), 4, 0.1)
    clock.t = 5.0
    approx(limiter.take(limits, 100), 2, 61 * 60 - 5.0)  # 12 an hour: 10 taken, 4 back, 4 + 2


def test_without_limits_everything_is_granted_and_nothing_stored(
    gf_db: Database, limited: Any
) -> None:
    def no_clock() -> float:
        raise AssertionError("a provider without limits needs no clock")

    limits = limited()
    limiter = ProviderLimiter(gf_db, no_clock)
    assert limiter.take(limits, 5000) == Grant(5000, 0.0)
    slot = limiter.acquire_connection(limits, "worker-1")
    assert slot is not None
    assert slot.id is None
    assert limiter.renew(slot) == slot
    limiter.release(slot)
    with gf_db.read() as session:
        assert session.scalar(select(func.count()).select_from(ProviderLimitState)) == 0
        assert session.scalar(select(func.count()).select_from(ProviderConnection)) == 0


def test_limits_follow_the_provider_row(gf_db: Database, gf_database: GFDatabase) -> None:
    row = add_provider(gf_db, gf_database.workspace.id, max_connections=3, rate_per_hour=7)
    assert ProviderLimits.of(row) == ProviderLimits(row.id, 3, None, 7)
    limiter = ProviderLimiter(gf_db, Clock())
    assert limiter.take(row, 10) == Grant(7, 61 * 60 - 1000.0 + 16 * 60)
    with gf_db.transaction() as session:  # the provider goes, and its state with it
        session.delete(session.get(EmailProvider, row.id))
    with pytest.raises(DomainError) as refused:
        limiter.take(row, 1)
    assert refused.value.code == "not_found"
    with pytest.raises(DomainError):
        limiter.acquire_connection(row, "worker-1")
    with gf_db.read() as session:
        assert session.scalar(select(func.count()).select_from(ProviderLimitState)) == 0


def test_connection_slots_are_counted_and_leased(gf_db: Database, limited: Any) -> None:
    limits = limited(max_connections=2)
    clock = Clock(1000.0)
    limiter = ProviderLimiter(gf_db, clock)
    first = limiter.acquire_connection(limits, "worker-a", lease_seconds=30)
    second = limiter.acquire_connection(limits, "worker-b", lease_seconds=30)
    assert first is not None
    assert second is not None
    assert first.id != second.id
    assert first.lease_until == 1030.0
    assert limiter.acquire_connection(limits, "worker-c", lease_seconds=30) is None

    limiter.release(first)
    third = limiter.acquire_connection(limits, "worker-c", lease_seconds=30)
    assert third is not None
    assert limiter.acquire_connection(limits, "worker-a", lease_seconds=30) is None

    clock.t = 1020.0
    renewed = limiter.renew(second, lease_seconds=30)
    assert renewed is not None
    assert renewed.lease_until == 1050.0
    clock.t = 1040.0  # third's lease (to 1030) ran out; second's (to 1050) has not
    assert limiter.renew(third, lease_seconds=30) is None
    fourth = limiter.acquire_connection(limits, "worker-d", lease_seconds=30)
    assert fourth is not None
    assert limiter.acquire_connection(limits, "worker-e", lease_seconds=30) is None
    limiter.release(third)  # long gone: nothing happens
    assert limiter.release_all("worker-d") == 1
    assert limiter.acquire_connection(limits, "worker-e", lease_seconds=30) is not None


def test_a_pool_takes_what_slots_are_free_in_one_call(gf_db: Database, limited: Any) -> None:
    limits = limited(max_connections=5)
    clock = Clock(1000.0)
    limiter = ProviderLimiter(gf_db, clock)
    mine = limiter.acquire_connections(limits, "worker-a", 3, lease_seconds=10)
    assert [slot.lease_until for slot in mine] == [1010.0] * 3
    assert len({slot.id for slot in mine}) == 3
    theirs = limiter.acquire_connections(limits, "worker-b", 3, lease_seconds=10)
    assert len(theirs) == 2  # what is left of 5
    assert limiter.acquire_connections(limits, "worker-c", 3) == []
    clock.t = 1010.0  # every lease has run out
    assert len(limiter.acquire_connections(limits, "worker-c", 9)) == 5
    unlimited = limited()
    assert [s.id for s in limiter.acquire_connections(unlimited, "worker-a", 2)] == [None, None]


def test_a_lower_limit_counts_slots_already_held(gf_db: Database, limited: Any) -> None:
    limits = limited(max_connections=3)
    limiter = ProviderLimiter(gf_db, Clock())
    held = [limiter.acquire_connection(limits, f"w{i}") for i in range(3)]
    assert all(isinstance(slot, Slot) for slot in held)
    fewer = ProviderLimits(limits.provider_id, max_connections=2)
    assert limiter.acquire_connection(fewer, "w3") is None
    limiter.release(held[0])  # type: ignore[arg-type]
    assert limiter.acquire_connection(fewer, "w3") is None  # still 2 held
    limiter.release(held[1])  # type: ignore[arg-type]
    assert limiter.acquire_connection(fewer, "w3") is not None


@dataclass(frozen=True)
class GateLimits:
    """Limits as a delivery loop's own value holds them (the send-gate port's shape)."""

    provider_id: str
    max_connections: int | None = None
    rate_per_second: float | None = None
    rate_per_hour: int | None = None


def test_the_send_gate_port_over_the_shared_limiter(gf_db: Database, limited: Any) -> None:
    made = limited(max_connections=2, rate_per_second=50.0)
    limits = GateLimits(made.provider_id, 2, 50.0)
    clock = Clock(1000.0)
    limiter = ProviderLimiter(gf_db, clock)
    # Two workers (two gates, as two processes would have), one database.
    a = SharedSendGate(limiter, "worker-a", lease_seconds=30)
    b = SharedSendGate(limiter, "worker-b", lease_seconds=30)
    assert a.take(limits, 100) == (50, pytest.approx(0.02))
    assert b.take(limits, 100) == (0, pytest.approx(0.02))

    assert a.acquire(limits, 0)
    assert b.acquire(limits, 0)
    assert not b.acquire(limits, 0)
    a.release(limits)
    assert b.acquire(limits, 0)
    a.release(limits)  # holds none: nothing happens
    assert not a.acquire(limits, 0)

    clock.t = 1020.0
    assert b.renew_held() == 0  # both of b's leases now run to 1050
    clock.t = 1045.0
    assert not a.acquire(limits, 0)
    clock.t = 1060.0  # b stalled past its leases: its slots are free again
    assert a.acquire(limits, 0)
    assert b.renew_held() == 2
    b.release(limits)  # lapsed slots are no longer b's to give back
    assert a.acquire(limits, 0)
    assert not b.acquire(limits, 0)
    a.close()
    assert b.acquire(limits, 0)


def test_a_waiting_acquire_gets_the_slot_given_back_meanwhile(
    gf_db: Database, limited: Any
) -> None:
    limits = GateLimits(limited(max_connections=1).provider_id, 1)
    a = SharedSendGate(ProviderLimiter(gf_db), "worker-a")
    b = SharedSendGate(ProviderLimiter(gf_db), "worker-b")
    assert a.acquire(limits, 0)
    giver = threading.Thread(target=lambda: (time.sleep(0.2), a.release(limits)))
    giver.start()
    try:
        assert b.acquire(limits, 30)  # waits (polling) until a gives it back
    finally:
        giver.join()
    assert not a.acquire(limits, 0)


# Real processes ----------------------------------------------------------------------------

#: A worker process: waits for "go" on stdin, then runs its part for SECONDS of real time
#: and prints what it saw as one JSON line.
PROCESS = textwrap.dedent(
    """
    import fcntl, json, os, sys, time
    from getfluxly_server.domain.provider_limits import ProviderLimiter, ProviderLimits
    from getfluxly_server.storage.db import Database

    readings = []

    def clock():
        readings.append(time.time())
        return readings[-1]

    db = Database(os.environ["GF_TEST_DB"])
    limiter = ProviderLimiter(db, clock)
    provider, part, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()
    end = time.time() + seconds

    def held(path, delta):
        # Holders counted in a file under an exclusive lock: +1 after acquiring, -1 before
        # releasing, so the count never exceeds the slots really held.
        with open(path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            count = int(f.read() or "0") + delta
            f.seek(0)
            f.truncate()
            f.write(str(count))
            return count

    if part == "rate":
        limits = ProviderLimits(provider, rate_per_second=50.0)
        takes = []
        while time.time() < end:
            granted, retry_after = limiter.take(limits, 100)
            takes.append([readings[-1], granted])
            if granted < 100:
                time.sleep(min(retry_after, 0.05))
        print(json.dumps({"takes": takes}))
    elif part == "connections":
        limits = ProviderLimits(provider, max_connections=2)
        peak = acquired = refused = 0
        while time.time() < end:
            slot = limiter.acquire_connection(limits, f"pid-{os.getpid()}", 30)
            if slot is None:
                refused += 1
                time.sleep(0.005)
                continue
            acquired += 1
            peak = max(peak, held(sys.argv[4], +1))
            time.sleep(0.03)
            held(sys.argv[4], -1)
            limiter.release(slot)
        print(json.dumps({"peak": peak, "acquired": acquired, "refused": refused}))
    elif part == "hold":
        limits = ProviderLimits(provider, max_connections=2)
        slots = [limiter.acquire_connection(limits, "doomed", 600) for _ in range(2)]
        print(json.dumps({"held": [s.id for s in slots if s is not None]}), flush=True)
        time.sleep(600)
    """
)


def spawn(gf_database: GFDatabase, arguments: list[str]) -> subprocess.Popen[str]:
    """One :data:`PROCESS` on the test's database (pipes for its stdin, stdout, stderr)."""
    return subprocess.Popen(
        [sys.executable, "-c", PROCESS, *arguments],
        env={**os.environ, "GF_TEST_DB": gf_database.sqlalchemy_url},
        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def run_processes(
    gf_database: GFDatabase, args: list[list[str]], timeout: float = 60
) -> list[dict[str, Any]]:
    """Start one process per argument list, let them all go at once, return their reports."""
    processes = [spawn(gf_database, arguments) for arguments in args]
    try:
        for process in processes:  # a barrier: every one has started and opened the database
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err
            reports.append(json.loads(out))
        return reports
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_four_processes_share_one_rate(
    gf_db: Database, gf_database: GFDatabase, limited: Any
) -> None:
    limits = limited(rate_per_second=50.0)
    reports = run_processes(gf_database, [[limits.provider_id, "rate", "2"]] * 4)
    takes = sorted(tuple(take) for report in reports for take in report["takes"])
    granted = sum(count for _, count in takes)
    elapsed = takes[-1][0] - takes[0][0]  # by the limiter's own clock readings
    bound = 50 + 50 * elapsed
    print(f"4 processes were granted {granted} in {elapsed:.3f} s (one bucket allows {bound:.1f})")
    # One bucket: its burst (one second's worth, 50) plus 50 for each second it refilled.
    # Four buckets (a limiter per process) would allow four times that.
    assert granted <= bound + 1e-6, (granted, elapsed)
    assert granted >= 50  # the first take found the bucket full
    assert all(report["takes"] for report in reports)  # every process took part


@pytest.mark.slow
def test_four_processes_never_hold_more_than_two_connections(
    gf_database: GFDatabase, limited: Any, tmp_path: Path
) -> None:
    limits = limited(max_connections=2)
    counter = tmp_path / "held"
    counter.write_text("0")
    args = [limits.provider_id, "connections", "2", str(counter)]
    reports = run_processes(gf_database, [args] * 4)
    print(f"connection slots over 2 s, per process: {reports}")
    assert max(report["peak"] for report in reports) == 2, reports  # contended, never over
    assert sum(report["acquired"] for report in reports) > 0
    assert sum(report["refused"] for report in reports) > 0, reports
    assert counter.read_text() == "0"


@pytest.mark.slow
def test_a_killed_workers_slots_come_back_after_their_lease(
    gf_db: Database, gf_database: GFDatabase, limited: Any
) -> None:
    limits = limited(max_connections=2)
    doomed = spawn(gf_database, [limits.provider_id, "hold", "0"])
    try:
        assert doomed.stdout is not None
        assert doomed.stdin is not None
        assert doomed.stdout.readline() == "ready\n"
        doomed.stdin.write("go\n")
        doomed.stdin.flush()
        assert len(json.loads(doomed.stdout.readline())["held"]) == 2
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)

    # Its leases (600 s) still run: nothing for anyone.
    assert ProviderLimiter(gf_db).acquire_connection(limits, "survivor") is None
    # Once they have run out, by the limiter's clock, the slots are free again.
    later = ProviderLimiter(gf_db, lambda: time.time() + 601)
    assert later.acquire_connection(limits, "survivor") is not None
    assert later.acquire_connection(limits, "survivor") is not None
    assert later.acquire_connection(limits, "survivor") is None
    with gf_db.read() as session:
        holders = session.scalars(select(ProviderConnection.holder)).all()
    assert holders == ["survivor", "survivor"]  # the dead worker's rows were dropped
