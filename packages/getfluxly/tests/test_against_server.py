"""The SDK against the real GetFluxly server (``getfluxly serve`` on SQLite), not the fake.

What only the real server can show: the SDK's wire format is what the server accepts (batches,
``sent_at``, identify without an event name, alias), events sent from many threads are stored
exactly once (counted by ``message_id`` in the database), identify and track from the SDK
stitch into one profile, and ``shutdown()`` delivers what was queued.

One server for the module; each test makes its own project.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flux_testkit.gfserver import GFProject, GFServer, Harness
from getfluxly import AsyncClient, Client, GFluxError

WAIT = 20.0  # seconds; bounds a failing test only


@pytest.fixture(scope="module")
def server(gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GFServer]:
    """``getfluxly serve`` on SQLite for this module (the backend is the server suite's
    concern; here the SDK is under test)."""
    directory = tmp_path_factory.mktemp("gf-sdk")
    database = gf_harness.database("sqlite", directory / "db")
    started = GFServer(gf_harness, database, directory / "logs")
    try:
        yield started.start()
    finally:
        started.close()
        database.close()


@pytest.fixture
def project(server: GFServer) -> GFProject:
    return server.create_project("SDK tests")


@pytest.fixture
def dropped() -> list[GFluxError]:
    """What the clients' ``on_error`` received; every test expects nothing dropped."""
    return []


