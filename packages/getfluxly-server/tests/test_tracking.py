"""Tracking and unsubscribing end to end, on the real server (``getfluxly serve``) with a
real SMTP relay on loopback, on SQLite and PostgreSQL (engine spec section 6).

Contract: marketing mail (``transactional`` false) carries ``List-Unsubscribe: <https://…>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, transactional mail neither; with
tracking on, the HTML part's links go through ``/t/c/{token}`` (which redirects to the link
that was in the message and records a click: a ``message_events`` row and the profile event
``email_clicked``) and it carries the ``/t/o/{token}`` pixel (an open; Apple Mail Privacy
Protection's and scanners' flagged machine); a changed token is 404 and redirects nowhere;
``tracking: false`` leaves the message as written. ``POST`` to the unsubscribe URL
unsubscribes at once (suppression ``unsubscribed``: the next marketing send is
``suppressed``, transactional mail still goes); the preference page's form leaves a
subscription group (the group's next message is ``suppressed``, another group's is sent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from flux_testkit.gfserver import BACKENDS, Harness, expect_error
from flux_testkit.relayed import Relayed, relayed_server
from flux_testkit.waiting import eventually

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.0"
HTML = (
    '<html><body><p>Hello {{ profile.first_name | default: "there" }}.</p>'
    '<p><a class="cta" href="https://shop.example.com/sale?x=1&amp;y=2">Sale</a> and '
    '<a href="mailto:help@example.com">write to us</a> and '
    '<a href="https://example.com/private" data-gf-notrack>untracked</a>.</p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


@pytest.fixture(scope="module", params=BACKENDS)
def setup(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relayed]:
    directory = tmp_path_factory.mktemp(f"gf-tracking-{request.param}")
    # Opens and clicks count as people's however soon they come (the test is quick); the
    # "too soon after sending" rule is tested in test_tracking_links.py.
    env = {"GETFLUXLY_TRACKING_SCANNER_SECONDS": "0"}
    with relayed_server(gf_harness, request.param, directory, "Tracking", env) as made:
        yield made


def _send(setup: Relayed, **body: Any) -> dict[str, Any]:
    response = setup.server.client(setup.project.secret_key).post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    message: dict[str, Any] = response.json()["message"]
    return message


def _status(setup: Relayed, message_id: str) -> str:
    found = setup.server.client().get(f"/v1/messages/{message_id}")
    assert found.status_code == 200, found.text
    status: str = found.json()["message"]["status"]
    return status


def _settled(setup: Relayed, message_id: str) -> str:
    return str(
        eventually(
            lambda: (s := _status(setup, message_id)) not in ("queued", "sending") and s,
            f"message {message_id} sent or suppressed",
        )
    )


def _reaches(setup: Relayed, message_id: str, status: str) -> None:
    eventually(lambda: _status(setup, message_id) == status, f"message {message_id} {status}")


def _events(setup: Relayed, message_id: str, kind: str) -> list[dict[str, Any]]:
    return setup.server.database.query(
        "SELECT type, machine, url, source, profile_id FROM message_events "
        "WHERE message_id = :id AND type = :kind ORDER BY id",
        id=message_id,
        kind=kind,
    )


def _profile(setup: Relayed, external_id: str, email: str) -> str:
    client = setup.server.client(setup.project.secret_key)
    identify = {"type": "identify", "external_id": external_id, "traits": {"email": email,
                "first_name": "Ada"}}  # fmt: skip
    assert client.post("/v1/events", json=identify).status_code == 202

    def find() -> str | None:
        found = setup.server.client().get(
            f"/v1/projects/{setup.project.id}/profiles", params={"identity": external_id}
        )
        profiles = found.json()["profiles"]
        return str(profiles[0]["id"]) if profiles else None

    profile_id: str = eventually(find, "the profile")
    return profile_id


def _links(html: str, path: str) -> list[str]:
    return re.findall(rf'"(http://127\.0\.0\.1:\d+/{path}/[^"]+)"', html)


def test_a_click_is_redirected_to_the_link_and_recorded(setup: Relayed) -> None:
    profile_id = _profile(setup, "reader-1", "reader1@example.com")
    message = _send(setup, to={"external_id": "reader-1"}, subject="Sale", html=HTML,
                    transactional=False)  # fmt: skip
    assert _settled(setup, message["id"]) == "sent"
    html = setup.html(message["id"])

    [click] = _links(html, "t/c")  # only the shop link: not mailto, not marked, not ours
    assert "https://shop.example.com" not in html
    assert 'href="mailto:help@example.com"' in html
    assert 'href="https://example.com/private"' in html
    assert 'class="cta"' in html
    assert len(_links(html, "unsubscribe")) == 1
    assert len(_links(html, "t/o")) == 1
    assert html.index("/t/o/") < html.index("</body>")

    anonymous = setup.server.anonymous_client()
    followed = anonymous.get(click, headers={"User-Agent": BROWSER})
    assert followed.status_code == 302, followed.text
    assert followed.headers["location"] == "https://shop.example.com/sale?x=1&y=2"
    assert "no-store" in followed.headers["cache-control"]
    assert followed.headers["referrer-policy"] == "no-referrer"

    [event] = eventually(lambda: _events(setup, message["id"], "clicked"), "the click")
    assert (event["machine"], event["url"], event["source"], event["profile_id"]) == (
        False, "https://shop.example.com/sale?x=1&y=2", "tracking", profile_id,
    )  # fmt: skip
    assert _status(setup, message["id"]) == "clicked"
    stitched = eventually(
        lambda: setup.server.database.query(
            "SELECT profile_id, properties FROM events WHERE name = 'email_clicked' "
            "AND project_id = :project AND processed_at IS NOT NULL",
            project=setup.project.id,
        ),
        "email_clicked on the profile",
    )
    assert stitched[0]["profile_id"] == profile_id

    # A link scanner's HEAD: redirected too, recorded as a machine's.
    scanned = anonymous.head(click, headers={"User-Agent": BROWSER})
    assert scanned.status_code == 302
    clicks = eventually(lambda: len(found := _events(setup, message["id"], "clicked")) > 1
        and found, "the scanner's click")  # fmt: skip
    assert [c["machine"] for c in clicks] == [False, True]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the mac
        lambda t: "e" + t[1:] if t[0] != "e" else "f" + t[1:],  # the payload
        lambda t: t.split(".")[0],  # cut short
        lambda t: t + "x",
    ],
    ids=["mac", "payload", "cut", "longer"],
)
def test_a_tampered_click_token_is_404_and_redirects_nowhere(
    setup: Relayed, tamper: Callable[[str], str]
) -> None:
    message = _send(setup, to="tamper@example.com", subject="x", html=HTML, transactional=False)
    [click] = _links(setup.html(message["id"]), "t/c")
    base, token = click.rsplit("/", 1)
    response = setup.server.anonymous_client().get(f"{base}/{tamper(token)}")
    expect_error(response, 404, "not_found")
    assert "location" not in response.headers
    assert _events(setup, message["id"], "clicked") == []


def test_a_click_token_signed_for_another_link_cannot_be_spliced(setup: Relayed) -> None:
    """The payload of one message's token with another's mac (each valid alone)."""
    first = _send(setup, to="splice1@example.com", subject="x", html=HTML, transactional=False)
    second = _send(setup, to="splice2@example.com", subject="x",
                   html='<a href="https://evil.example/">x</a>', transactional=False)  # fmt: skip
    [one] = _links(setup.html(first["id"]), "t/c")
    [two] = _links(setup.html(second["id"]), "t/c")
    spliced = one.rsplit(".", 1)[0] + "." + two.rsplit(".", 1)[1]
    response = setup.server.anonymous_client().get(spliced)
    expect_error(response, 404, "not_found")


def test_the_pixel_records_opens_and_flags_machine_ones(setup: Relayed) -> None:
    message = _send(setup, to="opener@example.com", subject="x", html=HTML, transactional=False)
    [pixel] = _links(setup.html(message["id"]), "t/o")
    anonymous = setup.server.anonymous_client()

    person = anonymous.get(pixel, headers={"User-Agent": BROWSER})
    assert person.status_code == 200
    assert person.headers["content-type"] == "image/gif"
    assert person.content.startswith(b"GIF89a")
    eventually(lambda: _events(setup, message["id"], "opened"), "the open")
    # Apple Mail Privacy Protection's proxy (a bare "Mozilla/5.0"), then a gateway scanner.
    assert anonymous.get(pixel, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
    assert anonymous.get(pixel, headers={"User-Agent": "Barracuda Sentinel"}).status_code == 200
    opens = eventually(
        lambda: len(o := _events(setup, message["id"], "opened")) == 3 and o, "three opens"
    )
    assert [o["machine"] for o in opens] == [False, True, True]
    _reaches(setup, message["id"], "opened")

    expect_error(anonymous.get(pixel[:-3] + "abc"), 404, "not_found")
    assert len(_events(setup, message["id"], "opened")) == 3


def test_marketing_mail_has_list_unsubscribe_and_transactional_mail_has_not(
    setup: Relayed,
) -> None:
    marketing = _send(setup, to="lists@example.com", subject="News", text="Hi",
                      transactional=False)  # fmt: skip
    transactional = _send(setup, to="lists@example.com", subject="Receipt", text="Paid")
    got = setup.received(marketing["id"])
    [url] = re.findall(r"^<(http://127\.0\.0\.1:\d+/unsubscribe/[^>]+)>$", got["List-Unsubscribe"])
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    receipt = setup.received(transactional["id"])
    assert receipt["List-Unsubscribe"] is None
    assert receipt["List-Unsubscribe-Post"] is None
    # The bytes on the wire: the header is there as sent.
    raw = next(r.data for r in setup.relay.messages if r.message is got)
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert url.encode() in raw.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")


def test_tracking_off_leaves_the_html_as_written(setup: Relayed) -> None:
    message = _send(setup, to="private@example.com", subject="x", transactional=False,
                    html='<p><a href="https://shop.example.com/">Shop</a></p>',
                    tracking=False)  # fmt: skip
    html = setup.html(message["id"])
    assert 'href="https://shop.example.com/"' in html
    assert "/t/o/" not in html
    assert "/t/c/" not in html
    assert (
        setup.server.client().get(f"/v1/messages/{message['id']}").json()["message"]["tracking"]
        is False
    )


def test_one_click_unsubscribes_at_once_for_marketing_mail_only(setup: Relayed) -> None:
    address = "leaver@example.com"
    first = _send(setup, to=address, subject="News", text="Hi", transactional=False)
    url = setup.unsubscribe_url(first["id"])

    # As a mailbox provider posts it (RFC 8058).
    posted = setup.server.anonymous_client().post(
        url, content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert posted.status_code == 200, posted.text
    assert "text/html" in posted.headers["content-type"]
    entries = (
        setup.server.client()
        .get(f"/v1/projects/{setup.project.id}/suppressions", params={"email": address})
        .json()["suppressions"]
    )
    assert [(e["email"], e["reason"], e["message_id"]) for e in entries] == [
        (address, "unsubscribed", first["id"])
    ]
    # The status may follow a moment later: the relay had the message before its worker
    # recorded "sent" (feedback that outruns the worker catches up after it).
    _reaches(setup, first["id"], "unsubscribed")
    assert _events(setup, first["id"], "unsubscribed")[0]["source"] == "tracking"

    following = _send(setup, to=address, subject="More news", text="Hi", transactional=False)
    assert _settled(setup, following["id"]) == "suppressed"
    receipt = _send(setup, to=address, subject="Your receipt", text="Paid")
    assert _settled(setup, receipt["id"]) == "sent"

    # A changed link unsubscribes no one, and says so.
    other = _send(setup, to="stayer@example.com", subject="News", text="Hi", transactional=False)
    url = setup.unsubscribe_url(other["id"])
    refused = setup.server.anonymous_client().post(url[:-4] + "AAAA")
    assert refused.status_code == 404
    assert "not valid" in refused.text
    assert (
        setup.server.client()
        .get(f"/v1/projects/{setup.project.id}/suppressions", params={"email": "stayer@"})
        .json()["suppressions"]
        == []
    )


def test_a_group_left_on_the_preference_page_stops_that_groups_mail(setup: Relayed) -> None:
    owner = setup.server.client()
    groups = [
        {"name": "weekly", "label": "Weekly digest", "description": "Every Monday"},
        {"name": "offers", "label": "Offers"},
    ]
    path = f"/v1/projects/{setup.project.id}/subscription-groups"
    saved = owner.put(path, json={"subscription_groups": groups})
    assert saved.status_code == 200, saved.text
    assert [g["name"] for g in owner.get(path).json()["subscription_groups"]] == [
        "weekly", "offers",
    ]  # fmt: skip
    address = "chooser@example.com"
    weekly = _send(setup, to=address, subject="Digest", text="Hi", transactional=False,
                   subscription_group="weekly")  # fmt: skip
    url = setup.unsubscribe_url(weekly["id"])

    anonymous = setup.server.anonymous_client()
    page = anonymous.get(url)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert 'name=group value="weekly" checked' in page.text
    assert 'name=group value="offers" checked' in page.text
    assert "Every Monday" in page.text
    [action] = re.findall(r'action="([^"]+)"', page.text)
    assert "/preferences/" in action

    # Untick "weekly", keep "offers".
    posted = anonymous.post(
        action,
        content=b"group=offers",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200, posted.text
    assert 'name=group value="weekly">' in posted.text
    assert "saved" in posted.text
    rows = setup.server.database.query(
        "SELECT group_name, subscribed FROM subscriptions WHERE email = :email "
        "ORDER BY group_name", email=address,
    )  # fmt: skip
    assert [(r["group_name"], bool(r["subscribed"])) for r in rows] == [
        ("offers", True), ("weekly", False),
    ]  # fmt: skip
    assert [e["source"] for e in _events(setup, weekly["id"], "unsubscribed")] == ["tracking"]

    again = _send(setup, to=address, subject="Digest 2", text="Hi", transactional=False,
                  subscription_group="weekly")  # fmt: skip
    assert _settled(setup, again["id"]) == "suppressed"
    history = owner.get(f"/v1/messages/{again['id']}").json()["message"]["history"]
    assert "weekly" in (history[-1]["detail"] or "")
    offer = _send(setup, to=address, subject="Offer", text="Hi", transactional=False,
                  subscription_group="offers")  # fmt: skip
    assert _settled(setup, offer["id"]) == "sent"

    # One-click on a group's message leaves that group only.
    offer_url = setup.unsubscribe_url(offer["id"])
    assert anonymous.post(offer_url, content=b"List-Unsubscribe=One-Click").status_code == 200
    rows = setup.server.database.query(
        "SELECT group_name, subscribed FROM subscriptions WHERE email = :email "
        "ORDER BY group_name", email=address,
    )  # fmt: skip
    assert [(r["group_name"], bool(r["subscribed"])) for r in rows] == [
        ("offers", False), ("weekly", False),
    ]  # fmt: skip
    listed = f"/v1/projects/{setup.project.id}/suppressions"
    assert owner.get(listed, params={"email": address}).json()["suppressions"] == []

    # "Unsubscribe from all" on the page suppresses; unticking it again lifts only that.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    everything = anonymous.post(action, content=b"group=weekly&unsubscribe_all=1", headers=form)
    assert "name=unsubscribe_all value=1 checked" in everything.text
    [entry] = owner.get(listed, params={"email": address}).json()["suppressions"]
    assert entry["reason"] == "unsubscribed"
    back = anonymous.post(action, content=b"group=weekly", headers=form)
    assert "name=unsubscribe_all value=1>" in back.text
    assert owner.get(listed, params={"email": address}).json()["suppressions"] == []

    # A group the project does not have, or a group on transactional mail: 400.
    client = setup.server.client(setup.project.secret_key)
    for body in (
        {"subscription_group": "nope", "transactional": False},
        {"subscription_group": "weekly"},
    ):
        refused = client.post("/v1/messages", json={"to": address, "subject": "x", "text": "y",
                                                   **body})  # fmt: skip
        expect_error(refused, 400, "validation_error")


def test_bad_group_lists_are_refused(setup: Relayed) -> None:
    owner = setup.server.client()
    path = f"/v1/projects/{setup.project.id}/subscription-groups"
    for groups in (
        [{"name": "Bad Name", "label": "x"}],
        [{"name": "a", "label": "x"}, {"name": "a", "label": "y"}],
        [{"name": "a", "label": " "}],
        [{"name": "a"}],
    ):
        expect_error(owner.put(path, json={"subscription_groups": groups}), 400,
                     "validation_error")  # fmt: skip


def test_a_tampered_preference_link_changes_nothing(setup: Relayed) -> None:
    anonymous = setup.server.anonymous_client()
    for method, path in (("GET", "/preferences/abc.def"), ("POST", "/preferences/abc.def"),
                         ("GET", "/unsubscribe/x"), ("POST", "/unsubscribe/")):  # fmt: skip
        response: httpx.Response = anonymous.request(method, path)
        assert response.status_code in (404, 405), (method, path, response.status_code)
