"""Opens and clicks feed segments, end to end on the real server (``getfluxly serve``: API and
workers) with a real SMTP relay on loopback, on SQLite and PostgreSQL (issue 13, "How it is
shown": "a click followed through the redirect and seen by a segment").

A profile is mailed a marketing message through the relay; the click link found in the HTML
the relay received is followed through the real redirect (``/t/c/...``), and the open pixel
fetched (``/t/o/...``), by a reader's browser. A segment with the rule ``{"email": "clicked",
"within": "P7D"}`` (engine spec section 3) then has that profile as a member, and its entry
is recorded (a ``segment_transitions`` row, what automations' ``segment_entered`` triggers
read) as soon as the worker has processed the click's profile event (``email_clicked``);
likewise ``{"email": "opened"}``. The periodic segment pass
(``GETFLUXLY_SEGMENT_PASS_SECONDS``) is set to an hour, so it is not what moves anyone. A
segment of clicks on another message (its ``broadcast_id``) stays empty. The one-click
unsubscribe (``POST`` to the ``List-Unsubscribe`` URL) moves the profile out of
``{"subscribed": true}`` at once, with one exit; a hard bounce posted to the generic
feedback webhook (``/webhooks/smtp/{project}``, signed) moves it into the bounces' segment,
with one entry. Nothing is written to the database by the test: the click, the open, the
unsubscribe and the bounce are the server's own records of the requests.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from flux_testkit.gfserver import BACKENDS, Harness
from flux_testkit.relayed import Relayed, relayed_server
from flux_testkit.waiting import eventually
from flux_testkit.webhook_signers import standard_headers

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
HTML = (
    "<html><body><p>Hello {{ profile.first_name }}.</p>"
    '<p><a href="https://shop.example.com/spring?utm=mail">The spring sale</a></p>'
    "</body></html>"
)


@pytest.fixture(scope="module", params=BACKENDS)
def loop(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relayed]:
    directory = tmp_path_factory.mktemp(f"gf-loop-{request.param}")
    # Opens and clicks count as a person's however soon they come (the test is quick; the
    # "too soon after sending" rule is tested in test_tracking_links.py). The segment pass
    # runs once at the start, then not for an hour: segments move as the events are processed.
    env = {"GETFLUXLY_TRACKING_SCANNER_SECONDS": "0", "GETFLUXLY_SEGMENT_PASS_SECONDS": "3600"}
    with relayed_server(gf_harness, request.param, directory, "Loop", env) as made:
        yield made


def _segment(loop: Relayed, name: str, rule: dict[str, Any]) -> str:
    made = loop.server.client().post(
        f"/v1/projects/{loop.project.id}/segments", json={"name": name, "rule": rule}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["segment"]["id"])


def _broadcast(loop: Relayed, segment_id: str) -> str:
    """A broadcast of the project (a draft: it sends nothing)."""
    client = loop.server.client()
    template = client.post(
        f"/v1/projects/{loop.project.id}/templates",
        json={"name": "Spring", "subject": "Spring", "html": HTML},
    )
    assert template.status_code == 201, template.text
    made = client.post(
        f"/v1/projects/{loop.project.id}/broadcasts",
        json={"name": "Spring", "template_id": template.json()["template"]["id"],
              "segment_id": segment_id},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["broadcast"]["id"])


def _members(loop: Relayed, segment_id: str) -> set[str]:
    answer = loop.server.client().get(f"/v1/segments/{segment_id}/members")
    assert answer.status_code == 200, answer.text
    return {m["profile_id"] for m in answer.json()["members"]}


def _count(loop: Relayed, segment_id: str) -> int:
    answer = loop.server.client().get(f"/v1/segments/{segment_id}")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["segment"]["count"])


def _entries(loop: Relayed, segment_id: str, profile_id: str) -> list[dict[str, Any]]:
    return loop.server.database.query(
        "SELECT kind FROM segment_transitions WHERE segment_id = :segment "
        "AND profile_id = :profile ORDER BY id",
        segment=segment_id,
        profile=profile_id,
    )


def _profile(loop: Relayed, external_id: str, email: str) -> str:
    ingest = loop.server.client(loop.project.secret_key)
    identify = {"type": "identify", "external_id": external_id,
                "traits": {"email": email, "first_name": "Grace"}}  # fmt: skip
    assert ingest.post("/v1/events", json=identify).status_code == 202

    def find() -> str | None:
        found = loop.server.client().get(
            f"/v1/projects/{loop.project.id}/profiles", params={"identity": external_id}
        )
        profiles = found.json()["profiles"]
        return str(profiles[0]["id"]) if profiles else None

    profile_id: str = eventually(find, "the profile")
    return profile_id


@pytest.mark.timeout(400)  # a real server and mail on a busy machine
def test_a_click_followed_through_the_redirect_puts_the_profile_in_a_clicked_segment(
    loop: Relayed,
) -> None:
    clicked = _segment(loop, "Clicked this week", {"email": "clicked", "within": "P7D"})
    opened = _segment(loop, "Opened this week", {"email": "opened", "within": "P7D"})
    bounced = _segment(loop, "Bounced", {"email": "bounced"})
    elsewhere = _segment(
        loop, "Clicked a broadcast", {"email": "clicked", "broadcast_id": _broadcast(loop, bounced)}
    )
    subscribed = _segment(loop, "Subscribed", {"subscribed": True})
    profile_id = _profile(loop, "reader-loop", "grace@example.com")
    assert _members(loop, clicked) == set()
    eventually(lambda: _members(loop, subscribed), "the reader in the subscribed segment")

    sent = loop.server.client(loop.project.secret_key).post(
        "/v1/messages",
        json={"to": {"external_id": "reader-loop"}, "subject": "Spring", "html": HTML,
              "transactional": False},
    )  # fmt: skip
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message"]["id"]
    html, unsubscribe = loop.html(message_id), loop.unsubscribe_url(message_id)
    assert "Hello Grace." in html
    assert "https://shop.example.com" not in html  # the link goes through the redirect
    [click] = re.findall(r'href="(http://127\.0\.0\.1:\d+/t/c/[^"]+)"', html)
    [pixel] = re.findall(r'"(http://127\.0\.0\.1:\d+/t/o/[^"]+)"', html)
    assert _members(loop, clicked) == set()  # sent is not clicked

    reader = loop.server.anonymous_client()
    followed = reader.get(click, headers={"User-Agent": BROWSER})
    assert followed.status_code == 302, followed.text
    assert followed.headers["location"] == "https://shop.example.com/spring?utm=mail"

    eventually(lambda: profile_id in _members(loop, clicked), "the clicker in the clicked segment")
    assert _count(loop, clicked) == 1
    assert [e["kind"] for e in _entries(loop, clicked, profile_id)] == ["entered"]

    shown = reader.get(pixel, headers={"User-Agent": BROWSER})
    assert shown.status_code == 200
    assert shown.headers["content-type"] == "image/gif"
    eventually(lambda: profile_id in _members(loop, opened), "the reader in the opened segment")
    assert [e["kind"] for e in _entries(loop, opened, profile_id)] == ["entered"]

    # The message's own record says so too, and the other segments stayed empty.
    eventually(
        lambda: (
            loop.server.client().get(f"/v1/messages/{message_id}").json()["message"]["status"]
            == "clicked"
        ),
        "the message clicked",
    )
    assert _members(loop, elsewhere) == set()
    assert _members(loop, bounced) == set()
    # A second click is no second entry.
    assert reader.get(click, headers={"User-Agent": BROWSER}).status_code == 302
    eventually(
        lambda: (
            len(
                loop.server.database.query(
                    "SELECT id FROM message_events WHERE message_id = :m AND type = 'clicked'",
                    m=message_id,
                )
            )
            == 2
        ),
        "the second click recorded",
    )
    assert [e["kind"] for e in _entries(loop, clicked, profile_id)] == ["entered"]

    # One click on the List-Unsubscribe URL, as a mailbox provider posts it (RFC 8058).
    posted = reader.post(
        unsubscribe, content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert posted.status_code == 200, posted.text
    eventually(lambda: not _members(loop, subscribed), "the reader out of the subscribed segment")
    assert [e["kind"] for e in _entries(loop, subscribed, profile_id)] == ["entered", "left"]
    assert _members(loop, clicked) == {profile_id}  # unsubscribing is no reason to leave it

    # A hard bounce reported by the relay on GetFluxly's generic webhook (Standard Webhooks).
    assert _members(loop, bounced) == set()
    made = loop.server.client().post(
        f"/v1/projects/{loop.project.id}/webhook-secrets", json={"relay": "smtp"}
    )
    assert made.status_code == 201, made.text
    secret = made.json()["webhook_secret"]["secret"]
    now = int(time.time())
    body = json.dumps({"events": [{
        "id": "bounce-1", "type": "bounced", "email": "grace@example.com",
        "message_id": message_id, "bounce_type": "hard", "reason": "550 5.1.1 user unknown",
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
    }]}).encode()  # fmt: skip
    posted = reader.post(
        f"/webhooks/smtp/{loop.project.id}", content=body,
        headers={"Content-Type": "application/json",
                 **standard_headers(secret, "delivery-1", now, body)},
    )  # fmt: skip
    assert posted.status_code in (200, 204), posted.text
    eventually(lambda: _members(loop, bounced), "the reader in the bounced segment")
    assert [e["kind"] for e in _entries(loop, bounced, profile_id)] == ["entered"]
    assert "Traceback" not in loop.server.logs()