@pytest.fixture
def make_client(
    server: GFServer, project: GFProject, dropped: list[GFluxError]
) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def factory(**options: Any) -> Client:
        token = options.pop("token", project.secret_key)
        client = Client(token, api_host=server.url, on_error=dropped.append, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.shutdown(timeout=10)
    assert dropped == []


def _stored_ids(server: GFServer, project: GFProject) -> list[str]:
    rows = server.database.query(
        "SELECT message_id FROM events WHERE project_id = :p", p=project.id
    )
    return [r["message_id"] for r in rows]


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _person(server: GFServer, project: GFProject, identity: str, events: int) -> dict[str, Any]:
    """Poll the profile API until ``identity`` is one live profile holding ``events`` events;
    then read it once more, complete."""
    read = server.client()
    found: list[str] = []

    def ready() -> bool:
        profiles = read.get(
            f"/v1/projects/{project.id}/profiles", params={"identity": identity}
        ).json()["profiles"]
        if len(profiles) != 1:
            return False
        profile = read.get(f"/v1/projects/{project.id}/profiles/{profiles[0]['id']}").json()
        found[:] = [profiles[0]["id"]]
        return len(profile["profile"]["recent_events"]) == events

    _wait(ready, f"a profile for {identity!r} with {events} events")
    response = read.get(f"/v1/projects/{project.id}/profiles/{found[0]}")
    profile: dict[str, Any] = response.json()["profile"]
    return profile


def test_events_from_many_threads_are_stored_exactly_once(
    server: GFServer, project: GFProject, make_client: Callable[..., Client]
) -> None:
    client = make_client(flush_at=25, flush_interval=0.2)
    threads, per_thread = 8, 60
    sent: list[list[str]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def produce(n: int) -> None:
        start.wait()  # all threads enqueue at once, contending for the queue
        for i in range(per_thread):
            sent[n].append(
                client.track(
                    "item_viewed",
                    anonymous_id=f"device-{n}",
                    properties={"thread": n, "i": i},
                )
            )

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert client.flush(timeout=30)

    expected = [m for ids in sent for m in ids]
    assert len(set(expected)) == threads * per_thread  # the SDK gave each its own id
    stored = _stored_ids(server, project)
    assert sorted(stored) == sorted(expected)  # each once, none missing, nothing extra


def test_identify_and_track_from_the_sdk_stitch_into_one_profile(
    server: GFServer, project: GFProject, make_client: Callable[..., Client]
) -> None:
    client = make_client(flush_at=100, flush_interval=0.2)
    tag = uuid.uuid4().hex[:8]
    device, user = f"device-{tag}", f"user-{tag}"
    when = datetime.now(UTC) - timedelta(minutes=30)
    client.track("page_viewed", anonymous_id=device, properties={"path": "/pricing"})
    client.identify(anonymous_id=device, external_id=user, traits={"email": f"{tag}@example.com"})
    client.identify(external_id=user, traits={"plan": "pro"})
    client.track("order_placed", external_id=user, timestamp=when, properties={"total": 10})
    assert client.flush(timeout=30)

    profile = _person(server, project, user, 4)
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("anonymous_id", device),
        ("external_id", user),
    }
    assert profile["traits"] == {"email": f"{tag}@example.com", "plan": "pro"}
    events = {e["event"]: e for e in profile["recent_events"]}
    assert events["page_viewed"]["properties"] == {"path": "/pricing"}
    # The SDK's sent_at lets the server correct skew; with one clock it changes next to
    # nothing, so the event keeps (about) the time it was given.
    placed = datetime.fromisoformat(events["order_placed"]["timestamp"])
    assert abs(placed - when) < timedelta(seconds=10)


def test_alias_through_the_sdk(
    server: GFServer, project: GFProject, make_client: Callable[..., Client]
) -> None:
    client = make_client(flush_interval=0.2)
    tag = uuid.uuid4().hex[:8]
    client.identify(external_id=f"user-{tag}", traits={"name": "Ada"})
    client.identify(anonymous_id=f"other-dev-{tag}", external_id=f"other-{tag}")
    assert client.flush(timeout=30)
    profile_id = _person(server, project, f"user-{tag}", 1)["id"]
    _person(server, project, f"other-{tag}", 1)

    answer = client.alias(profile_id, anonymous_id=f"new-dev-{tag}")
    assert answer == {
        "alias": {"user_id": profile_id, "anonymous_id": f"new-dev-{tag}", "merged_at": None}
    }
    client.track("app_opened", anonymous_id=f"new-dev-{tag}")
    assert client.flush(timeout=30)
    assert _person(server, project, f"new-dev-{tag}", 2)["id"] == profile_id

    with pytest.raises(GFluxError) as conflict:
        client.alias(profile_id, anonymous_id=f"other-dev-{tag}")
    assert conflict.value.code == "alias_conflict"
    assert conflict.value.retryable is False
    assert conflict.value.details.get("status") == 409

    browser = make_client(token=project.publishable_key)
    with pytest.raises(GFluxError) as wrong:
        browser.alias(profile_id, anonymous_id=f"newer-dev-{tag}")
    assert wrong.value.code == "wrong_key_type"


def test_shutdown_delivers_what_is_queued(
    server: GFServer, project: GFProject, make_client: Callable[..., Client]
) -> None:
    # Neither the batch size nor the interval would send these on their own.
    client = make_client(flush_at=1000, flush_interval=60)
    queued = [client.track("step_done", external_id="u-1", properties={"i": i}) for i in range(30)]
    assert _stored_ids(server, project) == []
    assert client.shutdown(timeout=20) is True
    # shutdown() returned after the 202s, and a 202 means committed: no waiting needed.
    assert sorted(_stored_ids(server, project)) == sorted(queued)
    with pytest.raises(GFluxError) as closed:
        client.track("too_late", external_id="u-1")
    assert closed.value.code == "client_closed"


async def test_the_async_client_delivers_to_the_server(
    server: GFServer, project: GFProject, dropped: list[GFluxError]
) -> None:
    async with AsyncClient(
        project.publishable_key, api_host=server.url, flush_interval=0.2, on_error=dropped.append
    ) as client:
        sent = [
            await client.track("tapped", anonymous_id="phone-1", properties={"i": i})
            for i in range(12)
        ]
        sent.append(await client.identify(anonymous_id="phone-1", traits={"os": "ios"}))
    assert sorted(_stored_ids(server, project)) == sorted(sent)
    assert dropped == []


def _stored_times(server: GFServer, message_id: str) -> tuple[datetime, datetime]:
    """(timestamp, received_at) of one stored event, as aware UTC datetimes."""
    [row] = server.database.query(
        "SELECT timestamp, received_at FROM events WHERE message_id = :m", m=message_id
    )

    def utc(value: Any) -> datetime:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

    return utc(row["timestamp"]), utc(row["received_at"])


def test_a_batch_retried_after_a_429_keeps_its_events_time(
    gf_harness: Harness, tmp_path: Path, dropped: list[GFluxError]
) -> None:
    # A bucket of one request refilled every 2 s: the second batch gets a 429 with
    # Retry-After: 2 and the SDK sends it again after that.
    database = gf_harness.database("sqlite", tmp_path / "db")
    limits = {"GETFLUXLY_RATE_LIMIT_PER_SECOND": "0.5", "GETFLUXLY_RATE_LIMIT_BURST": "1"}
    limited = GFServer(gf_harness, database, tmp_path / "logs", env=limits)
    try:
        limited.start()
        project = limited.create_project()  # the workspace key has a bucket of its own
        client = Client(
            project.secret_key, api_host=limited.url, flush_at=1, on_error=dropped.append
        )
        client.track("first", anonymous_id="a-1")
        assert client.flush(timeout=30)
        happened = datetime.now(UTC)
        second = client.track("second", anonymous_id="a-1", timestamp=happened)
        assert client.flush(timeout=30)
        assert client.shutdown(timeout=10)
        assert dropped == []
        timestamp, received = _stored_times(limited, second)
        # The precondition: it did arrive only on the retry, after the Retry-After.
        assert received - happened >= timedelta(seconds=1)
        # The device's clock is this machine's: the event keeps the time it was given.
        assert abs(timestamp - happened) < timedelta(seconds=1)
    finally:
        limited.close()
        database.close()
